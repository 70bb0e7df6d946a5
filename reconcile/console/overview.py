"""The overview's figures: what the service holds and whether its queues keep up.

Each is one query on an index: buckets of time are cut in SQL (per hour, per day) over the
window shown; queues are counted on partial indexes that hold only the waiting rows, and a
count stops at COUNT_CAP, so that a backlog makes the page no slower than the cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, literal, select
from sqlalchemy.orm import Session

from reconcile.models import (
    Acknowledgement,
    InboxEntry,
    OutboxEntry,
    ReconciliationRun,
    Refund,
    Subscription,
)
from reconcile.notify.models import Delivery, WebhookEndpoint

HOURS = 48
WEEKS = 12
STATUSES = ("active", "grace_period", "billing_retry", "paused", "pending", "expired", "revoked")
CHANNELS = ("apple", "google", "portal")
ACK_STALE = timedelta(hours=24)
COUNT_CAP = 10_000


@dataclass
class Overview:
    counts: dict[str, dict[str, int]]
    per_hour: list[tuple[datetime, int]]
    lag_seconds: dict[str, float]
    pending: int
    failed: int
    refunds_per_week: list[tuple[datetime, int]]
    unacknowledged: int
    unacknowledged_stale: int
    apple_actions: int
    apple_action_rows: list[OutboxEntry] = field(default_factory=list)
    latest_run: ReconciliationRun | None = None
    # Webhook endpoints with deliveries failed for good or still retrying, by endpoint URL.
    failing_deliveries: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {c: sum(self.counts.get(c, {}).values()) for c in CHANNELS}


def _bucket(session: Session, column: Any, unit: str) -> ColumnElement[str]:
    """`column` cut to its hour ('2026-11-01 12') or day ('2026-11-01'), in UTC, as text."""
    if session.get_bind().dialect.name == "postgresql":
        pattern = "YYYY-MM-DD HH24" if unit == "hour" else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", column), pattern)
    return func.strftime("%Y-%m-%d %H" if unit == "hour" else "%Y-%m-%d", column)


def overview(session: Session, now: datetime) -> Overview:
    counts: dict[str, dict[str, int]] = {}
    for channel, status, count in session.execute(
        select(Subscription.channel, Subscription.status, func.count())
        .group_by(Subscription.channel, Subscription.status)
    ):
        counts.setdefault(channel, {})[status] = count
    return Overview(
        counts=counts,
        per_hour=_per_hour(session, now),
        lag_seconds=_lag(session, now),
        pending=_inbox_count(session, "pending"),
        failed=_inbox_count(session, "failed"),
        refunds_per_week=_refunds_per_week(session, now),
        unacknowledged=_count(session, select(Acknowledgement.store_id)
                              .where(Acknowledgement.acknowledged_at.is_(None))),
        unacknowledged_stale=_count(session, select(Acknowledgement.store_id).where(
            Acknowledgement.acknowledged_at.is_(None),
            Acknowledgement.first_seen_at < now - ACK_STALE)),
        apple_actions=_count(session, select(OutboxEntry.id).where(*_apple_waiting())),
        apple_action_rows=list(session.scalars(
            select(OutboxEntry).where(*_apple_waiting())
            .order_by(OutboxEntry.id.desc()).limit(5))),
        latest_run=session.scalars(
            select(ReconciliationRun)
            .order_by(ReconciliationRun.started_at.desc(), ReconciliationRun.id.desc())
            .limit(1)).first(),
        failing_deliveries=_failing_deliveries(session),
    )


def _failing_deliveries(session: Session) -> list[tuple[str, int, int]]:
    """(endpoint URL, deliveries failed for good, deliveries retrying after a failed attempt)."""
    failing = func.sum(case((Delivery.status == "failed", 1), else_=0))
    retrying = func.sum(case(((Delivery.status == "pending") & (Delivery.attempts > 0), 1),
                             else_=0))
    rows = session.execute(
        select(WebhookEndpoint.url, failing, retrying)
        .join(Delivery, Delivery.endpoint_id == WebhookEndpoint.id)
        .where(Delivery.status.in_(("failed", "pending")))
        .group_by(WebhookEndpoint.url).order_by(WebhookEndpoint.url))
    return [(url, int(f or 0), int(r or 0)) for url, f, r in rows if f or r]


def _apple_waiting() -> tuple[ColumnElement[bool], ...]:
    return (OutboxEntry.channel == "apple", OutboxEntry.state == "customer_action_required",
            OutboxEntry.kind.in_(("cancel", "change_plan")))


def _count(session: Session, rows: Select[Any]) -> int:
    """How many rows `rows` selects, counting no further than COUNT_CAP."""
    return session.scalar(select(func.count()).select_from(
        rows.limit(COUNT_CAP).subquery())) or 0


def _inbox_count(session: Session, status: str) -> int:
    # The literal status, as the partial indexes' condition reads, so the planner uses them.
    return _count(session, select(InboxEntry.id).where(InboxEntry.status == literal(
        status, literal_execute=True)))


def _per_hour(session: Session, now: datetime) -> list[tuple[datetime, int]]:
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=HOURS - 1)
    hour = _bucket(session, InboxEntry.received_at, "hour")
    found = dict(session.execute(
        select(hour, func.count()).where(InboxEntry.received_at >= start).group_by(hour)
    ).tuples().all())
    hours = [start + timedelta(hours=n) for n in range(HOURS)]
    return [(h, int(found.get(h.strftime("%Y-%m-%d %H"), 0))) for h in hours]


def _lag(session: Session, now: datetime) -> dict[str, float]:
    """Per channel, the age of the oldest waiting notification (one index probe each)."""
    lag = {}
    for channel in CHANNELS:
        oldest = session.scalar(
            select(func.min(InboxEntry.received_at))
            .where(InboxEntry.status == literal("pending", literal_execute=True),
                   InboxEntry.channel == channel))
        if oldest is not None:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            lag[channel] = max(0.0, (now - oldest).total_seconds())
    return lag


def _refunds_per_week(session: Session, now: datetime) -> list[tuple[datetime, int]]:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    this_week = today - timedelta(days=today.weekday())
    start = this_week - timedelta(weeks=WEEKS - 1)
    day = _bucket(session, Refund.refunded_at, "day")
    weeks = {start + timedelta(weeks=n): 0 for n in range(WEEKS)}
    for text, count in session.execute(
        select(day, func.count()).where(Refund.refunded_at >= start).group_by(day)
    ):
        date = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        week = date - timedelta(days=date.weekday())
        if week in weeks:
            weeks[week] += count
    return sorted(weeks.items())
