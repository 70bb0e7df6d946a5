"""Rebuilding one subscription's derived state from its notifications, in the caller's
transaction: what the replay changes, and how it tells what changed.

A group is one subscription (every store id it holds) or one store id nothing holds yet. Its
state is rebuilt by forgetting the field clocks (not the values), deleting the history rows the
inbox made, and applying every notification again (newest first) through
`reconcile.ingest.ingest`, the one writer of state: each field the notifications speak of
ends at the newest notification's value, a field they never mention keeps its value and its
clock. Store ids, one-time purchases and
refunds that are missing come back; existing ones are merged as any notification would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from reconcile.ingest import ingest
from reconcile.models import (
    Purchase,
    Refund,
    StoreId,
    Subscription,
    SubscriptionEvent,
)
from reconcile.outcomes import Normalised
from reconcile.state import STATE_FIELDS, Stamp, decode_clock

# What a rebuild shows per subscription (the state fields, its store ids, its history's size).
SHOWN = (*STATE_FIELDS, "store_ids", "history")


@dataclass(frozen=True)
class Group:
    """What is rebuilt together: the store ids of one subscription, on one channel."""

    channel: str
    subjects: tuple[str, ...]
    subscription_id: str | None = None


@dataclass(frozen=True)
class Change:
    """One field a rebuild changes: `here` before, `rebuilt` after (None: absent)."""

    channel: str
    store_id: str
    subscription_id: str | None
    field: str
    here: str | None
    rebuilt: str | None

    def line(self) -> str:
        who = self.subscription_id or "-"
        return (f"{self.channel} {self.store_id} {who} {self.field}: "
                f"{_show(self.here)} -> {_show(self.rebuilt)}")


def _show(value: str | None) -> str:
    return "-" if value is None else value


def for_replay(outcome: Normalised) -> Normalised:
    """`outcome` without what is not derived state: answers owed to Apple (the outbox) and
    acknowledgements owed to Google were settled when the notification first came."""
    purchase = outcome.purchase
    if purchase is not None and purchase.needs_acknowledgement:
        purchase = replace(purchase, needs_acknowledgement=False)
    return replace(outcome, consumption_request=None, refund_declined=None,
                   acknowledgement=None, purchase=purchase)


def rebuild(
    session: Session,
    group: Group,
    applied: Sequence[tuple[int, Normalised]],
    now: datetime,
) -> list[Change]:
    """Rebuild `group` from `applied` (inbox id, outcome) and return what changed."""
    keys = _record_keys(applied)
    before = snapshot(session, group, keys)
    held = _forget_clock(session, group.subscription_id)
    session.execute(
        delete(SubscriptionEvent)
        .where(SubscriptionEvent.inbox_id.in_([inbox_id for inbox_id, _ in applied]))
        .execution_options(synchronize_session=False)
    )
    # Newest first: each field is then written once, straight to its final value, so no
    # intermediate state (renewal off on the way to on) triggers what a change triggers.
    for inbox_id, outcome in _newest_first(applied):
        ingest(session, for_replay(outcome), source=group.channel, now=now, inbox_id=inbox_id)
    _history_in_inbox_order(session, [inbox_id for inbox_id, _ in applied])
    if held:
        _restore_unmentioned(session, group.subscription_id, held)
    session.flush()
    return diff(group, before, snapshot(session, group, keys))


def _newest_first(applied: Sequence[tuple[int, Normalised]]) -> list[tuple[int, Normalised]]:
    """Subscription observations by descending store stamp, then everything else."""
    observed = [item for item in applied if item[1].subscription is not None]
    observed.sort(key=_stamp, reverse=True)
    return observed + [item for item in applied if item[1].subscription is None]


def _stamp(item: tuple[int, Normalised]) -> tuple[Stamp, int]:
    observation = item[1].subscription
    assert observation is not None
    return observation.stamp, item[0]


def _history_in_inbox_order(session: Session, inbox_ids: list[int]) -> None:
    """The rebuilt history rows, renumbered in the order the notifications were recorded."""
    session.flush()
    rows = list(session.scalars(select(SubscriptionEvent)
                                .where(SubscriptionEvent.inbox_id.in_(inbox_ids))
                                .order_by(SubscriptionEvent.inbox_id, SubscriptionEvent.id)))
    copies = [{column: getattr(row, column) for column in _EVENT_COLUMNS} for row in rows]
    for row in rows:
        session.delete(row)
    session.flush()
    session.add_all(SubscriptionEvent(**values) for values in copies)


_EVENT_COLUMNS = ("subscription_id", "source", "kind", "store_time", "recorded_at", "applied",
                  "inbox_id", "detail")


def _forget_clock(session: Session, subscription_id: str | None) -> dict[str, Any]:
    if subscription_id is None:
        return {}
    row = session.get(Subscription, subscription_id, with_for_update=True)
    if row is None:
        return {}
    held = dict(row.clock or {})
    row.clock = {}
    session.flush()
    return held


def _restore_unmentioned(session: Session, subscription_id: str | None,
                         held: dict[str, Any]) -> None:
    """Fields no notification spoke of keep the stamp they had (a portal-style or reconciled
    value the inbox cannot rebuild must not become easier to overwrite)."""
    row = session.get(Subscription, subscription_id) if subscription_id else None
    if row is None:
        return
    clock = dict(row.clock or {})
    missing = {name: stamp for name, stamp in held.items() if name not in clock}
    if not missing:
        return
    clock.update(missing)
    row.clock = clock
    row.last_event_at = max((s.time for s in decode_clock(clock).values()), default=None)


@dataclass(frozen=True)
class _Keys:
    purchases: tuple[str, ...]
    refunds: tuple[str, ...]


def _record_keys(applied: Sequence[tuple[int, Normalised]]) -> _Keys:
    purchases = sorted({o.purchase.store_id for _, o in applied if o.purchase is not None})
    refunds = sorted({o.refund.refund_key for _, o in applied if o.refund is not None})
    return _Keys(tuple(purchases), tuple(refunds))


Picture = dict[tuple[str, str], dict[str, str | None]]


def snapshot(session: Session, group: Group, keys: _Keys) -> Picture:
    """Everything a rebuild of `group` may change, rendered as text, by (what, key)."""
    picture: Picture = {}
    ids = set(session.scalars(
        select(StoreId.subscription_id)
        .where(StoreId.channel == group.channel, StoreId.store_id.in_(group.subjects))
    ))
    for row in session.scalars(select(Subscription).where(Subscription.id.in_(ids))):
        store_ids = sorted(session.scalars(
            select(StoreId.store_id).where(StoreId.subscription_id == row.id)))
        history = session.scalar(select(func.count()).select_from(SubscriptionEvent)
                                 .where(SubscriptionEvent.subscription_id == row.id))
        fields: dict[str, str | None] = {name: _text(getattr(row, name)) for name in STATE_FIELDS}
        fields.update(store_ids=",".join(store_ids), history=f"{history} events",
                      _store_id=row.store_id)
        picture[("subscription", row.id)] = fields
    for purchase in session.scalars(select(Purchase).where(
            Purchase.channel == group.channel, Purchase.store_id.in_(keys.purchases))):
        picture[("purchase", purchase.store_id)] = {
            "state": purchase.state, "account_id": purchase.account_id,
            "amount": purchase.amount, "revoked_at": _text(purchase.revoked_at),
            "_store_id": purchase.store_id}
    for refund in session.scalars(select(Refund).where(
            Refund.channel == group.channel, Refund.refund_key.in_(keys.refunds))):
        picture[("refund", refund.refund_key)] = {
            "refunded_at": _text(refund.refunded_at), "reversed_at": _text(refund.reversed_at),
            "_store_id": refund.store_id}
    return picture


def diff(group: Group, before: Picture, after: Picture) -> list[Change]:
    changes = []
    for key in sorted(set(before) | set(after)):
        what, ident = key
        old, new = before.get(key, {}), after.get(key, {})
        store_id = new.get("_store_id") or old.get("_store_id") or ident
        subscription_id = ident if what == "subscription" else None
        for name in sorted(set(old) | set(new), key=_order):
            if name.startswith("_") or old.get(name) == new.get(name):
                continue
            label = name if what == "subscription" else f"{what}.{name}"
            changes.append(Change(group.channel, store_id, subscription_id, label,
                                  old.get(name), new.get(name)))
    return changes


def _order(name: str) -> tuple[int, str]:
    return (SHOWN.index(name), name) if name in SHOWN else (len(SHOWN), name)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Stamp):
        return value.time.isoformat()
    return str(value)
