"""Google ingest benchmark: real `reconcile serve`, real HTTP pushes, a local fake Play API.

N Pub/Sub pushes with valid OIDC tokens from several concurrent clients, in bursts that repeat
purchase tokens (a purchase, a renewal, a cancellation... close together). Reports accepted per
second, answer latency p50/p99, the time until every notification is processed and every
purchase acknowledged, Play API calls per notification, and the most calls seen in any
60-second window against the configured rate.

    python -m bench.google_ingest --pushes 3000 --tokens 600 --latency 0.03
    python -m bench.google_ingest --calls-per-minute 300 --tokens 400   # rate limit at work
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.load import percentile, post_concurrently
from reconcile.db import make_engine, make_sessionmaker, migrate
from reconcile.models import Acknowledgement, InboxEntry
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.google import (
    AUDIENCE,
    PACKAGE,
    PUSH_ACCOUNT,
    service_account_pem,
    subscription_notification,
    write_service_account,
)
from tests.support.oidc import OidcIssuer, push_envelope
from tests.support.process import start_service

ROOT = Path(__file__).resolve().parents[1]
# What one customer's subscription sends in a short while.
BURST = (4, 2, 3, 7, 2, 18, 2, 3)


def pushes(count: int, tokens: int, group: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` notifications over `tokens` tokens; each group of tokens arrives interleaved."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    per_token = [count // tokens + (1 if n < count % tokens else 0) for n in range(tokens)]
    envelopes: list[dict[str, Any]] = []
    for first in range(0, tokens, group):
        burst = [(n, BURST[i % len(BURST)]) for n in range(first, min(first + group, tokens))
                 for i in range(per_token[n])]
        rng.shuffle(burst)
        for n, code in burst:
            notification = subscription_notification(f"bench-token-{n:06d}", code, now)
            envelopes.append(push_envelope(notification, f"bench-{len(envelopes):08d}"))
    return envelopes


def wait_done(database_url: str, pushes: int, timeout: float) -> tuple[float, float]:
    """When every notification was processed, and when every acknowledgement was sent."""
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    deadline = time.perf_counter() + timeout
    processed_at = None
    try:
        while time.perf_counter() < deadline:
            with sessions() as session:
                done = session.scalar(select(func.count()).select_from(InboxEntry)
                                      .where(InboxEntry.status != "pending"))
                open_acks = session.scalar(select(func.count()).select_from(Acknowledgement)
                                           .where(Acknowledgement.acknowledged_at.is_(None)))
            if processed_at is None and done == pushes:
                processed_at = time.perf_counter()
            if processed_at is not None and open_acks == 0:
                return processed_at, time.perf_counter()
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise TimeoutError(f"{done} of {pushes} processed, {open_acks} acknowledgements open")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pushes", type=int, default=3000)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--group", type=int, default=25,
                        help="tokens whose notifications arrive interleaved in one burst")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.03,
                        help="seconds the fake Play API takes per call")
    parser.add_argument("--calls-per-minute", type=int, default=1200)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-google-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    migrate(database_url)
    envelopes = pushes(args.pushes, args.tokens, args.group)
    with FakePlay(package_name=PACKAGE, latency=args.latency) as fake, OidcIssuer() as issuer:
        expiry = datetime.now(UTC) + timedelta(days=30)
        for n in range(args.tokens):
            fake.subscriptions[f"bench-token-{n:06d}"] = subscription_purchase(
                expiry_time=expiry, account_id=f"acct-{n}")
        key = write_service_account(workdir / "sa.json", service_account_pem(), fake.token_uri)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
        env.update({
            "RECONCILE_DATABASE_URL": database_url,
            "RECONCILE_ADMIN_TOKEN": "bench-admin-token",
            "RECONCILE_GOOGLE_PACKAGE_NAME": PACKAGE,
            "RECONCILE_GOOGLE_SERVICE_ACCOUNT_FILE": str(key),
            "RECONCILE_GOOGLE_API_ENDPOINT": fake.url,
            "RECONCILE_GOOGLE_PUSH_AUDIENCE": AUDIENCE,
            "RECONCILE_GOOGLE_PUSH_SERVICE_ACCOUNT": PUSH_ACCOUNT,
            "RECONCILE_GOOGLE_OIDC_CERTS_URL": issuer.certs_url,
            "RECONCILE_GOOGLE_CALLS_PER_MINUTE": str(args.calls_per_minute),
            "RECONCILE_WORKER_POLL_SECONDS": "0.05",
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep),
        })
        process, url = start_service(env, log=workdir / "service.log")
        try:
            began = time.perf_counter()
            # One token for the run: Pub/Sub also reuses its push token until it expires.
            bearer = {"Authorization": f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}"}
            bodies = [json.dumps(envelope).encode() for envelope in envelopes]
            latencies, posting = post_concurrently([url], "/webhooks/google", bodies,
                                                   args.clients, bearer)
            processed, acknowledged = wait_done(database_url, len(envelopes), timeout=1800)
        finally:
            process.terminate()
            process.wait(30)
        fake.assert_clean()
        reads = len(fake.calls_named("subscriptionsv2.get"))
        acks = len(fake.calls_named("subscriptions.acknowledge"))
        busiest = fake.max_calls_in_window(60.0)
        calls = len(fake.calls)
        certs_fetches = issuer.fetches

    figures: dict[str, Any] = {
        "pushes": len(envelopes),
        "distinct_tokens": args.tokens,
        "clients": args.clients,
        "play_latency_ms": args.latency * 1000,
        "accepted_per_second": len(envelopes) / posting,
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "all_processed_seconds": processed - began,
        "all_acknowledged_seconds": acknowledged - began,
        "subscriptionsv2_get_calls": reads,
        "reads_per_notification": reads / len(envelopes),
        "acknowledge_calls": acks,
        "play_calls_total": calls,
        "play_calls_per_notification": calls / len(envelopes),
        "configured_calls_per_minute": args.calls_per_minute,
        "max_calls_in_any_60s": busiest,
        "rate_respected": busiest <= args.calls_per_minute,
        "oidc_certificate_fetches": certs_fetches,
    }
    for name, value in figures.items():
        print(f"{name:>29}: {value:.2f}" if isinstance(value, float) else f"{name:>29}: {value}")
    return figures


if __name__ == "__main__":
    main()
