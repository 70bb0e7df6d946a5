"""Every event type, as a table: the state before, one change, and the events it emits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from reconcile import accounts
from reconcile.cancellation import cancel, default_cancellers
from reconcile.channels import portal
from reconcile.db import transaction
from reconcile.models import Purchase, Subscription
from reconcile.notify import service as notify
from reconcile.notify.event_types import EVENT_TYPES
from reconcile.notify.models import Event
from reconcile.outcomes import PurchaseSeen, RefundSeen
from reconcile.state import Channel, Stamp
from reconcile.store_records import record_purchase, record_refund
from tests.support.events import (
    LITE,
    NOW,
    NUMBER_LOCK,
    active,
    emitting_sessions,
    events_after,
    observe,
    top,
)

A, B = "acct-a", "acct-b"
CANCELLERS = default_cancellers(None)
LATER = NOW + timedelta(days=60)


def _sub(session: Session) -> Subscription:
    return session.scalars(select(Subscription)).one()


def _purchase(store_id: str = "p-1", account: str | None = A, state: str = "purchased",
              minute: int = 1) -> PurchaseSeen:
    return PurchaseSeen(channel=Channel.APPLE, store_id=store_id, environment="sandbox",
                        product_id=NUMBER_LOCK, kind="non_consumable",
                        stamp=Stamp(NOW - timedelta(hours=1, minutes=-minute), f"p{minute}"),
                        account_id=account, state=state)


def _refund(**where: Any) -> RefundSeen:
    return RefundSeen(channel=Channel.APPLE, refund_key="r-1", store_id="r-1", refunded_at=NOW,
                      stamp=Stamp(NOW, "refund"), account_id=A, **where)


def _move_purchase(session: Session) -> None:
    """What an account transfer of a submitted purchase does: track, then move it."""
    row = session.scalars(select(Purchase)).one()
    notify.track_purchase(session, row, NOW)
    row.account_id = B


def _move_subscription(session: Session) -> None:
    row = _sub(session)
    notify.track_subscription(session, row, NOW)
    row.account_id = B


def _portal_created(session: Session) -> None:
    portal.create(session, "portal-1", {"account_id": A, "product_id": "portal.pro.monthly",
                                        "expires_at": LATER, "auto_renew": True}, NOW)


Step = Callable[[Session], object]
ENTITLED = [("entitlement.granted", A, "calling"), ("entitlement.granted", A, "pro")]
LOST = [("entitlement.revoked", A, "calling"), ("entitlement.revoked", A, "pro")]


@dataclass
class Case:
    name: str
    before: list[Step]
    change: Step
    expected: list[tuple[str, str | None] | tuple[str, str | None, str]]
    previous: dict[str, Any] = field(default_factory=dict)


def _obs(minute: int, fields: dict[str, Any], store_id: str = "otx-1",
         channel: Channel = Channel.APPLE) -> Step:
    return lambda session: observe(session, store_id, minute, fields, channel=channel)


SUBSCRIBED = _obs(1, active())
CASES = [
    Case("started", [], SUBSCRIBED, [("subscription.started", A), *ENTITLED]),
    Case("renewed", [SUBSCRIBED], _obs(2, {"expires_at": LATER}),
         [("subscription.renewed", A)],
         {"expires_at": "2026-12-01T12:00:00Z"}),
    Case("renewal_disabled", [SUBSCRIBED], _obs(2, {"auto_renew": False}),
         [("subscription.renewal_disabled", A)], {"auto_renew": True}),
    Case("renewal_enabled", [_obs(1, active(auto_renew=False))], _obs(2, {"auto_renew": True}),
         [("subscription.renewal_enabled", A)], {"auto_renew": False}),
    Case("product_changed", [SUBSCRIBED],
         _obs(2, {"product_id": LITE, "renewal_product_id": LITE}),
         [("subscription.product_changed", A), ("entitlement.revoked", A, "pro")]),
    Case("renewal_product_changed", [SUBSCRIBED], _obs(2, {"renewal_product_id": LITE}),
         [("subscription.renewal_product_changed", A)]),
    Case("billing_issue (billing retry)", [SUBSCRIBED], _obs(2, {"status": "billing_retry"}),
         [("subscription.billing_issue", A), *LOST], {"status": "active", "entitled": True}),
    Case("billing_issue (grace period, still entitled)", [SUBSCRIBED],
         _obs(2, {"status": "grace_period", "grace_expires_at": NOW + timedelta(days=3)}),
         [("subscription.billing_issue", A)]),
    Case("recovered", [SUBSCRIBED, _obs(2, {"status": "billing_retry"})],
         _obs(3, {"status": "active"}), [("subscription.recovered", A), *ENTITLED]),
    Case("paused", [_obs(1, active(), channel=Channel.GOOGLE)],
         _obs(2, {"status": "paused"}, channel=Channel.GOOGLE),
         [("subscription.paused", A), *LOST]),
    Case("expired", [SUBSCRIBED], _obs(2, {"status": "expired", "auto_renew": False}),
         [("subscription.expired", A), ("subscription.renewal_disabled", A), *LOST]),
    Case("revoked", [SUBSCRIBED], _obs(2, {"status": "revoked"}),
         [("subscription.revoked", A), *LOST]),
    Case("transferred (a store says so)", [SUBSCRIBED], _obs(2, {"account_id": B}),
         [("subscription.transferred", A), ("subscription.transferred", B), *LOST,
          ("entitlement.granted", B, "calling"), ("entitlement.granted", B, "pro")],
         {"account_id": A}),
    Case("transferred (moved by a direct call)", [SUBSCRIBED], _move_subscription,
         [("subscription.transferred", A), ("subscription.transferred", B), *LOST,
          ("entitlement.granted", B, "calling"), ("entitlement.granted", B, "pro")]),
    Case("cancellation_updated", [SUBSCRIBED],
         lambda s: cancel(s, _sub(s), "customer_request", None, NOW, CANCELLERS),
         [("subscription.cancellation_updated", A)], {"cancellation": None}),
    Case("a duplicate changes nothing", [SUBSCRIBED], SUBSCRIBED, []),
    Case("an older message changes nothing", [_obs(5, active())], _obs(2, {"auto_renew": False}),
         []),
    Case("not yet linked to an account", [], _obs(1, active(account=None)),
         [("subscription.started", None)]),
    Case("purchase.completed", [], lambda s: record_purchase(s, _purchase(), NOW),
         [("purchase.completed", A), ("entitlement.granted", A, "number_lock")]),
    Case("purchase.revoked and refund.recorded",
         [lambda s: record_purchase(s, _purchase(), NOW)],
         lambda s: record_refund(s, _refund(purchase_store_id="p-1"), NOW, None),
         [("refund.recorded", A), ("purchase.revoked", A),
          ("entitlement.revoked", A, "number_lock")]),
    Case("purchase.transferred", [lambda s: record_purchase(s, _purchase(), NOW)],
         _move_purchase,
         [("purchase.transferred", A), ("purchase.transferred", B),
          ("entitlement.revoked", A, "number_lock"), ("entitlement.granted", B, "number_lock")]),
    Case("a pending purchase completes", [lambda s: record_purchase(
        s, _purchase(state="pending"), NOW)],
         lambda s: record_purchase(s, _purchase(minute=2), NOW),
         [("purchase.completed", A), ("entitlement.granted", A, "number_lock")]),
    Case("account.blocked", [SUBSCRIBED],
         lambda s: accounts.block(s, A, "abuse", NOW, CANCELLERS),
         [("account.blocked", A), ("subscription.cancellation_updated", A), *LOST]),
    Case("account.unblocked",
         [SUBSCRIBED, lambda s: accounts.block(s, A, "abuse", NOW, CANCELLERS)],
         lambda s: accounts.unblock(s, A, NOW), [("account.unblocked", A), *ENTITLED]),
    Case("blocking twice tells once",
         [SUBSCRIBED, lambda s: accounts.block(s, A, "abuse", NOW, CANCELLERS)],
         lambda s: accounts.block(s, A, "again", NOW, CANCELLERS), []),
    Case("account.ported_out", [SUBSCRIBED],
         lambda s: accounts.port_out(s, A, "moved", NOW, CANCELLERS),
         [("account.ported_out", A), ("subscription.cancellation_updated", A)]),
    Case("portal: created", [],
         lambda s: portal.create(s, "portal-1", {
             "account_id": A, "product_id": "portal.pro.monthly", "expires_at": LATER,
             "auto_renew": True}, NOW),
         [("subscription.started", A), *ENTITLED]),
    Case("portal: renewed by a PATCH", [_portal_created],
         lambda s: portal.update(s, _sub(s), {"expires_at": LATER + timedelta(days=30)}, NOW),
         [("subscription.renewed", A)], {"expires_at": "2026-12-31T12:00:00Z"}),
    Case("portal: the expiry job's write", [_portal_created],
         lambda s: portal.record(s, _sub(s), {"status": "expired"}, "PORTAL_EXPIRED",
                                 LATER + timedelta(minutes=1)),
         [("subscription.expired", A), *LOST]),
    Case("credits.granted (the ledger's one-line call)", [],
         lambda s: notify.emit(s, type="credits.granted", account_id=A,
                               data={"entry": {"amount": 500}}, now=NOW),
         [("credits.granted", A)]),
]


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    with emitting_sessions(database_url) as made:
        yield made


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_change_emits_its_events(sessions: sessionmaker[Session], case: Case) -> None:
    """From the state the steps build, the change emits exactly the expected events, each
    account's sequence running on without a gap, every event carrying the resource after."""
    for step in case.before:
        with transaction(sessions) as session:
            step(session)
    with transaction(sessions) as session:
        start = top(session)
        counted = {account: session.scalar(
            select(Event.sequence).where(Event.account_id == account)
            .order_by(Event.sequence.desc()).limit(1)) or 0 for account in (A, B)}
    with transaction(sessions) as session:
        case.change(session)
    with transaction(sessions) as session:
        found = events_after(session, start)
    got = [(e.type, e.account_id, e.data["entitlement"]["entitlement"])
           if e.type.startswith("entitlement.") else (e.type, e.account_id) for e in found]
    assert got == case.expected
    for event in found:
        if event.account_id is None:
            assert event.sequence is None
        else:
            counted[event.account_id] += 1
            assert event.sequence == counted[event.account_id]
        if event.type.startswith("subscription."):
            assert event.data["subscription"]["id"] == event.subscription_id
            for name, value in case.previous.items():
                assert event.data["previous"][name] == value


def test_the_table_covers_every_type() -> None:
    """Every type of the contract appears in the table (credits.* through the generic emit and
    `test_events_writer`): a new type cannot be added without its case."""
    tabled = {expected[0] for case in CASES for expected in case.expected}
    assert set(EVENT_TYPES) - tabled == {"credits.debited", "credits.adjusted",
                                          "credits.clawed_back"}
