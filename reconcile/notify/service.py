"""The writer of outbound events: changes are collected during a transaction and turned into
events when it commits, inside it.

Writers say what they are about to change (`track_subscription`, `track_purchase`, `touch`)
or emit an event outright (`emit`: account actions, the credits ledger). At commit
(`settle`, a `before_commit` hook) every tracked resource is diffed from its view at first
tracking to its view now (`reconcile.notify.changes`), the touched accounts' entitlements are
compared with what was last told (`reconcile.notify.access`), and the events are written with
their per-account `sequence` and feed `position`, plus one delivery per matching endpoint.

Sequences and positions are taken from counter rows locked until the commit ends (accounts in
sorted order, the feed position last), so both follow commit order: no gaps, no duplicates,
and the feed never passes an event that commits later with a smaller position.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Row,
    Table,
    TextClause,
    bindparam,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from reconcile.catalog.file import Catalog
from reconcile.ids import new_id
from reconcile.models import Purchase, Subscription
from reconcile.notify import access
from reconcile.notify.changes import View, previous, purchase_changes, subscription_changes
from reconcile.notify.event_types import KNOWN
from reconcile.notify.models import Delivery, Event, EventCounter, WebhookEndpoint
from reconcile.views import blocked_among, iso, present, purchase_json

PENDING_KEY = "reconcile.notify.pending"
CATALOG_KEY = "reconcile.catalog"
WAKE_KEY = "reconcile.notify.wake"
POSITION = "position"

_EVENTS = cast(Table, Event.__table__)
_DELIVERIES = cast(Table, Delivery.__table__)
_COUNTERS = cast(Table, EventCounter.__table__)
# Built once: every commit that changed something runs some of them.
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_SUBSCRIPTIONS_NOW = (select(Subscription).where(Subscription.id.in_(_IDS))
                      .execution_options(populate_existing=True))
_PURCHASES_NOW = (select(Purchase).where(Purchase.id.in_(_IDS))
                  .execution_options(populate_existing=True))
_EVER_STARTED = select(Event.subscription_id).where(Event.type == "subscription.started",
                                                     Event.subscription_id.in_(_IDS))
_ENDPOINTS = (select(WebhookEndpoint.id, WebhookEndpoint.event_types)
              .where(WebhookEndpoint.enabled.is_(True)))


@dataclass
class _Pending:
    """What one transaction changed so far, in the order it was first told."""

    now: datetime | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    # The savepoint each emitted event was made in (None: the transaction itself).
    savepoints: list[SessionTransaction | None] = field(default_factory=list)
    subscriptions: dict[str, View | None] = field(default_factory=dict)
    purchases: dict[str, View | None] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=set)

    def at(self, now: datetime) -> None:
        self.now = now if self.now is None else max(self.now, now)


def configure(sessions: sessionmaker[Session], catalog: Catalog,
              wake: threading.Event | None = None) -> None:
    """Sessions of `sessions` compute entitlements with `catalog` and set `wake` after a commit
    that wrote events (so this process's sender starts at once)."""
    sessions.configure(info={CATALOG_KEY: catalog, WAKE_KEY: wake})


def _pending(session: Session) -> _Pending:
    pending = session.info.get(PENDING_KEY)
    if pending is None:
        pending = session.info[PENDING_KEY] = _Pending()
    return cast(_Pending, pending)


def emit(
    session: Session,
    *,
    type: str,
    account_id: str | None,
    data: Mapping[str, Any],
    now: datetime,
    subscription_id: str | None = None,
) -> str:
    """Record one event of `type` in the caller's transaction; returns its id.

    Its `sequence` and feed position are given when the transaction commits.
    """
    if type not in KNOWN:
        raise ValueError(f"unknown event type {type!r}")
    pending = _pending(session)
    pending.at(now)
    event_id = new_id("evt")
    pending.events.append({
        "id": event_id, "type": type, "account_id": account_id,
        "subscription_id": subscription_id, "created_at": now, "data": dict(data),
    })
    pending.savepoints.append(session.get_nested_transaction())
    return event_id


def track_subscription(session: Session, row: Subscription, now: datetime) -> None:
    """`row` may change in this transaction: its events are derived at commit."""
    pending = _pending(session)
    pending.at(now)
    if row.id not in pending.subscriptions:
        pending.subscriptions[row.id] = present(session, [row], now)[0]


def track_new_subscription(session: Session, subscription_id: str, now: datetime) -> None:
    """A subscription that did not exist before this transaction."""
    pending = _pending(session)
    pending.at(now)
    pending.subscriptions.setdefault(subscription_id, None)


def track_views(session: Session, views: Mapping[str, View | None], now: datetime) -> None:
    """Many subscriptions at once, with their views before (None: new), for the bulk path."""
    pending = _pending(session)
    pending.at(now)
    for subscription_id, view in views.items():
        pending.subscriptions.setdefault(subscription_id, view)


def track_purchase(session: Session, row: Purchase | None, now: datetime,
                   purchase_id: str | None = None) -> None:
    """Purchase `row` (or the new purchase `purchase_id`) may change in this transaction."""
    pending = _pending(session)
    pending.at(now)
    key = row.id if row is not None else purchase_id
    if key is not None and key not in pending.purchases:
        pending.purchases[key] = None if row is None else _purchase_views(session, [row])[row.id]


def touch(session: Session, account_id: str | None, now: datetime) -> None:
    """The account's entitlements may have changed: compare them with the last told at commit."""
    if account_id:
        pending = _pending(session)
        pending.at(now)
        pending.accounts.add(account_id)


def settle(session: Session) -> int:
    """Turn what this transaction changed into events, inside it; returns how many."""
    pending = session.info.pop(PENDING_KEY, None)
    if not isinstance(pending, _Pending) or pending.now is None:
        return 0
    now = pending.now
    session.flush()  # a writer may have worked with autoflush off: diff what is really there
    events = pending.events
    accounts = set(pending.accounts)
    if pending.subscriptions:
        events.extend(_subscription_events(session, pending.subscriptions, now, accounts))
    if pending.purchases:
        events.extend(_purchase_events(session, pending.purchases, now, accounts))
    catalog: Catalog | None = session.info.get(CATALOG_KEY)
    entitlements = catalog is not None and bool(catalog.products) and bool(accounts)
    if not events and not entitlements:
        return 0
    owners = {e["account_id"] for e in events if e["account_id"]}
    locked = _lock_accounts(session, owners | accounts if entitlements else owners)
    if entitlements:
        assert catalog is not None
        for account_id, kind, grant, was in access.settle(session, catalog, sorted(accounts), now):
            events.append({
                "id": new_id("evt"), "type": f"entitlement.{kind}", "account_id": account_id,
                "subscription_id": grant.get("subscription_id"), "created_at": now,
                "data": {"entitlement": grant, "previous": {"active": was}},
            })
    if not events:
        return 0
    _number(session, events, locked)
    session.execute(insert(_EVENTS), events)
    _queue_deliveries(session, events, now)
    session.info["reconcile.notify.wrote"] = True
    return len(events)


def _subscription_events(
    session: Session, befores: Mapping[str, View | None], now: datetime, accounts: set[str]
) -> list[dict[str, Any]]:
    rows = list(session.scalars(_SUBSCRIPTIONS_NOW, {"ids": list(befores)}))
    afters = {row.id: view for row, view in zip(rows, present(session, rows, now), strict=True)}
    # Only a subscription that becomes entitled may be starting: was it ever entitled before?
    candidates = [i for i, before in befores.items() if i in afters and afters[i]["entitled"]
                  and (before is None or not before["entitled"])]
    started = set(session.scalars(_EVER_STARTED, {"ids": candidates})) if candidates else set()
    events: list[dict[str, Any]] = []
    for subscription_id, before in befores.items():
        after = afters.get(subscription_id)
        if after is None:
            continue  # folded into another subscription of its chain
        changed = previous(before, after)
        if before is not None and not changed:
            continue
        for account_id in (after["account_id"], before and before["account_id"]):
            if account_id:
                accounts.add(account_id)
        data = {"subscription": after, "previous": changed}
        for kind in subscription_changes(before, after, started=subscription_id in started):
            owners = [after["account_id"]]
            if kind == "subscription.transferred" and before is not None:
                owners.insert(0, before["account_id"])  # both accounts hear of it
            events.extend(_row(kind, owner, subscription_id, data, now) for owner in owners)
    return events


def _purchase_views(session: Session, rows: Sequence[Purchase]) -> dict[str, View]:
    blocked = blocked_among(session, {row.account_id for row in rows if row.account_id})
    return {row.id: purchase_json(row, row.account_id in blocked) for row in rows}


def _purchase_events(
    session: Session, befores: Mapping[str, View | None], now: datetime, accounts: set[str]
) -> list[dict[str, Any]]:
    rows = list(session.scalars(_PURCHASES_NOW, {"ids": list(befores)}))
    afters = _purchase_views(session, rows)
    events: list[dict[str, Any]] = []
    for purchase_id, before in befores.items():
        after = afters.get(purchase_id)
        if after is None:
            continue
        changed = previous(before, after)
        if before is not None and not changed:
            continue
        for account_id in (after["account_id"], before and before["account_id"]):
            if account_id:
                accounts.add(account_id)
        data = {"purchase": after, "previous": changed}
        for kind in purchase_changes(before, after):
            owners = [after["account_id"]]
            if kind == "purchase.transferred" and before is not None:
                owners.insert(0, before["account_id"])
            events.extend(_row(kind, owner, None, data, now) for owner in owners)
    return events


def _row(kind: str, account_id: str | None, subscription_id: str | None,
         data: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {"id": new_id("evt"), "type": kind, "account_id": account_id,
            "subscription_id": subscription_id, "created_at": now, "data": dict(data)}


# Text, compiled once per shape: SQLAlchemy 2.0 cannot cache a compiled
# `on_conflict_do_update`, and compiling one cost more than the rest of a small commit.
# SQLite and PostgreSQL both read this SQL; only placeholders vary, the values are bound.
@cache
def _lock_counters(rows: int) -> TextClause:
    """Create or lock `rows` counters (setting a held one to itself takes its row lock) and
    return their values."""
    values = ", ".join(f"(:name_{i}, 0)" for i in range(rows))
    return text(
        f"INSERT INTO event_counters (name, value) VALUES {values}"  # noqa: S608
        " ON CONFLICT (name) DO UPDATE SET value = event_counters.value RETURNING name, value")


_ADVANCE_POSITION = text(
    "INSERT INTO event_counters (name, value) VALUES (:name, :count)"
    " ON CONFLICT (name) DO UPDATE SET value = event_counters.value + :count RETURNING value")


def _powers_of_two(count: int) -> list[int]:
    """`count` as a sum of powers of two, largest first: few statement shapes for any count."""
    return [1 << bit for bit in range(count.bit_length() - 1, -1, -1) if count >> bit & 1]


def _lock_accounts(session: Session, accounts: set[str]) -> dict[str, int]:
    """Lock the accounts' sequence counters (sorted, so writers never deadlock on them) until
    the commit ends, and read them: whoever holds them decides the accounts' next events."""
    names = [f"account:{a}" for a in sorted(accounts)]
    held: dict[str, int] = {}
    start = 0
    for size in _powers_of_two(len(names)):
        chunk = names[start:start + size]
        start += size
        rows = session.execute(_lock_counters(size),
                               {f"name_{i}": name for i, name in enumerate(chunk)})
        held.update((name.removeprefix("account:"), value) for name, value in rows)
    return held


def _number(session: Session, events: list[dict[str, Any]], held: dict[str, int]) -> None:
    """Give each event its account's next sequence and the next feed positions."""
    last = dict(held)
    for row in events:
        account_id = row["account_id"]
        if account_id is None:
            row["sequence"] = None
            continue
        last[account_id] += 1
        row["sequence"] = last[account_id]
    moved = [{"b_name": f"account:{a}", "b_value": v} for a, v in last.items() if v != held[a]]
    if moved:
        session.execute(
            update(_COUNTERS).where(_COUNTERS.c.name == bindparam("b_name"))
            .values(value=bindparam("b_value")),
            moved,
        )
    top = session.execute(_ADVANCE_POSITION,
                          {"name": POSITION, "count": len(events)}).scalar_one()
    for offset, row in enumerate(events):
        row["position"] = top - len(events) + 1 + offset


def _queue_deliveries(session: Session, events: list[dict[str, Any]], now: datetime) -> None:
    endpoints = session.execute(_ENDPOINTS).all()
    rows = [
        {"endpoint_id": endpoint_id, "event_id": row["id"], "event_type": row["type"],
         "account_id": row["account_id"], "position": row["position"], "status": "pending",
         "attempts": 0, "next_attempt_at": now, "created_at": now}
        for row in events
        for endpoint_id, types in endpoints
        if types is None or row["type"] in types
    ]
    if rows:
        session.execute(insert(_DELIVERIES), rows)


def event_json(row: Event | Row[Any]) -> dict[str, Any]:
    """The contract's Event (of the entity, or of a row of its columns)."""
    return {"id": row.id, "type": row.type, "created_at": iso(row.created_at),
            "account_id": row.account_id, "sequence": row.sequence, "data": row.data}


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    settle(session)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop("reconcile.notify.wrote", False):
        wake = session.info.get(WAKE_KEY)
        if isinstance(wake, threading.Event):
            wake.set()


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if not session.in_transaction():
        session.info.pop(PENDING_KEY, None)
        session.info.pop("reconcile.notify.wrote", None)
        return
    pending = session.info.get(PENDING_KEY)
    if isinstance(pending, _Pending) and previous_transaction.nested:
        # A savepoint rolled back (a reconciliation repair that lost a race): so did what
        # was emitted inside it. Tracked resources need nothing: they are diffed at commit.
        kept = [(e, sp) for e, sp in zip(pending.events, pending.savepoints, strict=True)
                if not _within(sp, previous_transaction)]
        pending.events = [e for e, _ in kept]
        pending.savepoints = [sp for _, sp in kept]


def _within(savepoint: SessionTransaction | None, rolled_back: SessionTransaction) -> bool:
    while savepoint is not None:
        if savepoint is rolled_back:
            return True
        savepoint = savepoint.parent
    return False
