"""Apply a `Normalised` outcome to the database: the only writer of subscription state.

Webhook processing and reconciliation both end here, so a fact from any source goes through
the same merge (`reconcile.state.apply`) and the same bookkeeping. Functions take the caller's
session and never commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from reconcile.chains import absorb, continued_by_account
from reconcile.events import (
    AcknowledgementDue,
    ConsumptionRequested,
    Normalised,
    PurchaseSeen,
    RefundDeclined,
    RefundSeen,
)
from reconcile.ids import new_id
from reconcile.models import (
    Account,
    Acknowledgement,
    OutboxEntry,
    Purchase,
    Refund,
    StoreId,
    Subscription,
    SubscriptionEvent,
)
from reconcile.state import (
    STATE_FIELDS,
    Channel,
    Observation,
    Stamp,
    Status,
    SubscriptionState,
    apply,
)

# Apple wants a consumption answer within 12 hours of the request.
CONSUMPTION_DEADLINE = timedelta(hours=12)


@dataclass(frozen=True)
class Applied:
    """What an ingest did: the subscription it touched and whether its state changed."""

    subscription_id: str | None
    changed: bool


def ingest(
    session: Session,
    outcome: Normalised,
    *,
    source: str,
    now: datetime,
    inbox_id: int | None = None,
) -> Applied:
    """Record everything `outcome` says; the subscription merge is field-wise newest-wins."""
    applied = Applied(None, False)
    if outcome.subscription is not None:
        applied = apply_observation(
            session, outcome.subscription, source=source, now=now, inbox_id=inbox_id
        )
    if outcome.purchase is not None:
        record_purchase(session, outcome.purchase, now)
    if outcome.refund is not None:
        record_refund(session, outcome.refund, now, applied.subscription_id)
    if outcome.consumption_request is not None:
        queue_consumption_answer(session, outcome.consumption_request, now)
    if outcome.refund_declined is not None:
        record_refund_declined(session, outcome.refund_declined)
    if outcome.acknowledgement is not None:
        require_acknowledgement(session, outcome.acknowledgement, now)
    return applied


def find_subscription(
    session: Session, channel: str, store_id: str, *, lock: bool = False
) -> Subscription | None:
    """The subscription any of whose store identifiers is `store_id`.

    With `lock`, the row is locked for this transaction (PostgreSQL: writers of one
    subscription take turns; the version column catches anything else).
    """
    query = (
        select(Subscription)
        .join(StoreId, StoreId.subscription_id == Subscription.id)
        .where(StoreId.channel == channel, StoreId.store_id == store_id)
    )
    if lock:
        query = query.with_for_update(of=Subscription)
    return session.scalars(query).first()


def apply_observation(
    session: Session,
    observation: Observation,
    *,
    source: str,
    now: datetime,
    inbox_id: int | None = None,
) -> Applied:
    channel = observation.channel.value
    row = find_subscription(session, channel, observation.store_id, lock=True)
    older = [found for linked in observation.linked_store_ids
             if (found := find_subscription(session, channel, linked, lock=True)) is not None]
    # The newest store id decides the state: the one this observation continues, or this one.
    newest_token = True
    if row is None and older:
        row = older[0]
    if row is None:
        row = continued_by_account(session, observation)
    if row is None:
        row = _new_subscription(session, observation, now)
    else:
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
    if changed and not after.auto_renew:
        confirm_cancellations(session, row, now)
    if changed:
        confirm_plan_changes(session, row, now)
    return Applied(row.id, changed)


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
    session.add(row)
    session.flush()
    for store_id in dict.fromkeys((observation.store_id, *observation.linked_store_ids)):
        session.add(StoreId(channel=row.channel, store_id=store_id, subscription_id=row.id,
                            created_at=now))
    session.flush()
    return row


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
        clock={name: Stamp.decode(raw) for name, raw in (row.clock or {}).items()},
    )


def write_state(row: Subscription, state: SubscriptionState, now: datetime) -> None:
    for name in STATE_FIELDS:
        value = getattr(state, name)
        setattr(row, name, value.value if isinstance(value, Status) else value)
    row.clock = {name: stamp.encode() for name, stamp in state.clock.items()}
    row.last_event_at = state.last_event_at
    row.updated_at = now


def _jsonable(fields: Mapping[str, object]) -> dict[str, object]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}


def ensure_account(session: Session, account_id: str, now: datetime) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        account = Account(account_id=account_id, consumption_consent=False,
                          credits_purchased=0, credits_used=0, updated_at=now)
        session.add(account)
        session.flush()
    return account


def record_purchase(session: Session, seen: PurchaseSeen, now: datetime) -> Purchase:
    row = session.scalars(
        select(Purchase).where(Purchase.channel == seen.channel.value,
                               Purchase.store_id == seen.store_id)
    ).first()
    if row is None:
        row = Purchase(
            id=new_id("pur"), channel=seen.channel.value, environment=seen.environment,
            store_id=seen.store_id, product_id=seen.product_id, kind=seen.kind,
            account_id=seen.account_id, quantity=seen.quantity, amount=seen.amount,
            currency=seen.currency, purchased_at=seen.purchased_at, state=seen.state,
            revoked_at=seen.stamp.time if seen.state == "revoked" else None,
            consumed=False, clock={"state": seen.stamp.encode()}, created_at=now, updated_at=now,
        )
        session.add(row)
    else:
        held = row.clock.get("state")
        if held is None or Stamp.decode(held) < seen.stamp:
            row.state = seen.state
            row.clock = {**row.clock, "state": seen.stamp.encode()}
        row.account_id = row.account_id or seen.account_id
        row.amount = row.amount or seen.amount
        row.currency = row.currency or seen.currency
        row.updated_at = now
    if seen.account_id:
        ensure_account(session, seen.account_id, now)
    if seen.needs_acknowledgement:
        kind = "consumable" if seen.kind == "consumable" else "product"
        require_acknowledgement(session, AcknowledgementDue(seen.store_id, seen.product_id, kind),
                                now)
    session.flush()
    return row


def record_refund(
    session: Session, seen: RefundSeen, now: datetime, subscription_id: str | None
) -> Refund:
    row = session.scalars(
        select(Refund).where(Refund.channel == seen.channel.value,
                             Refund.refund_key == seen.refund_key)
    ).first()
    if subscription_id is None and seen.subscription_store_id:
        sub = find_subscription(session, seen.channel.value, seen.subscription_store_id)
        subscription_id = sub.id if sub else None
    purchase = None
    if seen.purchase_store_id:
        purchase = session.scalars(
            select(Purchase).where(Purchase.channel == seen.channel.value,
                                   Purchase.store_id == seen.purchase_store_id)
        ).first()
    if row is None:
        # Google's voided-purchase notice names only the token: the rest comes from our records.
        known: Purchase | Subscription | None = purchase or (
            session.get(Subscription, subscription_id) if subscription_id else None)
        row = Refund(
            channel=seen.channel.value, refund_key=seen.refund_key, store_id=seen.store_id,
            subscription_id=subscription_id, purchase_id=purchase.id if purchase else None,
            account_id=seen.account_id or (known.account_id if known else None),
            product_id=seen.product_id or (known.product_id if known else None),
            amount=seen.amount,
            currency=seen.currency, refunded_at=seen.refunded_at, recorded_at=now,
            consumption_answer_sent=_consumption_answered(session, seen.store_id),
        )
        session.add(row)
    if seen.reversed:
        row.reversed_at = row.reversed_at or seen.stamp.time
    if purchase is not None:
        held = purchase.clock.get("state")
        if held is None or Stamp.decode(held) < seen.stamp:
            purchase.state = "purchased" if seen.reversed else "revoked"
            purchase.revoked_at = None if seen.reversed else seen.refunded_at
            purchase.clock = {**purchase.clock, "state": seen.stamp.encode()}
            purchase.updated_at = now
    _settle_consumption_requests(session, seen)
    session.flush()
    return row


def _consumption_answered(session: Session, transaction_id: str) -> bool:
    return session.scalars(
        select(OutboxEntry.id).where(OutboxEntry.kind == "consumption",
                                     OutboxEntry.store_id == transaction_id,
                                     OutboxEntry.state == "sent")
    ).first() is not None


def _settle_consumption_requests(session: Session, seen: RefundSeen) -> None:
    """Track how a refund request ended: Apple refunded (or reversed that)."""
    for entry in session.scalars(
        select(OutboxEntry).where(OutboxEntry.kind == "consumption",
                                  OutboxEntry.store_id == seen.store_id)
    ):
        entry.outcome = "refund_reversed" if seen.reversed else "refunded"


def record_refund_declined(session: Session, seen: RefundDeclined) -> None:
    """Track how a refund request ended: Apple declined it."""
    for entry in session.scalars(
        select(OutboxEntry).where(OutboxEntry.kind == "consumption",
                                  OutboxEntry.store_id == seen.transaction_id)
    ):
        entry.outcome = "declined"


def queue_consumption_answer(session: Session, seen: ConsumptionRequested, now: datetime) -> None:
    key = f"{seen.transaction_id}:{seen.notification_id}"
    exists = session.scalars(
        select(OutboxEntry.id).where(OutboxEntry.kind == "consumption",
                                     OutboxEntry.dedupe_key == key)
    ).first()
    if exists is not None:
        return
    session.add(
        OutboxEntry(
            channel="apple", kind="consumption", dedupe_key=key,
            account_id=seen.account_id, store_id=seen.transaction_id,
            payload={"original_transaction_id": seen.original_transaction_id,
                     "product_id": seen.product_id, "product_type": seen.product_type,
                     "reason": seen.reason, "environment": seen.environment,
                     "requested_at": seen.requested_at.isoformat()},
            state="pending", attempts=0, created_at=now, next_attempt_at=now,
            deadline_at=seen.requested_at + CONSUMPTION_DEADLINE,
        )
    )


def require_acknowledgement(session: Session, due: AcknowledgementDue, now: datetime) -> None:
    row = session.get(Acknowledgement, ("google", due.store_id))
    if row is None:
        session.add(Acknowledgement(channel="google", store_id=due.store_id,
                                    product_id=due.product_id, kind=due.kind, first_seen_at=now,
                                    attempts=0, next_attempt_at=now))


def confirm_cancellations(session: Session, row: Subscription, now: datetime) -> None:
    """Renewal is off at the store: any cancellation we asked for is confirmed."""
    for entry in session.scalars(
        select(OutboxEntry).where(
            OutboxEntry.subscription_id == row.id,
            OutboxEntry.kind == "cancel",
            OutboxEntry.state.in_(("pending", "sent", "customer_action_required")),
        )
    ):
        entry.state = "confirmed"
        entry.confirmed_at = now


def confirm_plan_changes(session: Session, row: Subscription, now: datetime) -> None:
    """The store now renews (or already delivers) the product a plan change asked for."""
    for entry in session.scalars(
        select(OutboxEntry).where(
            OutboxEntry.subscription_id == row.id,
            OutboxEntry.kind == "change_plan",
            OutboxEntry.state.in_(("pending", "sent", "customer_action_required")),
        )
    ):
        if entry.payload.get("product_id") in (row.renewal_product_id, row.product_id):
            entry.state = "confirmed"
            entry.confirmed_at = now
