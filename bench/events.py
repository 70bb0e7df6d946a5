"""Webhook delivery benchmark: events delivered per second to a local receiver that answers
each request after 20 ms, with the events spread over 1, 10 and 1,000 accounts.

    python -m bench.events --events 600 --accounts 1,10,1000

Each round starts `reconcile serve` on a fresh SQLite file with one endpoint, writes the events
straight into the database in transactions of 50 (through `reconcile.notify.service.emit`, as
every writer does), and times until every delivery is `delivered`. One account's events go out
one at a time (in `sequence` order), so with one account the rate is bounded by the round
trip; with many it is bounded by RECONCILE_WEBHOOK_ENDPOINT_CONCURRENCY attempts in flight.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from reconcile.db import make_engine, make_sessionmaker, migrate, transaction
from reconcile.notify import service as notify
from reconcile.notify.models import Delivery
from tests.support.apple_ca import AppleTestCA
from tests.support.process import service_env, start_service, stop_service


@contextmanager
def slow_receiver(delay: float) -> Iterator[str]:
    """A loopback HTTP server answering 200 to every POST after `delay` seconds."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            time.sleep(delay)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()
        server.server_close()


def run(workdir: Path, root: Path, receiver: str, events: int, accounts: int,
        number: int) -> dict[str, Any]:
    database_url = f"sqlite:///{workdir / f'events-{number}.db'}"
    migrate(database_url)
    env = service_env(database_url, root, RECONCILE_WORKER_POLL_SECONDS="0.05")
    process, url = start_service(env)
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    try:
        made = httpx.post(f"{url}/v1/webhook-endpoints", json={"url": receiver},
                          headers={"Authorization": "Bearer process-admin-token"}, timeout=30)
        made.raise_for_status()
        began = time.perf_counter()
        now = datetime.now(UTC)
        for start in range(0, events, 50):
            with transaction(sessions) as session:
                for n in range(start, min(events, start + 50)):
                    notify.emit(session, type="credits.granted", account_id=f"acct-{n % accounts}",
                                data={"entry": {"amount": 1, "n": n}}, now=now)
        written = time.perf_counter()
        while True:
            with sessions() as session:
                done = session.scalar(select(func.count()).select_from(Delivery)
                                      .where(Delivery.status == "delivered")) or 0
            if done >= events:
                break
            time.sleep(0.02)
        finished = time.perf_counter()
    finally:
        stop_service(process)
        engine.dispose()
    return {"accounts": accounts, "events": events,
            "write_seconds": round(written - began, 2),
            "delivered_per_second": round(events / (finished - began), 1)}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--accounts", default="1,10,1000")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    root = workdir / "root.der"
    root.write_bytes(AppleTestCA.create("Bench").root_der)
    results = []
    with slow_receiver(args.latency_ms / 1000) as receiver:
        for number, accounts in enumerate(int(a) for a in args.accounts.split(",")):
            figures = run(workdir, root, receiver, args.events, accounts, number)
            print(figures)
            results.append(figures)
    return results


if __name__ == "__main__":
    main()
