"""Prometheus metrics. Queue depths and totals are read from the database at scrape time, so
every process behind a load balancer reports the same truth; edge counters are per process.
While the database cannot be reached, a scrape still answers: the process's own metrics and
`reconcile_database_up 0`, without the gauges read from the database."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.catalog.file import Catalog
from reconcile.credits.metrics import CreditsCollector
from reconcile.models import (
    Acknowledgement,
    Cursor,
    Discrepancy,
    InboxEntry,
    OutboxEntry,
    Purchase,
    ReconciliationRun,
    Refund,
    Subscription,
)
from reconcile.notify.metrics import EventsCollector
from reconcile.outage import DatabaseWatch, is_unavailable
from reconcile.reconciliation.runs import COMPLETED_CURSOR


class Metrics:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        unacknowledged_age_hours: float = 24.0,
        catalog: Catalog | None = None,
        database: DatabaseWatch | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU, memory, open files), python_gc_*, python_info: this process's own.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        # Under `serve --workers N` the children count in files of one folder (prometheus
        # multiprocess mode), so that whichever child answers a scrape reports all of them.
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        counters = None if shared else self.registry
        if shared:
            MultiProcessCollector(self.registry, path=shared)  # type: ignore[no-untyped-call]
        self.received = Counter(
            "reconcile_notifications_received", "Notifications accepted at the webhook.",
            ["channel", "type"], registry=counters,
        )
        self.rejected = Counter(
            "reconcile_notifications_rejected", "Notifications refused at the webhook.",
            ["channel", "reason"], registry=counters,
        )
        self.registry.register(_DatabaseCollector(sessions, clock, unacknowledged_age_hours,
                                                  database or DatabaseWatch()))
        # The domains' own gauges read the database too: while it is away they are left out
        # (reconcile_database_up says why) and /metrics keeps answering.
        domains: list[Collector] = [EventsCollector(sessions, clock), CreditsCollector(sessions)]
        if catalog is not None and catalog.products:
            domains.append(_UnknownProducts(sessions, catalog))
        for domain in domains:
            self.registry.register(_UnlessDatabaseAway(domain))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DatabaseCollector(Collector):
    def __init__(
        self, sessions: sessionmaker[Session], clock: Callable[[], datetime], ack_hours: float,
        database: DatabaseWatch,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.ack_hours = ack_hours
        self.database = database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("reconcile_database_up",
                               "1 when this process's last look at the database answered, else 0.")
        started = self.database.now()
        try:
            gauges = self._gauges(self.clock())
        except Exception as error:
            if not is_unavailable(error):
                raise
            self.database.failed(error)
            up.add_metric([], 0)
            yield up
            return
        self.database.succeeded(started)
        up.add_metric([], 1)
        yield up
        yield from gauges

    def _gauges(self, now: datetime) -> list[Metric]:
        by_status = GaugeMetricFamily(
            "reconcile_notifications", "Recorded notifications by channel, type and status "
            "(processed, failed, pending, rejected).", labels=["channel", "type", "status"],
        )
        lag = GaugeMetricFamily(
            "reconcile_processing_lag_seconds",
            "Age of the oldest notification not yet processed.", labels=["channel"],
        )
        refunds = GaugeMetricFamily(
            "reconcile_store_refunds", "Refunds the stores made (not reversed).",
            labels=["channel"],
        )
        amounts = GaugeMetricFamily(
            "reconcile_store_refunds_amount",
            "Sum refunded by the stores (not reversed), in the currency's units, where known.",
            labels=["channel", "currency"],
        )
        requests = GaugeMetricFamily(
            "reconcile_refund_requests",
            "Apple refund requests (CONSUMPTION_REQUEST) by our answer's state and Apple's "
            "outcome (none until Apple decides).", labels=["state", "outcome"],
        )
        cancellations = GaugeMetricFamily(
            "reconcile_cancellations",
            "Cancellations and plan changes asked of the channels, by kind, channel and state.",
            labels=["kind", "channel", "state"],
        )
        unacked = GaugeMetricFamily(
            "reconcile_google_unacknowledged",
            "Google purchases still unacknowledged past the watchdog age.",
        )
        with self.sessions() as session:
            rows = session.execute(
                select(InboxEntry.channel, InboxEntry.kind, InboxEntry.status, func.count())
                .group_by(InboxEntry.channel, InboxEntry.kind, InboxEntry.status)
            )
            for channel, kind, status, count in rows:
                by_status.add_metric([channel, kind.split("/")[0], status], count)
            for channel, oldest in session.execute(
                select(InboxEntry.channel, func.min(InboxEntry.received_at))
                .where(InboxEntry.status == "pending").group_by(InboxEntry.channel)
            ):
                if oldest is not None:
                    lag.add_metric([channel], _seconds(now, oldest))
            for channel, count in session.execute(
                select(Refund.channel, func.count()).where(Refund.reversed_at.is_(None))
                .group_by(Refund.channel)
            ):
                refunds.add_metric([channel], count)
            totals: dict[tuple[str, str], Decimal] = {}
            for channel, currency, amount in session.execute(
                select(Refund.channel, Refund.currency, Refund.amount)
                .where(Refund.reversed_at.is_(None), Refund.amount.is_not(None))
            ):
                key = (channel, currency or "")
                totals[key] = totals.get(key, Decimal(0)) + _decimal(amount)
            for (channel, currency), total in sorted(totals.items()):
                amounts.add_metric([channel, currency], float(total))
            for kind, channel, state, outcome, count in session.execute(
                select(OutboxEntry.kind, OutboxEntry.channel, OutboxEntry.state,
                       OutboxEntry.outcome, func.count())
                .where(OutboxEntry.kind.in_(("consumption", "cancel", "change_plan")))
                .group_by(OutboxEntry.kind, OutboxEntry.channel, OutboxEntry.state,
                          OutboxEntry.outcome)
            ):
                if kind == "consumption":
                    requests.add_metric([state, outcome or "none"], count)
                else:
                    cancellations.add_metric([kind, channel, state], count)
            cutoff = now - timedelta(hours=self.ack_hours)
            stale = session.scalar(
                select(func.count()).select_from(Acknowledgement).where(
                    Acknowledgement.acknowledged_at.is_(None),
                    Acknowledgement.first_seen_at < cutoff,
                )
            )
            unacked.add_metric([], stale or 0)
            reconciliation = list(_reconciliation(session, now))
        return [by_status, lag, refunds, amounts, requests, cancellations, unacked,
                *reconciliation]


class _UnlessDatabaseAway(Collector):
    """`collector`'s metrics, or none while the database is unreachable."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        try:
            metrics = list(self.collector.collect())
        except Exception as error:
            if not is_unavailable(error):
                raise
            return
        yield from metrics


class _UnknownProducts(Collector):
    """Stored subscriptions and purchases whose product the catalog does not name: they grant
    nothing, which is right for a retired product and a bug for a new one."""

    def __init__(self, sessions: sessionmaker[Session], catalog: Catalog) -> None:
        self.sessions = sessions
        self.catalog = catalog

    def collect(self) -> Iterator[Metric]:
        unknown = GaugeMetricFamily(
            "reconcile_unknown_products",
            "Subscriptions and one-time purchases of products the catalog does not name.",
            labels=["channel", "kind", "product_id"],
        )
        with self.sessions() as session:
            for kind, model in (("subscription", Subscription), ("purchase", Purchase)):
                for channel, product, count in session.execute(
                    select(model.channel, model.product_id, func.count())
                    .group_by(model.channel, model.product_id)
                ):
                    if product and not self.catalog.knows(product):
                        unknown.add_metric([channel, kind, product], count)
        yield unknown


def _reconciliation(session: Session, now: datetime) -> Iterator[Metric]:
    """How long since a reconciliation last completed, and what the newest finished one found."""
    runs = GaugeMetricFamily("reconcile_reconciliation_runs", "Reconciliation runs by status.",
                             labels=["status"])
    for status, count in session.execute(
        select(ReconciliationRun.status, func.count()).group_by(ReconciliationRun.status)
    ):
        runs.add_metric([status], count)
    age = GaugeMetricFamily(
        "reconcile_reconciliation_age_seconds",
        "Per channel, time since a reconciliation last checked all of its subscriptions without "
        "a store fault (runs narrowed to an account or store id do not count).",
        labels=["channel"],
    )
    for name, value in session.execute(
        select(Cursor.name, Cursor.value).where(Cursor.name.startswith(COMPLETED_CURSOR))
        .order_by(Cursor.name)
    ):
        age.add_metric([name.removeprefix(COMPLETED_CURSOR)],
                       _seconds(now, datetime.fromisoformat(value)))
    found = GaugeMetricFamily(
        "reconcile_reconciliation_discrepancies",
        "Discrepancies the newest finished reconciliation found, by kind and repaired.",
        labels=["kind", "repaired"],
    )
    newest = session.scalars(
        select(ReconciliationRun.id).where(ReconciliationRun.finished_at.is_not(None))
        .order_by(ReconciliationRun.finished_at.desc()).limit(1)
    ).first()
    if newest is not None:
        for kind, repaired, count in session.execute(
            select(Discrepancy.kind, Discrepancy.repaired, func.count())
            .where(Discrepancy.run_id == newest)
            .group_by(Discrepancy.kind, Discrepancy.repaired)
        ):
            found.add_metric([kind, "true" if repaired else "false"], count)
    yield from (runs, age, found)


def _seconds(now: datetime, then: datetime) -> float:
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


def _decimal(amount: str) -> Decimal:
    try:
        return Decimal(amount)
    except InvalidOperation:
        return Decimal(0)
