"""The service's parts, built once from `Settings`; tests build their own from test settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reconcile.channels.apple import AppleProcessor
from reconcile.channels.apple_api import AppStoreApi
from reconcile.channels.apple_truth import AppleTruth
from reconcile.config import Settings
from reconcile.db import make_engine, make_sessionmaker
from reconcile.metrics import Metrics
from reconcile.reconciliation.job import ReconcileJob
from reconcile.reconciliation.runner import Reconciler
from reconcile.reconciliation.sources import TruthSource
from reconcile.worker import Clock, InboxJob, Job, Processor, Worker, utcnow, worker_id
from webhooks.apple import AppleVerifier, load_certificate


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    metrics: Metrics
    apple: AppleVerifier | None
    reconciler: Reconciler
    apple_api: AppStoreApi | None = None
    processors: dict[str, Processor] = field(default_factory=dict)
    truth: dict[str, TruthSource] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)

    def worker(self) -> Worker:
        return Worker(self.jobs, clock=self.clock, poll_seconds=self.settings.worker_poll_seconds)

    def close(self) -> None:
        self.engine.dispose()


def build_services(
    settings: Settings, *, clock: Clock = utcnow, sleep: Callable[[float], None] = time.sleep
) -> Services:
    """Wire every part the settings enable; `sleep` is what store clients back off with."""
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    metrics = Metrics(sessions, clock, settings.google_ack_watchdog_hours)
    owner = worker_id()
    truth: dict[str, TruthSource] = {}
    reconciler = Reconciler(
        sessions, truth, owner=owner, concurrency=settings.reconcile_concurrency,
        page_size=settings.reconcile_page_size,
    )
    services = Services(
        settings=settings, engine=engine, sessions=sessions, clock=clock, metrics=metrics,
        apple=build_apple_verifier(settings), reconciler=reconciler, truth=truth,
        apple_api=AppStoreApi.from_settings(settings, sleep=sleep),
    )
    if services.apple is not None:
        services.processors["apple"] = AppleProcessor(services.apple)
        if services.apple_api is not None:
            truth["apple"] = AppleTruth(services.apple_api, services.apple,
                                        history_days=settings.reconcile_history_days)
    services.jobs.append(
        InboxJob(
            sessions=sessions,
            processors=services.processors,
            owner=owner,
            batch_size=settings.worker_batch_size,
            lease=timedelta(seconds=settings.worker_lease_seconds),
            max_attempts=settings.worker_max_attempts,
        )
    )
    interval = settings.reconcile_interval_minutes
    services.jobs.append(
        ReconcileJob(reconciler, timedelta(minutes=interval) if interval > 0 else None)
    )
    return services


def build_apple_verifier(settings: Settings) -> AppleVerifier | None:
    if not settings.apple_bundle_id:
        return None
    return AppleVerifier(
        root_certificates=[load_certificate(path) for path in settings.apple_root_certs],
        bundle_id=settings.apple_bundle_id,
        app_apple_id=settings.apple_app_apple_id,
        environments=settings.apple_environments,
        online_checks=settings.apple_online_checks,
    )
