"""The service's parts, built once from `Settings`; tests build their own from test settings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from reconcile.acknowledgements import AcknowledgementJob, AcknowledgementWatchdog
from reconcile.budget.limiter import SharedRateLimiter
from reconcile.cancellation import Canceller, default_cancellers
from reconcile.catalog.file import Catalog, load_catalog
from reconcile.catalog.reads import EntitlementReads
from reconcile.channels.apple import AppleProcessor
from reconcile.channels.apple_api import AppStoreApi
from reconcile.channels.apple_truth import AppleTruth
from reconcile.channels.google import GoogleProcessor
from reconcile.channels.google_play import PlayClient, PlayPermanentError
from reconcile.channels.google_truth import GoogleTruth
from reconcile.channels.portal import PortalExpiryJob
from reconcile.channels.portal_truth import PortalTruth
from reconcile.config import Settings
from reconcile.consumption import ConsumptionJob
from reconcile.credits.check import LedgerCheck
from reconcile.db import make_engine, make_read_engine, make_sessionmaker
from reconcile.metrics import Metrics
from reconcile.notify import service as notify
from reconcile.notify.delivery import DeliveryJob
from reconcile.notify.sweep import EntitlementSweep
from reconcile.outage import DatabaseWatch
from reconcile.outbox import GoogleCancelJob
from reconcile.ratelimit import CallLimiter, RateLimiter
from reconcile.reconciliation.job import ReconcileJob
from reconcile.reconciliation.runner import Reconciler
from reconcile.reconciliation.sources import TruthSource
from reconcile.worker import Clock, InboxJob, Job, Processor, Worker, utcnow, worker_id
from webhooks.apple import AppleVerifier, load_certificate
from webhooks.google import PushAuthenticator
from webhooks.intake import Intake

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    metrics: Metrics
    apple: AppleVerifier | None
    reconciler: Reconciler
    catalog: Catalog = field(default_factory=Catalog)
    # Reads on the business's hot path (entitlements): never behind SQLite's write lock.
    reader: Engine | None = None
    apple_api: AppStoreApi | None = None
    google_push: PushAuthenticator | None = None
    play: PlayClient | None = None
    processors: dict[str, Processor] = field(default_factory=dict)
    truth: dict[str, TruthSource] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    # What a cancellation or plan change means on each channel (reconcile.cancellation).
    cancellers: dict[str, Canceller] = field(default_factory=dict)
    intake: Intake = field(init=False)
    # Set when the intake records work, so that this process's worker starts on it at once.
    new_work: threading.Event = field(default_factory=threading.Event)
    # Whether this process reaches its database; the one place an outage is logged.
    database: DatabaseWatch = field(default_factory=DatabaseWatch)
    # The entitlement read of the business's hot path (reconcile/catalog/lane.py).
    entitlement_reads: EntitlementReads = field(init=False)

    def __post_init__(self) -> None:
        self.intake = Intake(self.sessions, on_recorded=self.new_work.set,
                             database=self.database)
        self.entitlement_reads = EntitlementReads(self.reader or self.engine, self.catalog,
                                                  self.clock)

    def worker(self) -> Worker:
        """This process's background worker, with the jobs `RECONCILE_WORKER_JOBS` picks."""
        jobs = [job for job in self.jobs if self.settings.runs_job(job.name)]
        missing = sorted({name for name in self.settings.worker_jobs if not name.startswith("-")}
                         - {job.name for job in jobs})
        if missing:
            log.warning("RECONCILE_WORKER_JOBS names %s, which this configuration does not run "
                        "(its channel or store API is not configured)", ", ".join(missing))
        return Worker(jobs, clock=self.clock, poll_seconds=self.settings.worker_poll_seconds,
                      wake=self.new_work, database=self.database)

    def close(self) -> None:
        self.entitlement_reads.close()
        self.reconciler.close()
        self.intake.close()
        google = self.processors.get("google")
        if isinstance(google, GoogleProcessor):
            google.close()
        for job in self.jobs:
            if isinstance(job, AcknowledgementJob | DeliveryJob):
                job.close()
        if self.play is not None:
            self.play.close()
        if self.apple_api is not None:
            self.apple_api.close()
        if self.reader is not None and self.reader is not self.engine:
            self.reader.dispose()
        self.engine.dispose()


def build_services(
    settings: Settings, *, clock: Clock = utcnow, sleep: Callable[[float], None] = time.sleep
) -> Services:
    """Wire every part the settings enable; `sleep` is what store clients back off with."""
    catalog = load_catalog(settings.catalog_file) if settings.catalog_file else Catalog()
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    reader = make_read_engine(settings.database_url, engine)
    database = DatabaseWatch()
    metrics = Metrics(sessions, clock, settings.google_ack_watchdog_hours, catalog,
                      database=database)
    owner = worker_id()
    truth: dict[str, TruthSource] = {"portal": PortalTruth()}
    reconciler = Reconciler(
        sessions, truth, owner=owner, concurrency=settings.reconcile_concurrency,
        page_size=settings.reconcile_page_size,
        checks=[LedgerCheck(sessions, catalog)], reads=make_sessionmaker(reader),
    )
    services = Services(
        settings=settings, engine=engine, sessions=sessions, clock=clock, metrics=metrics,
        apple=build_apple_verifier(settings), reconciler=reconciler, truth=truth,
        catalog=catalog, reader=reader,
        apple_api=AppStoreApi.from_settings(settings, sleep=sleep,
                                            limiter=apple_call_budget(settings, sessions)),
        google_push=build_push_authenticator(settings),
        play=build_play_client(settings, limiter=google_call_budget(settings, sessions)),
        cancellers=default_cancellers(settings.google_package_name), database=database,
    )
    if services.apple is not None:
        services.processors["apple"] = AppleProcessor(services.apple)
        if services.apple_api is not None:
            truth["apple"] = AppleTruth(services.apple_api, services.apple,
                                        history_days=settings.reconcile_history_days)
    if services.play is not None and settings.google_package_name:
        services.processors["google"] = GoogleProcessor(
            services.play, settings.google_package_name,
            # Credit packs are used up, so Google must see them consumed, not only acknowledged.
            consumables=[*settings.google_consumable_products, *catalog.credit_products],
            concurrency=settings.google_read_concurrency,
        )
        truth["google"] = GoogleTruth(
            services.play, settings.google_package_name, catalog,
            consumables=[*settings.google_consumable_products, *catalog.credit_products])
    services.jobs.append(
        InboxJob(
            sessions=sessions,
            processors=services.processors,
            owner=owner,
            batch_size=settings.worker_batch_size,
            lease=timedelta(seconds=settings.worker_lease_seconds),
            max_attempts=settings.worker_max_attempts,
            catalog=catalog,
        )
    )
    if services.play is not None:
        # After the inbox job in each round: acknowledgements follow the stored entitlement.
        services.jobs.append(AcknowledgementJob(
            sessions, services.play, batch_size=settings.worker_batch_size,
            concurrency=settings.google_read_concurrency))
        services.jobs.append(
            GoogleCancelJob(sessions=sessions, play=services.play, owner=worker_id(),
                            is_permanent=lambda error: isinstance(error, PlayPermanentError),
                            max_attempts=settings.worker_max_attempts)
        )
    if settings.google_package_name:
        services.jobs.append(AcknowledgementWatchdog(
            sessions, age=timedelta(hours=settings.google_ack_watchdog_hours)))
    services.jobs.append(
        ConsumptionJob(sessions=sessions, api=services.apple_api, owner=worker_id(),
                       max_attempts=settings.worker_max_attempts)
    )
    services.jobs.append(PortalExpiryJob(sessions=sessions))
    # Outbound events: the commit of every writer records them (see reconcile.notify.service).
    notify.configure(sessions, catalog, services.new_work)
    services.jobs.append(EntitlementSweep(
        sessions, timedelta(seconds=settings.entitlement_sweep_seconds)))
    services.jobs.append(DeliveryJob(
        sessions, owner=worker_id(), retry_seconds=settings.webhook_retry_seconds,
        timeout=settings.webhook_timeout_seconds,
        lease=timedelta(seconds=max(settings.worker_lease_seconds,
                                    2 * settings.webhook_timeout_seconds)),
        concurrency=settings.webhook_concurrency,
        per_endpoint=settings.webhook_endpoint_concurrency, clock=clock,
        wake=services.new_work,
    ))
    interval = settings.reconcile_interval_minutes
    services.jobs.append(
        ReconcileJob(reconciler, timedelta(minutes=interval) if interval > 0 else None)
    )
    return services


def build_push_authenticator(settings: Settings) -> PushAuthenticator | None:
    """None unless the expected audience and sender are configured: then every push is 401."""
    if not (settings.google_package_name and settings.google_push_audience
            and settings.google_push_service_account):
        return None
    return PushAuthenticator(settings.google_push_audience, settings.google_push_service_account,
                             settings.google_oidc_certs_url)


def google_call_budget(settings: Settings, sessions: sessionmaker[Session]) -> SharedRateLimiter:
    """The Play Developer API quota for every process on the database together."""
    return SharedRateLimiter(sessions, "google-play", settings.google_calls_per_minute, 60.0)


def apple_call_budget(settings: Settings, sessions: sessionmaker[Session]) -> SharedRateLimiter:
    """The App Store Server API rate for every process on the database together, counted per
    minute (at most 60 x the rate in any 60 s)."""
    per_minute = max(1, int(settings.apple_calls_per_second * 60))
    return SharedRateLimiter(sessions, "app-store", per_minute, 60.0)


def build_play_client(
    settings: Settings, *, limiter: CallLimiter | None = None
) -> PlayClient | None:
    """The Play client; `limiter` (default: this process's own) paces its calls."""
    if not (settings.google_package_name and settings.google_service_account_file):
        return None
    return PlayClient.from_key_file(
        settings.google_package_name, settings.google_service_account_file,
        api_endpoint=settings.google_api_endpoint,
        limiter=limiter or RateLimiter(settings.google_calls_per_minute),
        retries=settings.google_api_retries,
        backoff_seconds=settings.google_api_backoff_seconds,
        timeout_seconds=settings.google_api_timeout_seconds,
    )


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
