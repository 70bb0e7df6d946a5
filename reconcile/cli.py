"""The `reconcile` command: serve, worker, run, replay."""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reconcile import serving, startup
from reconcile.app import create_app
from reconcile.catalog.file import CatalogError
from reconcile.config import Settings
from reconcile.config_check import ConfigError, load_settings, unknown_variables
from reconcile.console import cli as console_users
from reconcile.db import migrate, transaction
from reconcile.errors import StoreNotConfigured
from reconcile.models import Discrepancy, ReconciliationRun
from reconcile.outage import describe, is_unavailable
from reconcile.reconciliation.report import discrepancies_of, load_run, summary
from reconcile.reconciliation.sources import Filters
from reconcile.replay.runner import Replayer, ReplayFilters, ReplayRefused
from reconcile.services import Services, build_services
from reconcile.worker import Worker

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Store-receipt reconciliation service.")
startup_log = logging.getLogger("reconcile.startup")


class _Options:
    debug = False


@cli.callback()
def _options(
    debug: Annotated[bool, typer.Option(
        "--debug", help="Print the full traceback of a start-up error.")] = False,
) -> None:
    """Store-receipt reconciliation service."""
    _Options.debug = debug


def _start(level: int = logging.INFO, *, settle: bool = True) -> Services:
    """Settings checked, schema migrated, services built; with `settle`, what start-up made is
    set aside from the collector (`serve` does that itself once its app is built too)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with _startup_errors():
        settings = _settings()
        migrate(settings.database_url)
        services = build_services(settings)
    startup_log.info("starting: %s", startup.summary(settings))
    for warning in startup.warnings(settings):
        startup_log.warning("%s", warning)
    if settle:
        serving.settle_memory()
    return services


def _settings() -> Settings:
    """The settings, after warning about unknown variables and checking the database URL."""
    for warning in unknown_variables():
        startup_log.warning("%s", warning)
    settings = load_settings()
    startup.check_database(settings.database_url)
    return settings


@contextmanager
def _startup_errors() -> Iterator[None]:
    """A configuration error ends the command with status 2 and its lines, anything else that
    stops start-up with one line; the traceback only with --debug."""
    try:
        yield
    except ConfigError as error:
        if _Options.debug:
            traceback.print_exception(error)
        for line in error.lines:
            typer.echo(f"configuration error: {line}", err=True)
        raise typer.Exit(2) from error
    except CatalogError as error:
        # A broken catalog would grant nothing (or the wrong things): refuse to start.
        typer.echo(f"configuration error: RECONCILE_CATALOG_FILE: {error}", err=True)
        raise typer.Exit(2) from error
    except Exception as error:
        if _Options.debug:
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        typer.echo(f"start-up failed: {type(error).__name__}: {reason} (--debug shows the "
                   "traceback)", err=True)
        raise typer.Exit(1) from error


@cli.command(name="migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (serve and worker also do this when they start)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with _startup_errors():
        migrate(_settings().database_url)


@cli.command()
def serve(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port, 1-65535.")] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, max=serving.MAX_WORKERS,
        help="Service processes on the port, 1-64 (more than 1 needs PostgreSQL); each runs "
             "HTTP and the background worker.")] = 1,
) -> None:
    """HTTP API (webhooks + admin) with the background worker in the same process."""
    if workers != 1:
        _serve_processes(host, port, workers)
        return
    services = _start(settle=False)
    app = create_app(services)
    serving.settle_memory()  # the app's routes and templates too
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10,
                access_log=services.settings.access_log)


def _serve_processes(host: str, port: int, workers: int) -> None:
    logging.basicConfig(level=logging.INFO, format=serving.LOG_FORMAT)
    with _startup_errors():
        settings = _settings()
        refusal = serving.workers_refusal(workers, settings)
        if refusal is not None:
            raise ConfigError([refusal])
        migrate(settings.database_url)
    startup_log.info("starting %d processes: %s", workers, startup.summary(settings))
    for warning in startup.warnings(settings):
        startup_log.warning("%s", warning)
    serving.serve_processes(host, port, workers, access_log=settings.access_log)


@cli.command()
def worker() -> None:
    """The background worker alone (for multi-process deployments)."""
    services = _start()
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    running = services.worker()
    running.start()
    stop.wait()
    running.stop()


class ChannelName(StrEnum):
    apple = "apple"
    google = "google"
    portal = "portal"


DETAIL_ROWS = 50


@cli.command()
def run(
    channel: Annotated[ChannelName | None, typer.Option(help="Only this channel.")] = None,
    account_id: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    store_id: Annotated[str | None, typer.Option(help="Only this store identifier.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Report drift, repair nothing.")] = False,
) -> None:
    """One reconciliation pass against the stores, here in this process; exits 1 if it failed."""
    services = _start(logging.WARNING)
    console = Console()
    filters = Filters(channel.value if channel else None, account_id, store_id)
    reconciler = services.reconciler
    try:
        with transaction(services.sessions) as session:
            started = reconciler.start(session, filters, dry_run=dry_run, now=services.clock(),
                                       claim=True)
            run_id, total = started.id, int(started.checkpoint.get("total") or 0)
    except StoreNotConfigured as error:
        console.print(f"[red]{error.message}[/red]")
        raise typer.Exit(2) from error
    columns = (TextColumn("[bold]Reconciling"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("reconcile", total=total)
        try:
            reconciler.advance(run_id, services.clock,
                               progress=lambda checked, _total: bar.update(task,
                                                                           completed=checked))
        except Exception as error:
            if not is_unavailable(error):
                raise
            console.print(f"[red]database unavailable ({escape(describe(error))}): run {run_id} "
                          "keeps its checkpoint; a worker carries it on once its lease runs "
                          "out[/red]")
            raise typer.Exit(1) from error
        bar.update(task, completed=total)
    with services.sessions() as session:
        finished = load_run(session, run_id)
        kinds = summary(session, run_id)
        details = discrepancies_of(session, run_id, limit=DETAIL_ROWS)
    if not dry_run:
        # Recovered notifications wait in the inbox, purchases to acknowledge in their queue:
        # see to them now, as the worker would (other runs are left to the worker).
        Worker([job for job in services.jobs if job.name != "reconcile"],
               clock=services.clock).drain()
    _report(console, finished, total, kinds, details)
    services.close()
    raise typer.Exit(0 if finished.status == "done" else 1)


def _report(
    console: Console, run: ReconciliationRun, total: int, kinds: dict[str, tuple[int, int]],
    details: list[Discrepancy],
) -> None:
    colour = "green" if run.status == "done" else "red"
    overview = Table(title="Reconciliation", show_header=False)
    overview.add_column("", style="bold")
    overview.add_column("")
    overview.add_row("run", run.id)
    overview.add_row("status", f"[{colour}]{run.status}[/{colour}]")
    overview.add_row("mode", "dry run: nothing repaired" if run.dry_run else "repair")
    overview.add_row("checked", f"{run.checked} of {total}")
    overview.add_row("store errors", str(run.checkpoint.get("errors", 0)))
    console.print(overview)
    table = Table(title="Discrepancies")
    table.add_column("kind")
    table.add_column("found", justify="right")
    table.add_column("repaired", justify="right")
    for kind, (found, repaired) in kinds.items():
        table.add_row(kind, str(found), str(repaired))
    if not kinds:
        table.add_row("none", "0", "0")
    console.print(table)
    if details:
        detail = Table(title=f"First {len(details)} discrepancies")
        for name in ("kind", "store_id", "here", "store", "repaired"):
            detail.add_column(name)
        for d in details:
            detail.add_row(d.kind, f"{d.channel} {d.store_id}", d.here or "-", d.store or "-",
                           "yes" if d.repaired else "no")
        console.print(detail)
    for failure in run.checkpoint.get("failures", []):
        console.print(f"[yellow]store error:[/yellow] {failure}")
    if run.error:
        console.print(f"[red]run failed:[/red] {run.error}")


class ReplayChannel(StrEnum):
    apple = "apple"
    google = "google"


def _instant(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (UTC when it names no offset)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-11-01T00:00Z",
                                 param_hint=option) from error
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@cli.command()
def replay(
    channel: Annotated[ReplayChannel | None, typer.Option(help="Only this channel.")] = None,
    store_id: Annotated[str | None, typer.Option(
        help="Only the subscription (or purchase) holding this store id.")] = None,
    since: Annotated[str | None, typer.Option(
        help="Only subscriptions with a notification received at or after this ISO time.")
    ] = None,
    until: Annotated[str | None, typer.Option(
        help="Only subscriptions with a notification received before this ISO time.")] = None,
    dry_run: Annotated[bool, typer.Option(
        help="Print what the rebuild would change, per subscription; change nothing.")] = False,
) -> None:
    """Rebuild subscriptions, store ids, their history, purchases and refunds from the inbox;
    exits 1 when something could not be replayed, 2 when a channel is not configured."""
    filters = ReplayFilters(channel.value if channel else None, store_id,
                            _instant(since, "--since"), _instant(until, "--until"))
    services = _start(logging.WARNING)
    console = Console()
    replayer = Replayer(services.sessions, services.processors, services.clock)
    try:
        done = replayer.run(filters, dry_run=dry_run,
                            on_change=lambda change: typer.echo(change.line()))
    except ReplayRefused as error:
        console.print(f"[red]{error}[/red]")
        services.close()
        raise typer.Exit(2) from error
    for skipped in done.skipped:
        console.print(f"[yellow]skipped:[/yellow] {escape(skipped)}", highlight=False)
    verb = "would change" if dry_run else "changed"
    console.print(f"{'dry run: ' if dry_run else ''}{done.subscriptions} subscriptions replayed "
                  f"from {done.notifications} notifications; {verb} {done.changes} fields of "
                  f"{done.changed}; {len(done.skipped)} skipped", highlight=False)
    services.close()
    raise typer.Exit(1 if done.skipped else 0)


cli.add_typer(console_users.app, name="console-user")


def main() -> None:
    cli()
