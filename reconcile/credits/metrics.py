"""The ledger in /metrics: accounts below zero (a store refunded credits already used)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from reconcile.credits.service import below_zero


class CreditsCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        owing = GaugeMetricFamily(
            "reconcile_credit_accounts_below_zero",
            "Accounts whose credit balance is below zero (credits clawed back after use).",
        )
        with self.sessions() as session:
            owing.add_metric([], below_zero(session))
        yield owing
