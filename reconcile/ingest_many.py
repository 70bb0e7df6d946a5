"""`ingest`'s fast path: many Apple subscription observations in a few statements.

The worker offers each claimed batch here first. Only the common case is taken: an outcome that
is nothing but an Apple observation (no links, purchase, refund, consumption request...) about
a subscription held under that very store id, or about a store id not seen before (which
starts a subscription, as `ingest` does), and whose merge confirms nothing in the outbox. Those
are merged with the same `reconcile.state.apply`, in the same order, as
`reconcile.ingest.apply_observation` would, and written with multi-row INSERTs (new
subscriptions, store ids, events, accounts) and one version-checked UPDATE per known
subscription. Everything else is left to `ingest`. An UPDATE that finds another version raises
`StaleDataError`, and a concurrent insert of the same store id a unique violation,
exactly as through the ORM: the caller rolls back and retries entry by entry through `ingest`.
Functions take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from reconcile.ids import new_id
from reconcile.ingest import CONFIRMABLE_KINDS, OPEN_STATES, _jsonable
from reconcile.models import Account, OutboxEntry, StoreId, Subscription, SubscriptionEvent
from reconcile.notify.changes import View
from reconcile.notify.service import track_views
from reconcile.outcomes import Normalised
from reconcile.state import (
    STATE_FIELDS,
    Channel,
    Observation,
    Status,
    SubscriptionState,
    apply,
    decode_clock,
    encode_clock,
)
from reconcile.store_records import create_accounts
from reconcile.views import present

# Stored columns besides the state that a subscription's view shows.
_VIEWED = ("channel", "environment", "last_event_at", "created_at", "updated_at")
_SUBSCRIPTIONS = cast(Table, Subscription.__table__)
_EVENTS = cast(Table, SubscriptionEvent.__table__)
_STORE_IDS = cast(Table, StoreId.__table__)
_WRITE = (
    update(_SUBSCRIPTIONS)
    .where(_SUBSCRIPTIONS.c.id == bindparam("b_id"),
           _SUBSCRIPTIONS.c.version == bindparam("b_version"))
    .values({name: bindparam(f"v_{name}") for name in
             (*STATE_FIELDS, "clock", "last_event_at", "updated_at", "version")})
)


@dataclass
class _Held:
    id: str
    store_id: str
    version: int  # 0: not in the database yet
    state: SubscriptionState
    row: dict[str, Any] | None = None  # the stored columns the subscription's view needs


def ingest_many(
    session: Session, items: Sequence[tuple[int, Normalised]], *, source: str, now: datetime
) -> set[int]:
    """Apply the outcomes (keyed by inbox id) that the fast path can; return their inbox ids.

    The caller applies the others through `ingest`, in the same transaction.
    """
    done = {inbox_id for inbox_id, outcome in items if _nothing_to_record(outcome)}
    wanted: dict[str, list[tuple[int, Observation]]] = {}
    for inbox_id, outcome in items:
        observation = outcome.subscription
        if observation is not None and _only_observation(outcome):
            wanted.setdefault(observation.store_id, []).append((inbox_id, observation))
    # A store id that an outcome left to `ingest` also names is left to `ingest` entirely, so
    # that its outcomes apply in the order `ingest` alone would apply them.
    for _, outcome in items:
        if not _only_observation(outcome):
            for store_id in _named_store_ids(outcome):
                wanted.pop(store_id, None)
    if not wanted:
        return done
    held = _lock(session, sorted(wanted))
    # A subscription with a request its state change may confirm goes through `ingest`.
    busy = set(session.scalars(
        select(OutboxEntry.subscription_id).where(
            OutboxEntry.subscription_id.in_([row.id for row in held.values() if row]),
            OutboxEntry.kind.in_(CONFIRMABLE_KINDS),
            OutboxEntry.state.in_(OPEN_STATES),
        )
    ))
    created: list[dict[str, Any]] = []
    writes: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    accounts: set[str] = set()
    for store_id, group in sorted(wanted.items()):
        group.sort(key=lambda item: item[0])
        if store_id in held:
            row = held[store_id]
            if row is None or row.id in busy or row.store_id != store_id:
                continue
        else:
            # Unknown store id, no links: `ingest` would start a subscription, so do we.
            row = _Held(new_id("sub"), store_id, 0, SubscriptionState())
        state = row.state
        for inbox_id, observation in group:
            after = apply(state, observation)
            events.append(_event(row.id, observation, after != state, source, now, inbox_id))
            if after.account_id and after.account_id != state.account_id:
                accounts.add(after.account_id)
            state = after
        if row.version == 0:
            created.append(_create(row, state, group[0][1].environment, now))
        elif state != row.state:
            writes.append(_write(row, state, now))
        done.update(inbox_id for inbox_id, _ in group)
    _track(session, held, created, writes, now)
    if created:
        session.execute(insert(_SUBSCRIPTIONS), created)
        session.execute(insert(_STORE_IDS), [
            {"channel": Channel.APPLE.value, "store_id": values["store_id"],
             "subscription_id": values["id"], "created_at": now} for values in created
        ])
    if writes:
        _update(session, writes)
    if events:
        session.execute(insert(_EVENTS), events)
    if accounts:
        _ensure_accounts(session, accounts, now)
    return done


def _track(
    session: Session,
    held: dict[str, _Held | None],
    created: list[dict[str, Any]],
    writes: list[dict[str, Any]],
    now: datetime,
) -> None:
    """Tell the event writer what changes, with each subscription's view before (the same
    `track_*` that `ingest` calls, so the commit derives the same events)."""
    if not (created or writes):
        return
    changed = {values["b_id"] for values in writes}
    before = [Subscription(id=row.id, store_id=row.store_id, **row.row) for row in held.values()
              if row is not None and row.row is not None and row.id in changed]
    views: list[tuple[str, str, View | None]] = [
        (values["store_id"], values["id"], None) for values in created]
    views.extend((sub.store_id, sub.id, view)
                 for sub, view in zip(before, present(session, before, now), strict=True))
    # In store-id order, the order in which the worker hands outcomes to `ingest`.
    track_views(session, {sub_id: view for _, sub_id, view in sorted(
        views, key=lambda item: item[:2])}, now)


def _ensure_accounts(session: Session, account_ids: set[str], now: datetime) -> None:
    """`store_records.ensure_account` for many: a row for every account id not yet known."""
    known = set(session.scalars(
        select(Account.account_id).where(Account.account_id.in_(sorted(account_ids)))
    ))
    create_accounts(session, account_ids - known, now)


def _nothing_to_record(outcome: Normalised) -> bool:
    return outcome.subscription is None and _only_observation(outcome)


def _named_store_ids(outcome: Normalised) -> set[str]:
    names: set[str] = set()
    if outcome.subscription is not None:
        names.update((outcome.subscription.store_id, *outcome.subscription.linked_store_ids))
    for part in (outcome.purchase, outcome.refund, outcome.consumption_request,
                 outcome.refund_declined, outcome.acknowledgement):
        for attribute in ("store_id", "subscription_store_id", "purchase_store_id",
                          "original_transaction_id"):
            value = getattr(part, attribute, None)
            if isinstance(value, str):
                names.add(value)
    return names


def _only_observation(outcome: Normalised) -> bool:
    observation = outcome.subscription
    return (
        outcome.purchase is None
        and outcome.refund is None
        and outcome.consumption_request is None
        and outcome.refund_declined is None
        and outcome.acknowledgement is None
        and outcome.fresh_read is None
        and (observation is None
             or (observation.channel is Channel.APPLE and not observation.linked_store_ids))
    )


def _lock(session: Session, store_ids: list[str]) -> dict[str, _Held | None]:
    """The subscriptions held under `store_ids`, locked in store-id order like `ingest` does;
    None for one that holds two of them (left to `ingest`)."""
    s = _SUBSCRIPTIONS.c
    rows = session.execute(
        select(StoreId.store_id, s.id, s.store_id.label("held_store_id"), s.version,
               *(s[name] for name in STATE_FIELDS), s.clock, *(s[name] for name in _VIEWED))
        .join(_SUBSCRIPTIONS, s.id == StoreId.subscription_id)
        .where(StoreId.channel == Channel.APPLE.value, StoreId.store_id.in_(store_ids))
        .order_by(StoreId.store_id)
        .with_for_update(of=_SUBSCRIPTIONS)
    ).mappings()
    held: dict[str, _Held] = {}
    for row in rows:
        state = SubscriptionState(
            status=Status(row["status"]),
            product_id=row["product_id"],
            renewal_product_id=row["renewal_product_id"],
            auto_renew=row["auto_renew"],
            expires_at=row["expires_at"],
            grace_expires_at=row["grace_expires_at"],
            account_id=row["account_id"],
            prepaid=row["prepaid"],
            clock=decode_clock(row["clock"]),
        )
        held[row["store_id"]] = _Held(row["id"], row["held_store_id"], row["version"], state,
                                      {name: row[name] for name in (*STATE_FIELDS, *_VIEWED)})
    ids = [row.id for row in held.values()]
    return {store_id: row if ids.count(row.id) == 1 else None for store_id, row in held.items()}


def _event(
    subscription_id: str, observation: Observation, applied: bool, source: str, now: datetime,
    inbox_id: int,
) -> dict[str, Any]:
    return {
        "subscription_id": subscription_id,
        "source": source,
        "kind": observation.kind,
        "store_time": observation.stamp.time,
        "recorded_at": now,
        "applied": applied,
        "inbox_id": inbox_id,
        "detail": {"store_id": observation.store_id, **dict(observation.detail),
                   "fields": _jsonable(observation.fields)},
    }


def _create(
    row: _Held, state: SubscriptionState, environment: str, now: datetime
) -> dict[str, Any]:
    """The row `ingest` inserts for a new subscription, with `state` written into it."""
    values: dict[str, Any] = {
        "id": row.id, "channel": Channel.APPLE.value, "environment": environment,
        "store_id": row.store_id, "created_at": now, "updated_at": now,
        "clock": encode_clock(state.clock),
        "last_event_at": state.last_event_at,
        "version": 1,
    }
    for name in STATE_FIELDS:
        value = getattr(state, name)
        values[name] = value.value if isinstance(value, Status) else value
    return values


def _write(row: _Held, state: SubscriptionState, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"b_id": row.id, "b_version": row.version}
    for name in STATE_FIELDS:
        value = getattr(state, name)
        values[f"v_{name}"] = value.value if isinstance(value, Status) else value
    values["v_clock"] = encode_clock(state.clock)
    values["v_last_event_at"] = state.last_event_at
    values["v_updated_at"] = now
    values["v_version"] = row.version + 1
    return values


def _update(session: Session, writes: list[dict[str, Any]]) -> None:
    """Version-checked UPDATEs; one that matches no row means another writer came first."""
    connection = session.connection()
    if connection.dialect.supports_sane_multi_rowcount:
        if connection.execute(_WRITE, writes).rowcount != len(writes):
            raise StaleDataError("a subscription changed under the fast path")
        return
    for values in writes:
        if connection.execute(_WRITE, values).rowcount != 1:
            raise StaleDataError("a subscription changed under the fast path")
