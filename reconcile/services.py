"""The service's parts, built once from `Settings`; tests build their own from test settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reconcile.cancellation import Canceller, default_cancellers
from reconcile.channels.apple import AppleProcessor
from reconcile.channels.apple_api import AppStoreApi
from reconcile.channels.portal import PortalExpiryJob
from reconcile.config import Settings
from reconcile.consumption import ConsumptionJob
from reconcile.db import make_engine, make_sessionmaker
from reconcile.metrics import Metrics
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
    apple_api: AppStoreApi | None = None
    processors: dict[str, Processor] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    # What a cancellation or plan change means on each channel (reconcile.cancellation).
    cancellers: dict[str, Canceller] = field(default_factory=dict)

    def worker(self) -> Worker:
        return Worker(self.jobs, clock=self.clock, poll_seconds=self.settings.worker_poll_seconds)

    def close(self) -> None:
        self.engine.dispose()


def build_services(settings: Settings, *, clock: Clock = utcnow) -> Services:
    """Wire every part the settings enable."""
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    metrics = Metrics(sessions, clock, settings.google_ack_watchdog_hours)
    services = Services(
        settings=settings, engine=engine, sessions=sessions, clock=clock, metrics=metrics,
        apple=build_apple_verifier(settings), apple_api=AppStoreApi.from_settings(settings),
        cancellers=default_cancellers(settings.google_package_name),
    )
    if services.apple is not None:
        services.processors["apple"] = AppleProcessor(services.apple)
    services.jobs.append(
        InboxJob(
            sessions=sessions,
            processors=services.processors,
            owner=worker_id(),
            batch_size=settings.worker_batch_size,
            lease=timedelta(seconds=settings.worker_lease_seconds),
            max_attempts=settings.worker_max_attempts,
        )
    )
    services.jobs.append(
        ConsumptionJob(sessions=sessions, api=services.apple_api, owner=worker_id(),
                       max_attempts=settings.worker_max_attempts)
    )
    services.jobs.append(PortalExpiryJob(sessions=sessions))
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
