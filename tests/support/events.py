"""Building blocks of the outbound-event tests: sessions that emit, observations, the feed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.catalog.file import load_catalog
from reconcile.db import make_engine, make_sessionmaker
from reconcile.ingest import apply_observation
from reconcile.notify import service as notify
from reconcile.notify.models import Event
from reconcile.state import Channel, Observation, Stamp
from tests.support.purchases import CATALOG

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MONTHLY = "com.example.phone.monthly"  # grants pro and calling
LITE = "com.example.phone.monthly.lite"  # grants calling
NUMBER_LOCK = "com.example.phone.numberlock"  # a one-time purchase granting number_lock


def active(account: str | None = "acct-a", **fields: Any) -> dict[str, Any]:
    """The fields of an active, renewing monthly plan of `account`."""
    values: dict[str, Any] = {
        "status": "active", "product_id": MONTHLY, "renewal_product_id": MONTHLY,
        "auto_renew": True, "expires_at": NOW + timedelta(days=30), "account_id": account,
        "grace_expires_at": None,
    }
    values.update(fields)
    return values


@contextmanager
def emitting_sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions over `database_url` that compute entitlements with the test catalog."""
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    notify.configure(sessions, load_catalog(CATALOG))
    try:
        yield sessions
    finally:
        engine.dispose()


def observe(session: Session, store_id: str, minute: int, fields: dict[str, Any], *,
            channel: Channel = Channel.APPLE, now: datetime = NOW) -> str:
    """Apply what a store said `minute` minutes after NOW - 1 day; returns the subscription."""
    stamp = Stamp(NOW - timedelta(days=1) + timedelta(minutes=minute), f"{store_id}:{minute}")
    applied = apply_observation(session, Observation(
        channel=channel, store_id=store_id, stamp=stamp, kind="TEST", environment="sandbox",
        fields=fields), source="test", now=now)
    assert applied.subscription_id is not None
    return applied.subscription_id


def top(session: Session) -> int:
    """The newest feed position."""
    return session.scalar(select(Event.position).order_by(Event.position.desc()).limit(1)) or 0


def events_after(session: Session, position: int) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.position > position)
                                .order_by(Event.position)))


def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(event.type, event.account_id) for event in events]
