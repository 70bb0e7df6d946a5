"""The `reconcile` command: serve, worker, run."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import typer
import uvicorn

from reconcile.app import create_app
from reconcile.config import Settings
from reconcile.db import migrate
from reconcile.services import Services, build_services

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Store-receipt reconciliation service.")


def _start() -> Services:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    migrate(settings.database_url)
    return build_services(settings)


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


def main() -> None:
    cli()
