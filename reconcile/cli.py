"""The `reconcile` command: serve, worker, run."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from enum import StrEnum
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reconcile.app import create_app
from reconcile.config import Settings
from reconcile.console import cli as console_users
from reconcile.db import migrate, transaction
from reconcile.errors import StoreNotConfigured
from reconcile.models import Discrepancy, ReconciliationRun
from reconcile.reconciliation.report import discrepancies_of, load_run, summary
from reconcile.reconciliation.sources import Filters
from reconcile.services import Services, build_services
from reconcile.worker import Worker

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Store-receipt reconciliation service.")


def _start(level: int = logging.INFO) -> Services:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    migrate(settings.database_url)
    services = build_services(settings)
    _settle_memory()
    return services


def _settle_memory() -> None:
    """What starting made (modules, settings, services) lives as long as the process: keep it out
    of the cycle collector's scans, and let the young generation grow before each pass. Only
    cyclic garbage waits longer; on the ingest benchmark this saves ~8% of CPU per notification.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@cli.command(name="migrate")
def migrate_command() -> None:
    """Bring the database schema up to date (serve and worker also do this when they start)."""
    migrate(Settings().database_url)


@cli.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """HTTP API (webhooks + admin) with the background worker in the same process."""
    services = _start()
    uvicorn.run(create_app(services), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=10)


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
        reconciler.advance(run_id, services.clock,
                           progress=lambda checked, _total: bar.update(task, completed=checked))
        bar.update(task, completed=total)
    with services.sessions() as session:
        finished = load_run(session, run_id)
        kinds = summary(session, run_id)
        details = discrepancies_of(session, run_id)[:DETAIL_ROWS]
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


cli.add_typer(console_users.app, name="console-user")


def main() -> None:
    cli()
