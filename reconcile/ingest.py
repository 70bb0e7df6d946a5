"""Apply a `Normalised` outcome to the database: the only writer of subscription state.

Webhook processing and reconciliation both end here, so a fact from any source goes through
the same merge (`reconcile.state.apply`) and the same bookkeeping. Functions take the caller's
session and never commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from reconcile.catalog.file import Catalog
from reconcile.chains import absorb, continued_by_account, find_subscription
from reconcile.ids import new_id
from reconcile.models import (
    OutboxEntry,
    StoreId,
    Subscription,
    SubscriptionEvent,
)
from reconcile.notify.service import track_new_subscription, track_subscription
from reconcile.outcomes import (
    Normalised,
)
from reconcile.state import (
    STATE_FIELDS,
    Channel,
    Observation,
    Stamp,
    Status,
    SubscriptionState,
    apply,
    decode_clock,
    encode_clock,
    link_stamp,
)
from reconcile.store_records import (
    NO_CATALOG,
    ensure_account,
    queue_consumption_answer,
    record_purchase,
    record_refund,
    record_refund_declined,
    require_acknowledgement,
)


@dataclass(frozen=True)
class Applied:
    """What an ingest did: the subscription it touched and whether its state changed."""

    subscription_id: str | None
    changed: bool
    # The row itself, for a caller that goes on with it (the session holds a clean row only
    # while something refers to it: looking it up again would read it again).
    row: Subscription | None = field(default=None, compare=False, repr=False)


def ingest(
    session: Session,
    outcome: Normalised,
    *,
    source: str,
    now: datetime,
    inbox_id: int | None = None,
    catalog: Catalog = NO_CATALOG,
) -> Applied:
    """Record everything `outcome` says; the subscription merge is field-wise newest-wins.
    `catalog` says which purchases are credit packs (their credits are granted here)."""
    applied = Applied(None, False)
    if outcome.subscription is not None:
        applied = apply_observation(
            session, outcome.subscription, source=source, now=now, inbox_id=inbox_id
        )
    if outcome.purchase is not None:
        record_purchase(session, outcome.purchase, now, catalog)
    if outcome.refund is not None:
        record_refund(session, outcome.refund, now, applied.subscription_id, catalog)
    if outcome.consumption_request is not None:
        queue_consumption_answer(session, outcome.consumption_request, now)
    if outcome.refund_declined is not None:
        record_refund_declined(session, outcome.refund_declined)
    if outcome.acknowledgement is not None:
        require_acknowledgement(session, outcome.acknowledgement, now)
    return applied


def apply_observation(
    session: Session,
    observation: Observation,
    *,
    source: str,
    now: datetime,
    inbox_id: int | None = None,
    held: Subscription | None = None,
) -> Applied:
    """`held`: the subscription of `observation.store_id`, already locked by this transaction
    (saves looking it up again)."""
    channel = observation.channel.value
    row = (held if held is not None
           else find_subscription(session, channel, observation.store_id, lock=True))
    older = [found for linked in observation.linked_store_ids
             if (found := find_subscription(session, channel, linked, lock=True)) is not None]
    # The newest store id decides the state: the one this observation continues, or this one.
    newest_token = True
    if row is None and older:
        row = older[0]
    if row is None:
        row = continued_by_account(session, observation)
    created = row is None
    if row is None:
        row = _new_subscription(session, observation, now)
        track_new_subscription(session, row.id, now)
    else:
        track_subscription(session, row, now)
        for other in older:
            if other.id != row.id:
                absorb(session, row, other, now)
        if observation.linked_store_ids or row.store_id != observation.store_id:
            known = set(session.scalars(
                select(StoreId.store_id).where(StoreId.subscription_id == row.id)
            ))
            # A store id that an already-known one links to is older, not newer.
            newest_token = (
                observation.store_id not in known
                or row.store_id == observation.store_id
                or row.store_id in observation.linked_store_ids
            )
            for store_id in (observation.store_id, *observation.linked_store_ids):
                if store_id not in known:
                    session.add(StoreId(channel=channel, store_id=store_id,
                                        subscription_id=row.id, created_at=now))
                    known.add(store_id)
    before = to_state(row)
    if not newest_token:
        # Facts about a replaced token (it went EXPIRED with replacementCancellation) must not
        # overwrite the subscription that continues under the newer token.
        observation = replace(observation, fields={})
    observation = _keep_revocation(before, row.expires_at, observation)
    base = before
    if newest_token and row.store_id != observation.store_id:
        # The subscription moves to a newer token: what the older token said no longer counts,
        # even when it was read later (a worker that lost a race applies an earlier read).
        base = replace(before, clock={})
    after = apply(base, observation)
    if newest_token and row.store_id != observation.store_id:
        row.store_id = observation.store_id
    changed = after != before
    if changed:
        write_state(row, after, now)
    if created:
        _add_store_ids(session, row, observation, now)
    session.add(
        SubscriptionEvent(
            subscription_id=row.id,
            source=source,
            kind=observation.kind,
            store_time=observation.stamp.time,
            recorded_at=now,
            applied=changed,
            inbox_id=inbox_id,
            detail={"store_id": observation.store_id, **dict(observation.detail),
                    "fields": _jsonable(observation.fields)},
        )
    )
    if after.account_id and after.account_id != before.account_id:
        ensure_account(session, after.account_id, now)
    if changed and not created:  # a subscription new in this call has no requests yet
        confirm_requests(session, row, now)
    return Applied(row.id, changed, row)


def as_applied(before: SubscriptionState, observation: Observation) -> Observation:
    """What `apply_observation` hands to `apply` for a subscription held under the
    observation's own store id: pure, so reconciliation can preview a repair exactly."""
    return _keep_revocation(before, before.expires_at, observation)


def _keep_revocation(
    before: SubscriptionState, expires_at: datetime | None, observation: Observation
) -> Observation:
    """Google: a revoked period stays revoked, whatever a later read of it says.

    After a revocation or a voided current order, `subscriptionsv2.get` reports the token as
    EXPIRED (or, for a refund without revocation, still ACTIVE), and a delayed notification
    read later would otherwise rename the revoked period. A new period (a different expiry)
    does take over.
    """
    status = observation.fields.get("status")
    if (
        observation.channel is not Channel.GOOGLE
        or before.status is not Status.REVOKED
        or status in (None, Status.REVOKED.value)
        or observation.fields.get("expires_at", expires_at) != expires_at
    ):
        return observation
    fields = {k: v for k, v in observation.fields.items() if k not in ("status", "auto_renew")}
    return replace(observation, fields=fields)


def _new_subscription(session: Session, observation: Observation, now: datetime) -> Subscription:
    row = Subscription(
        id=new_id("sub"),
        channel=observation.channel.value,
        environment=observation.environment,
        store_id=observation.store_id,
        status=Status.PENDING.value,
        auto_renew=False,
        prepaid=False,
        clock={},
        created_at=now,
        updated_at=now,
    )
    session.add(row)  # inserted by `_add_store_ids`, with the state written into it by then
    return row


def _add_store_ids(
    session: Session, row: Subscription, observation: Observation, now: datetime
) -> None:
    """A new subscription's row, then its store ids. The flush comes first and on its own: the
    unit of work orders INSERTs by relationships, which these models do not declare, not by
    foreign keys."""
    session.flush()
    for store_id in dict.fromkeys((observation.store_id, *observation.linked_store_ids)):
        session.add(StoreId(channel=row.channel, store_id=store_id, subscription_id=row.id,
                            created_at=now))


def to_state(row: Subscription) -> SubscriptionState:
    return SubscriptionState(
        status=Status(row.status),
        product_id=row.product_id,
        renewal_product_id=row.renewal_product_id,
        auto_renew=row.auto_renew,
        expires_at=row.expires_at,
        grace_expires_at=row.grace_expires_at,
        account_id=row.account_id,
        prepaid=row.prepaid,
        clock=decode_clock(row.clock),
    )


def write_state(row: Subscription, state: SubscriptionState, now: datetime) -> None:
    for name in STATE_FIELDS:
        value = getattr(state, name)
        setattr(row, name, value.value if isinstance(value, Status) else value)
    row.clock = encode_clock(state.clock)
    row.last_event_at = state.last_event_at
    row.updated_at = now


def _jsonable(fields: Mapping[str, object]) -> dict[str, object]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}


# Outbox requests a state change may carry out, while they are still open.
CONFIRMABLE_KINDS = ("cancel", "change_plan")
OPEN_STATES = ("pending", "sent", "customer_action_required")
_OPEN_REQUESTS = select(OutboxEntry).where(
    OutboxEntry.subscription_id == bindparam("subscription_id"),
    OutboxEntry.kind.in_(CONFIRMABLE_KINDS),
    OutboxEntry.state.in_(OPEN_STATES),
)


def confirm_requests(session: Session, row: Subscription, now: datetime) -> None:
    """The requests the store's new state carries out are confirmed: a cancellation once
    renewal is off, a plan change once the store renews (or delivers) its product."""
    for entry in session.scalars(_OPEN_REQUESTS, {"subscription_id": row.id}):
        if entry.kind == "cancel":
            done = not row.auto_renew
        else:
            done = entry.payload.get("product_id") in (row.renewal_product_id, row.product_id)
        if done:
            entry.state = "confirmed"
            entry.confirmed_at = now


def link_account(
    session: Session, row: Subscription, account_id: str, *, now: datetime, source: str
) -> Applied:
    """The business says `row` (locked by this transaction) belongs to `account_id` (a
    submitted purchase, a transfer).

    Applied through the same merge as store facts, with a stamp no store time reaches, so a
    later notification carrying another appAccountToken cannot take the subscription back.
    """
    previous = row.account_id
    stamp = link_stamp(now)
    held = decode_clock(row.clock).get("account_id")
    if held is not None and held >= stamp:
        # Two links within one clock tick: the later call still wins.
        stamp = Stamp(held.time, held.tiebreak + "+")
    observation = Observation(
        channel=Channel(row.channel),
        store_id=row.store_id,
        stamp=stamp,
        kind="TRANSFERRED" if previous and previous != account_id else "ACCOUNT_LINKED",
        environment=row.environment,
        fields={"account_id": account_id},
        detail={"from_account_id": previous, "to_account_id": account_id},
    )
    return apply_observation(session, observation, source=source, now=now, held=row)
