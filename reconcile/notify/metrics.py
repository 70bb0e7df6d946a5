"""What `/metrics` shows of outbound events, read from the database at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.notify.models import Delivery, Event


class EventsCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self.sessions = sessions
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        events = CounterMetricFamily("reconcile_events", "Events recorded, by type.",
                                     labels=["type"])
        deliveries = GaugeMetricFamily(
            "reconcile_webhook_deliveries",
            "Webhook deliveries by endpoint and outcome (pending, delivered, failed).",
            labels=["endpoint", "status"],
        )
        oldest = GaugeMetricFamily(
            "reconcile_webhook_oldest_pending_seconds",
            "Age of the oldest event not yet delivered to each endpoint.", labels=["endpoint"],
        )
        with self.sessions() as session:
            for kind, count in session.execute(
                select(Event.type, func.count()).group_by(Event.type)
            ):
                events.add_metric([kind], count)
            for endpoint, status, count in session.execute(
                select(Delivery.endpoint_id, Delivery.status, func.count())
                .group_by(Delivery.endpoint_id, Delivery.status)
            ):
                deliveries.add_metric([endpoint, status], count)
            for endpoint, created in session.execute(
                select(Delivery.endpoint_id, func.min(Delivery.created_at))
                .where(Delivery.status == "pending").group_by(Delivery.endpoint_id)
            ):
                if created is not None:
                    if created.tzinfo is None:
                        created = created.replace(tzinfo=UTC)
                    oldest.add_metric([endpoint], max(0.0, (now - created).total_seconds()))
        yield from (events, deliveries, oldest)
