"""`ingest_many` (the worker's bulk path) against `ingest` one outcome at a time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.db import make_engine, make_sessionmaker, transaction
from reconcile.ingest import ingest, to_state
from reconcile.ingest_many import ingest_many
from reconcile.models import Account, Subscription, SubscriptionEvent
from reconcile.outcomes import Normalised, RefundSeen
from reconcile.state import Channel, Observation, Stamp, SubscriptionState

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _renewal(store_id: str, minutes: int, account: str, status: str = "ACTIVE") -> Normalised:
    stamp = Stamp(NOW - timedelta(minutes=minutes), f"n-{store_id}-{minutes}")
    return Normalised(kind="DID_RENEW", subscription=Observation(
        channel=Channel.APPLE, store_id=store_id, stamp=stamp, kind="DID_RENEW",
        environment="sandbox",
        fields={"status": status.lower(), "product_id": "monthly", "auto_renew": True,
                "expires_at": NOW + timedelta(days=30 - minutes), "account_id": account},
        detail={"transaction_id": f"t{minutes}"},
    ))


def _outcomes(prefix: str) -> list[tuple[int, Normalised]]:
    """Renewals of a known and of a new subscription, out of order, and a refund beside one."""
    return [
        (1, _renewal(f"{prefix}-known", 5, f"{prefix}-acct-1")),
        (2, _renewal(f"{prefix}-known", 9, f"{prefix}-acct-1", "EXPIRED")),
        (3, _renewal(f"{prefix}-new", 1, f"{prefix}-acct-2")),
        (4, _renewal(f"{prefix}-new", 3, f"{prefix}-acct-2", "GRACE_PERIOD")),
        (5, Normalised(kind="REFUND", refund=RefundSeen(
            channel=Channel.APPLE, refund_key=f"{prefix}-r", store_id=f"{prefix}-refunded",
            refunded_at=NOW, stamp=Stamp(NOW, "r"),
            subscription_store_id=f"{prefix}-refunded"))),
        (6, _renewal(f"{prefix}-refunded", 2, f"{prefix}-acct-3")),
    ]


def _picture(
    session: Session, store_id: str
) -> tuple[SubscriptionState, int, list[tuple[Any, ...]]]:
    row = session.scalars(select(Subscription).where(Subscription.store_id == store_id)).one()
    events = session.execute(
        select(SubscriptionEvent.kind, SubscriptionEvent.applied, SubscriptionEvent.inbox_id,
               SubscriptionEvent.store_time, SubscriptionEvent.detail)
        .where(SubscriptionEvent.subscription_id == row.id).order_by(SubscriptionEvent.id)
    ).all()
    return to_state(row), row.version, [tuple(event) for event in events]


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_bulk_path_leaves_what_ingest_leaves(sessions: sessionmaker[Session]) -> None:
    """Renewals applied by `ingest_many` leave the same states, events and accounts as
    `ingest` applying them one by one, and whatever else it declines goes to `ingest`."""
    for prefix in ("bulk", "single"):
        with transaction(sessions) as session:
            ingest(session, _renewal(f"{prefix}-known", 20, f"{prefix}-acct-1"),
                   source="apple", now=NOW, inbox_id=0)
            ingest(session, _renewal(f"{prefix}-refunded", 20, f"{prefix}-acct-3"),
                   source="apple", now=NOW, inbox_id=0)
    with transaction(sessions) as session:
        items = _outcomes("bulk")
        done = ingest_many(session, items, source="apple", now=NOW)
        assert done == {1, 2, 3, 4}
        for inbox_id, outcome in items:
            if inbox_id not in done:
                ingest(session, outcome, source="apple", now=NOW, inbox_id=inbox_id)
    with transaction(sessions) as session:
        for inbox_id, outcome in _outcomes("single"):
            ingest(session, outcome, source="apple", now=NOW, inbox_id=inbox_id)
    with sessions() as session:
        for name in ("known", "new", "refunded"):
            bulk_state, bulk_version, bulk_events = _picture(session, f"bulk-{name}")
            single_state, single_version, single_events = _picture(session, f"single-{name}")
            assert bulk_state.status == single_state.status
            assert bulk_version == single_version
            assert bulk_state == _renamed(single_state)
            assert bulk_events == [_renamed_event(event) for event in single_events]
        accounts = set(session.scalars(select(Account.account_id)))
        assert {"bulk-acct-1", "bulk-acct-2", "bulk-acct-3"} <= accounts


def _renamed(state: SubscriptionState) -> SubscriptionState:
    account = state.account_id.replace("single", "bulk") if state.account_id else None
    clock = {name: Stamp(stamp.time, stamp.tiebreak.replace("single", "bulk"))
             for name, stamp in state.clock.items()}
    return SubscriptionState(**{**state.__dict__, "account_id": account, "clock": clock})


def _renamed_event(event: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*event[:4], _renamed_values(event[4]))


def _renamed_values(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value.replace("single", "bulk") if isinstance(value, str)
            else _renamed_values(value) if isinstance(value, dict) else value
            for key, value in values.items()}
