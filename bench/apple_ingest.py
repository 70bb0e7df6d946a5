"""Apple ingest benchmark: real `reconcile serve`, real HTTP, N signed notifications.

Reports accepted per second, answer latency p50/p99, the time until every notification is
processed, and compares the end-to-end processed rate with verifying the same notifications
naively with the library's `SignedDataVerifier` (notification + transaction + renewal info).

    python -m bench.apple_ingest --notifications 3000 --clients 8 --rounds 3
    python -m bench.apple_ingest --database-url postgresql+psycopg://... --processes 2
    python -m bench.apple_ingest --workers 1        # and a `reconcile worker` beside serve
    python -m bench.apple_ingest --database-url postgresql+psycopg://... --serve-workers 2
    python -m bench.apple_ingest --endpoint         # one webhook endpoint (a local receiver)
    python -m bench.apple_ingest --endpoint --sender-process   # the sender in its own process

Each round starts a service on a fresh SQLite file; the round with the median ratio is
reported in full (a shared machine's speed drifts between rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier
from sqlalchemy import func, select

from bench.load import percentile, post_concurrently
from bench.receiver import receiver_process
from reconcile.db import make_engine, make_sessionmaker, migrate
from reconcile.models import InboxEntry
from reconcile.notify.models import Delivery
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import BUNDLE_ID, sign_notification
from tests.support.process import service_env, start_service, start_worker

DAY = 86_400_000


def notifications(ca: AppleTestCA, count: int, subscriptions: int) -> list[str]:
    """`count` signed DID_RENEW notifications spread over `subscriptions` subscriptions."""
    start = int(time.time() * 1000) - DAY
    signed = []
    for n in range(count):
        original = f"9{n % subscriptions:09d}"
        at = start + n
        signed.append(sign_notification(ca, {
            "notificationType": "DID_RENEW",
            "notificationUUID": f"77777777-0000-4000-8000-{n:012d}",
            "signedDate": at,
            "data": {
                "status": 1,
                "transaction": {
                    "originalTransactionId": original, "transactionId": f"8{n:09d}",
                    "productId": "com.example.phone.monthly", "purchaseDate": at,
                    "expiresDate": at + 30 * DAY, "type": "Auto-Renewable Subscription",
                    "appAccountToken": f"acct-{n % subscriptions}", "price": 9990,
                    "currency": "USD",
                },
                "renewal": {"originalTransactionId": original, "autoRenewStatus": 1,
                            "autoRenewProductId": "com.example.phone.monthly"},
            },
        }))
    return signed


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (uvicorn's workers and resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return sorted(found)


def resident_mb(pid: int) -> float:
    """The resident set size of process `pid`, in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process `pid` has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pids: list[int], timeout: float = 60.0) -> None:
    """Until the processes have finished starting (their CPU use drops to an idle poll), so
    that the CPU measured is the work's, not the imports' of a worker started just before."""
    deadline = time.perf_counter() + timeout
    used = sum(cpu_seconds(pid) for pid in pids)
    while time.perf_counter() < deadline:
        time.sleep(0.5)
        now = sum(cpu_seconds(pid) for pid in pids)
        if now - used < 0.1:
            return
        used = now


def naive_rate(ca: AppleTestCA, payloads: list[str]) -> float:
    """Notifications per second verified fully by a fresh-chain `SignedDataVerifier`."""
    verifier = SignedDataVerifier([ca.root_der], False, Environment.SANDBOX, BUNDLE_ID)
    started = time.perf_counter()
    for payload in payloads:
        decoded = verifier.verify_and_decode_notification(payload)
        assert decoded.data is not None
        verifier.verify_and_decode_signed_transaction(decoded.data.signedTransactionInfo or "")
        verifier.verify_and_decode_renewal_info(decoded.data.signedRenewalInfo or "")
    return len(payloads) / (time.perf_counter() - started)


def wait_until(database_url: str, count: Any, done: Callable[[int], bool], what: str,
               timeout: float = 600) -> float:
    """Poll the `count` query until `done` holds for its answer; returns the time it did."""
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    deadline = time.perf_counter() + timeout
    found = 0
    try:
        while time.perf_counter() < deadline:
            with sessions() as session:
                found = session.scalar(count) or 0
            if done(found):
                return time.perf_counter()
            time.sleep(0.02)
    finally:
        engine.dispose()
    raise TimeoutError(f"{what}: {found} after {timeout:g} s")


def wait_processed(database_url: str, expected: int, timeout: float) -> float:
    return wait_until(database_url, select(func.count()).select_from(InboxEntry)
                      .where(InboxEntry.status != "pending"), lambda n: n == expected,
                      f"processed of {expected}", timeout)


def wait_delivered(database_url: str, timeout: float) -> float:
    """Until no delivery is pending (every event sent and its outcome written)."""
    return wait_until(database_url, select(func.count()).select_from(Delivery)
                      .where(Delivery.status == "pending"), lambda n: n == 0,
                      "deliveries still pending", timeout)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--notifications", type=int, default=3000)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1, help="`reconcile serve` processes")
    parser.add_argument("--serve-workers", type=int, default=1,
                        help="`reconcile serve --workers N`: N processes on one port (PostgreSQL)")
    parser.add_argument("--workers", type=int, default=0,
                        help="`reconcile worker` processes beside them (a multi-process layout)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds on fresh SQLite files, the median reported in full "
                             "(always one round with --database-url)")
    parser.add_argument("--database-url", default=None,
                        help="default: a temporary SQLite file per round")
    parser.add_argument("--endpoint", action="store_true",
                        help="register one webhook endpoint (a local receiver answering 200): "
                             "every event is also queued and delivered")
    parser.add_argument("--sender-process", action="store_true",
                        help="the webhook sender in a `reconcile worker` of its own "
                             "(RECONCILE_WORKER_JOBS), with or without --endpoint")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the service, e.g. RECONCILE_WORKER_BATCH_SIZE=20")
    parser.add_argument("--catalog", default=None,
                        help="RECONCILE_CATALOG_FILE for the service (entitlement events)")
    args = parser.parse_args(argv)
    rounds = 1 if args.database_url else max(1, args.rounds)

    workdir = Path(tempfile.mkdtemp(prefix="bench-apple-"))
    ca = AppleTestCA.create("Bench")
    root = workdir / "root.der"
    root.write_bytes(ca.root_der)
    payloads = notifications(ca, args.notifications, args.subscriptions)
    results = []
    for number in range(rounds):
        database_url = args.database_url or f"sqlite:///{workdir / f'bench-{number}.db'}"
        figures = run(args, ca, root, payloads, database_url)
        results.append(figures)
        if rounds > 1:
            print(f"round {number + 1}: " + ", ".join(
                f"{key} {figures[key]:.1f}" for key in
                ("processed_per_second", "naive_verify_per_second", "ratio_to_naive")))
    median = sorted(results, key=lambda figures: figures["ratio_to_naive"])[len(results) // 2]
    if rounds > 1:
        print(f"median of {rounds} rounds by ratio:")
    for key, value in median.items():
        print(f"{key:>26}: {value:.1f}" if isinstance(value, float) else f"{key:>26}: {value}")
    return median


def run(args: argparse.Namespace, ca: AppleTestCA, root: Path, payloads: list[str],
        database_url: str) -> dict[str, Any]:
    """One round: `reconcile serve` on `database_url`, every payload posted and processed."""
    migrate(database_url)
    bodies = [json.dumps({"signedPayload": p}).encode() for p in payloads]
    sample = payloads[: min(500, len(payloads))]
    # The naive rate is measured just before and just after the run, and the two averaged: a
    # shared machine's speed drifts over tens of seconds, and a ratio of rates measured at two
    # different speeds says more about the drift than about the service.
    naive_before = naive_rate(ca, sample)

    extra = {"RECONCILE_CATALOG_FILE": args.catalog} if args.catalog else {}
    extra.update(setting.split("=", 1) for setting in args.env)
    env = service_env(database_url, root, RECONCILE_WORKER_POLL_SECONDS="0.05", **extra)
    serve_env = {**env, "RECONCILE_WORKER_JOBS": "-webhook-delivery"} if (
        args.sender_process) else env
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    receivers = ExitStack()
    delivered = None
    try:
        for _ in range(args.processes):
            process, url = start_service(serve_env, "--workers", str(args.serve_workers),
                                         ready_within=120)
            processes.append(process)
            urls.append(url)
        if args.endpoint:
            receiver = receivers.enter_context(receiver_process())
            httpx.post(f"{urls[0]}/v1/webhook-endpoints", json={"url": receiver},
                       headers={"Authorization": "Bearer process-admin-token"},
                       timeout=30).raise_for_status()
        processes.extend(start_worker(serve_env) for _ in range(args.workers))
        if args.sender_process:
            processes.append(start_worker({**env, "RECONCILE_WORKER_JOBS": "webhook-delivery"}))
        pids = [pid for process in processes for pid in [process.pid, *children(process.pid)]]
        wait_idle(pids)
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        began = time.perf_counter()
        latencies, posting = post_concurrently(urls, "/webhooks/apple", bodies, args.clients)
        finished = wait_processed(database_url, len(payloads), timeout=600)
        if args.endpoint:
            delivered = wait_delivered(database_url, timeout=600)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        memory = [resident_mb(pid) for pid in pids]
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
            if process.stderr is not None:
                process.stderr.close()
        receivers.close()
    naive_after = naive_rate(ca, sample)
    naive = (naive_before + naive_after) / 2

    total = finished - began
    figures = {
        "database": database_url.split(":", 1)[0],
        "processes": args.processes,
        "serve_workers": args.serve_workers,
        # Resident memory of every process (a `serve --workers N` parent, then its children).
        "resident_mb": " ".join(f"{mb:.0f}" for mb in memory),
        "worker_processes": args.workers,
        "webhook_endpoint": args.endpoint,
        "sender_process": args.sender_process,
        "notifications": len(payloads),
        "clients": args.clients,
        "accepted_per_second": len(payloads) / posting,
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "all_processed_seconds": total,
        "processed_per_second": len(payloads) / total,
        # Every event sent and its outcome written (with --endpoint).
        "all_delivered_seconds": (delivered - began) if delivered else "-",
        # CPU of every service process (not the load generator, not the receiver), from the
        # first notification until all were processed (and, with --endpoint, delivered).
        "service_cpu_ms_per_notification": cpu / len(payloads) * 1000,
        "naive_before_per_second": naive_before,
        "naive_after_per_second": naive_after,
        "naive_verify_per_second": naive,
    }
    figures["ratio_to_naive"] = figures["processed_per_second"] / naive
    return figures


if __name__ == "__main__":
    main()
