"""Apple ingest through real service processes: N `reconcile serve` on one database.

    python -m bench.apple_ingest_pg                        # throwaway PostgreSQL, 2 processes
    python -m bench.apple_ingest_pg --database-url sqlite:////tmp/bench.db --processes 1
    python -m bench.apple_ingest_pg --database-url postgresql+psycopg://u@host/db --processes 4

Signs `--subscriptions` x 3 App Store notifications up front (not timed), then posts them
concurrently, spread over the processes, each one `--duplicates` extra times to a different
process (the store retrying), and measures:
  accept    webhook answers per second and their latency (verify + durable insert);
  drain     seconds until every recorded notification is applied, from the first post;
then checks the result: every notification processed once, one history row per notification.
The database must be empty or absent: the run migrates it. Without --database-url a PostgreSQL
server is started with scripts/postgres.sh and stopped afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.pool import NullPool

from reconcile.db import migrate
from reconcile.models import InboxEntry, SubscriptionEvent
from tests.support.apple_burst import story
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.processes import ServiceProcess, service_env

POSTGRES_SH = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
ADMIN_TOKEN = "bench-admin-token"


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A database on a fresh PostgreSQL server (scripts/postgres.sh), removed afterwards."""
    exports = subprocess.run(
        [str(POSTGRES_SH), "start"],
        check=True, capture_output=True, text=True,
    ).stdout
    values = dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
    admin = values["RECONCILE_TEST_POSTGRES_URL"]
    try:
        engine = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as connection:
            connection.execute(text("CREATE DATABASE bench"))
        engine.dispose()
        yield make_url(admin).set(database="bench").render_as_string(hide_password=False)
    finally:
        subprocess.run([str(POSTGRES_SH), "stop", values["RECONCILE_TEST_POSTGRES_DIR"]],
                       check=False)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(database_url: str, processes: int, subscriptions: int, duplicates: int,
        concurrency: int, workdir: Path) -> dict[str, Any]:
    migrate(database_url)
    ca = AppleTestCA.create()
    root = workdir / "root.der"
    root.write_bytes(ca.root_der)
    start = datetime.now(UTC) - timedelta(days=31)
    signed = [sign_notification(ca, note)
              for n in range(subscriptions) for note in story(n, start).notifications]
    # Notification i goes to process i % N, and its duplicates to the next processes along.
    sends = [(i + d) % processes for d in range(duplicates + 1) for i in range(len(signed))]
    payloads = [signed[i % len(signed)] for i in range(len(sends))]

    env = service_env(database_url, root, ADMIN_TOKEN, RECONCILE_WORKER_POLL_SECONDS="0.05")
    servers = [ServiceProcess(env, workdir / f"serve-{n}.log") for n in range(processes)]
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        for server in servers:
            server.wait_ready()
        clients = [httpx.Client(base_url=s.url, timeout=60) for s in servers]

        def post(index: int) -> float:
            began = time.perf_counter()
            response = clients[sends[index]].post(
                "/webhooks/apple", json={"signedPayload": payloads[index]})
            response.raise_for_status()
            return time.perf_counter() - began

        began = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(post, range(len(sends))))
        accepted = time.perf_counter() - began
        with engine.connect() as connection:
            while connection.scalar(select(func.count()).select_from(InboxEntry)
                                    .where(InboxEntry.status == "pending")):
                connection.rollback()
                time.sleep(0.02)
        drained = time.perf_counter() - began
        for client in clients:
            client.close()
        with engine.connect() as connection:
            statuses = dict(connection.execute(
                select(InboxEntry.status, func.count()).group_by(InboxEntry.status)).tuples().all())
            per_entry = set(connection.execute(
                select(func.count()).select_from(SubscriptionEvent)
                .group_by(SubscriptionEvent.inbox_id)).scalars())
    finally:
        for server in servers:
            server.stop()
        engine.dispose()
    assert statuses == {"processed": len(signed)}, statuses
    assert per_entry == {1}, per_entry
    return {
        "database": make_url(database_url).get_backend_name(),
        "processes": processes,
        "notifications": len(signed),
        "posts": len(sends),
        "concurrency": concurrency,
        "accept_seconds": round(accepted, 2),
        "accept_per_second": round(len(sends) / accepted, 1),
        "latency_ms": {"p50": round(statistics.median(latencies) * 1000, 1),
                       "p95": round(percentile(latencies, 0.95) * 1000, 1),
                       "p99": round(percentile(latencies, 0.99) * 1000, 1)},
        "drain_seconds": round(drained, 2),
        "applied_per_second": round(len(signed) / drained, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an empty database (default: throwaway PostgreSQL)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--subscriptions", type=int, default=1000,
                        help="3 notifications each (default 1000)")
    parser.add_argument("--duplicates", type=int, default=1,
                        help="extra deliveries of every notification (default 1)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        if args.database_url:
            result = run(args.database_url, args.processes, args.subscriptions,
                         args.duplicates, args.concurrency, Path(tmp))
        else:
            with throwaway_postgres() as url:
                result = run(url, args.processes, args.subscriptions, args.duplicates,
                             args.concurrency, Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
