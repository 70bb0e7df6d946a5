"""Reconciliation benchmark: N subscriptions seeded into SQLite, a fake App Store with latency.

Reports subscriptions checked per second against the bound min(concurrency / latency, rate
limit), and the reconciling process's peak memory, for each size. Each size is seeded by one
child process and reconciled by a fresh one (so its peak RSS is the run's alone); the fake App
Store runs in a third process, so its CPU and memory are not the service's. The fake answers
any status read from a formula (no per-subscription state to build), signs real JWS that the
service verifies, and holds each answer for `--latency` seconds. One in a hundred
subscriptions differs at the store (renewal turned off), so repairs are part of the work.

    python -m bench.reconcile                       # 10,000 and 100,000, concurrency 8
    python -m bench.reconcile --sizes 2000 --concurrency 16 --rate 300
    python -m bench.reconcile --sizes 10000 1000000 --trace 10 --stop-after 120

`--trace S` prints the reconciling process's memory every S seconds: resident and peak (the
kernel's VmRSS / VmHWM), the C heap in use and free inside its arenas (glibc's mallinfo2),
SQLite's own allocations, and Python's small-object arenas. `--stop-after S` ends each run
after about S seconds (at a page boundary): enough to compare the start of a large run with a
whole small one without waiting for the large one to finish.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, insert, select

from reconcile.config import Settings
from reconcile.db import make_engine, migrate, transaction
from reconcile.heap import C_LIBRARY
from reconcile.models import Discrepancy, ReconciliationRun, StoreId, Subscription
from reconcile.reconciliation.sources import Filters
from reconcile.services import Services, build_services
from reconcile.serving import settle_memory
from reconcile.worker import utcnow
from tests.fakes.appstore import (
    FakeAppStore,
    Query,
    _Handler,
    _ok,
    renewal_payload,
    transaction_payload,
)
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import BUNDLE_ID

MONTHLY = "com.example.phone.monthly"
DAY_MS = 86_400_000
FIRST_ID = 1_000_000_000


def plan(n: int, base_ms: int) -> dict[str, Any]:
    """Subscription n as both sides hold it (the store turns renewal off for every 100th)."""
    expires = base_ms + ((n % 40) + 1) * DAY_MS  # 1 in 20 expires within three days
    grace = n % 50 == 7
    return {"expires": expires, "status": 4 if grace else 1,
            "grace_until": expires + 16 * DAY_MS if grace else None,
            "store_auto_renew": 0 if n % 100 == 42 else 1}


class FormulaAppStore(FakeAppStore):
    """The fake App Store with a fast path: status reads answered from `plan`, not state."""

    base_ms = 0

    def _get_statuses(self, any_id: str, query: Query, body: Any) -> Any:
        n = int(any_id) - FIRST_ID
        p = plan(n, self.base_ms)
        tx = transaction_payload(
            transaction_id=f"{any_id}01", original_transaction_id=any_id, product_id=MONTHLY,
            bundle_id=BUNDLE_ID, purchase_date=p["expires"] - 30 * DAY_MS,
            expires_date=p["expires"],
        )
        renewal = renewal_payload(original_transaction_id=any_id, product_id=MONTHLY,
                                  auto_renew_status=p["store_auto_renew"],
                                  grace_period_expires_date=p["grace_until"])
        return _ok({**self._base(), "data": [{
            "subscriptionGroupIdentifier": "21000000",
            "lastTransactions": [{
                "originalTransactionId": any_id, "status": p["status"],
                "signedTransactionInfo": self._sign_transaction(tx),
                "signedRenewalInfo": self._sign_renewal(renewal),
            }],
        }]})


def ca_parts(ca: AppleTestCA) -> tuple[bytes, bytes, bytes, bytes]:
    der = serialization.Encoding.DER
    key = ca.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    return (ca.root.public_bytes(der), ca.intermediate.public_bytes(der),
            ca.leaf.public_bytes(der), key)


def serve_fake(parts: tuple[bytes, bytes, bytes, bytes], base_ms: int, latency: float,
               pipe: Connection) -> None:
    """Child process: run the fake until the parent says stop."""
    root, inter, leaf, key = parts
    leaf_key = serialization.load_pem_private_key(key, None)
    assert isinstance(leaf_key, ec.EllipticCurvePrivateKey)
    ca = AppleTestCA(x509.load_der_x509_certificate(root), x509.load_der_x509_certificate(inter),
                     x509.load_der_x509_certificate(leaf), leaf_key)
    FormulaAppStore.base_ms = base_ms
    # Keep-alive, as Apple's servers do (the test fake answers HTTP/1.0, a connection a call).
    _Handler.protocol_version = "HTTP/1.1"
    _Handler.disable_nagle_algorithm = True  # headers and body go out as two writes
    with FormulaAppStore(ca, BUNDLE_ID, history_max_age_days=None) as fake:
        fake.latency = latency
        started = resource.getrusage(resource.RUSAGE_SELF)
        pipe.send(fake.url)
        pipe.recv()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime - started.ru_utime - started.ru_stime
        pipe.send((len(fake.calls), cpu))


def seed(database_url: str, count: int, base_ms: int) -> None:
    """Child process: bulk-insert `count` subscriptions as our side holds them."""
    migrate(database_url)
    engine = make_engine(database_url)
    stamp = [(datetime.fromtimestamp(base_ms / 1000, UTC) - timedelta(days=1)).isoformat(), "seed"]
    now = datetime.now(UTC)
    fields = ("status", "product_id", "renewal_product_id", "auto_renew", "expires_at",
              "grace_expires_at", "prepaid")
    with engine.begin() as connection:
        for start in range(0, count, 5000):
            subs, ids = [], []
            for n in range(start, min(count, start + 5000)):
                p = plan(n, base_ms)
                sub_id = f"sub_{n:024x}"
                subs.append({
                    "id": sub_id, "channel": "apple", "environment": "sandbox",
                    "store_id": str(FIRST_ID + n), "account_id": None, "product_id": MONTHLY,
                    "renewal_product_id": MONTHLY,
                    "status": "grace_period" if p["status"] == 4 else "active",
                    "auto_renew": True,
                    "expires_at": datetime.fromtimestamp(p["expires"] / 1000, UTC),
                    "grace_expires_at": (datetime.fromtimestamp(p["grace_until"] / 1000, UTC)
                                         if p["grace_until"] else None),
                    "prepaid": False, "last_event_at": None,
                    "clock": {name: stamp for name in fields},
                    "created_at": now, "updated_at": now, "version": 1,
                })
                ids.append({"channel": "apple", "store_id": str(FIRST_ID + n),
                            "subscription_id": sub_id, "created_at": now})
            connection.execute(insert(Subscription), subs)
            connection.execute(insert(StoreId), ids)
    engine.dispose()


def measure(settings: dict[str, Any], trace: float, stop_after: float, pipe: Connection) -> None:
    """Child process: one full reconciliation; throughput and this process's peak memory."""
    services = build_services(Settings(_env_file=None, **settings))
    settle_memory()  # as `reconcile run` and `serve` do once started
    start_usage = resource.getrusage(resource.RUSAGE_SELF)
    before = start_usage.ru_maxrss
    with transaction(services.sessions) as session:
        run_id = services.reconciler.start(session, Filters(), dry_run=False, now=utcnow(),
                                           claim=True).id
    started = time.perf_counter()
    if trace:
        threading.Thread(target=trace_memory, args=(trace, started), daemon=True).start()
    if stop_after:
        while time.perf_counter() - started < stop_after and _running(services, run_id):
            services.reconciler.advance(run_id, utcnow, max_pages=25)
    else:
        services.reconciler.advance(run_id, utcnow)
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - start_usage.ru_utime - start_usage.ru_stime
    with services.sessions() as session:
        run = session.get(ReconciliationRun, run_id)
        assert run is not None
        found = session.scalar(select(func.count()).select_from(Discrepancy)
                               .where(Discrepancy.run_id == run_id))
        result = {"status": run.status, "checked": run.checked, "elapsed": elapsed,
                  "errors": run.checkpoint.get("errors"), "discrepancies": found, "cpu": cpu,
                  "rss_before_kib": before,
                  "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    services.close()
    pipe.send(result)


def _running(services: Services, run_id: str) -> bool:
    with services.sessions() as session:
        run = session.get(ReconciliationRun, run_id)
        return run is not None and run.status == "running"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def trace_memory(every: float, started: float) -> None:
    """Print this process's memory every `every` seconds (a daemon thread of `measure`)."""
    import _sqlite3

    sqlite = ctypes.CDLL(_sqlite3.__file__)  # resolves to the SQLite it is linked with
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    mallinfo2 = getattr(C_LIBRARY, "mallinfo2", None)  # glibc only
    if mallinfo2 is not None:
        mallinfo2.restype = _MallInfo2
    mib = 1 / 1024 / 1024
    while True:
        time.sleep(every)
        lines = Path("/proc/self/status").read_text().splitlines()
        status = dict(line.split(":", 1) for line in lines)
        fields = [f"t={time.perf_counter() - started:6.0f} s",
                  f"rss {int(status['VmRSS'].split()[0]) / 1024:.1f}",
                  f"peak {int(status['VmHWM'].split()[0]) / 1024:.1f} MiB"]
        if mallinfo2 is not None:
            heap = mallinfo2()
            fields.append(f"C heap in use {heap.uordblks * mib:.2f}, "
                          f"free {heap.fordblks * mib:.2f}")
        fields.append(f"SQLite {sqlite.sqlite3_memory_used() * mib:.2f}")
        fields.append(f"Python arenas {_python_arenas()}")
        print("    " + ", ".join(fields), flush=True)


def _python_arenas() -> str:
    """pymalloc's arenas in use now (from `sys._debugmallocstats`, which writes to fd 2)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()
    for line in text.splitlines():
        if "arenas allocated current" in line:
            return line.split("=")[1].strip()
    return "?"


def run_child(target: Any, *args: Any) -> Any:
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(*args, child))
    process.start()
    result = parent.recv() if target is not seed else None
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"{target.__name__} exited with {process.exitcode}")
    return result


def bench_size(count: int, args: argparse.Namespace, workdir: Path, ca: AppleTestCA) -> None:
    base_ms = int(time.time() * 1000)
    database_url = f"sqlite:///{workdir / f'bench-{count}.db'}"
    context = mp.get_context("spawn")
    seeding = context.Process(target=seed, args=(database_url, count, base_ms))
    seeded = time.perf_counter()
    seeding.start()
    seeding.join()
    print(f"{count:>7} subscriptions seeded in {time.perf_counter() - seeded:.1f} s", flush=True)
    parent, child = context.Pipe()
    fake = context.Process(target=serve_fake,
                           args=(ca_parts(ca), base_ms, args.latency, child), daemon=True)
    fake.start()
    url = parent.recv()
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = workdir / "AuthKey_BENCH.p8"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    root_path = workdir / "root.der"
    root_path.write_bytes(ca.root_der)
    settings = {
        "database_url": database_url, "apple_bundle_id": BUNDLE_ID,
        "apple_environments": ["sandbox"], "apple_root_certs": [root_path],
        "apple_online_checks": False, "apple_key_id": "BENCHKEY01", "apple_issuer_id": "bench",
        "apple_private_key_path": key_path, "apple_api_base_url": url,
        "apple_calls_per_second": args.rate, "reconcile_concurrency": args.concurrency,
        "reconcile_page_size": args.page_size,
    }
    result = run_child(measure, settings, args.trace, args.stop_after)
    parent.send("stop")
    calls, fake_cpu = parent.recv()
    fake.join(5)
    bound = min(args.concurrency / args.latency, args.rate)
    rate = result["checked"] / result["elapsed"]
    print(f"{count:>7} subscriptions: {result['status']}, checked {result['checked']} in "
          f"{result['elapsed']:.1f} s = {rate:.0f}/s; bound min({args.concurrency}/"
          f"{args.latency:g} s, {args.rate:g}/s) = {bound:.0f}/s -> {100 * rate / bound:.0f}%; "
          f"{result['discrepancies']} discrepancies repaired, {result['errors']} errors, "
          f"{calls} store calls; peak RSS {result['rss_peak_kib'] / 1024:.1f} MiB "
          f"= {result['rss_peak_kib']:,} KiB "
          f"(after start-up {result['rss_before_kib'] / 1024:.0f} MiB); CPU per check: "
          f"service {1000 * result['cpu'] / calls:.2f} ms, fake {1000 * fake_cpu / calls:.2f} ms",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.020)
    parser.add_argument("--rate", type=float, default=1000.0, help="store calls per second")
    parser.add_argument("--page-size", type=int, default=200)
    parser.add_argument("--trace", type=float, default=0.0, metavar="SECONDS",
                        help="print the reconciling process's memory this often")
    parser.add_argument("--stop-after", type=float, default=0.0, metavar="SECONDS",
                        help="end each run after about this long (0: run to the end)")
    args = parser.parse_args()
    ca = AppleTestCA.create()
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.sizes:
            bench_size(count, args, Path(tmp), ca)


if __name__ == "__main__":
    main()
