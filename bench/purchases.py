"""Purchase submissions: POST /v1/purchases with Apple signed transactions, verified offline.

Starts `reconcile serve` (no App Store Server API: the offline path), posts N distinct signed
transactions of N accounts with C keep-alive clients, and compares the rate with verifying the
same transactions naively with the library's `SignedDataVerifier`, measured just before and
just after the run and averaged (a shared machine's speed drifts).

    python -m bench.purchases --purchases 2000 --clients 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier

from bench.load import percentile, post_concurrently
from reconcile.db import migrate
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import BUNDLE_ID
from tests.support.process import service_env, start_service, stop_service
from tests.support.purchases import APP_TOKEN, CATALOG

DAY = 86_400_000


def transactions(ca: AppleTestCA, count: int) -> list[str]:
    """`count` signed subscription transactions, each a new customer's."""
    now = int(time.time() * 1000)
    return [ca.sign({
        "transactionId": f"3{n:015d}", "originalTransactionId": f"3{n:015d}",
        "bundleId": BUNDLE_ID, "productId": "com.example.phone.monthly",
        "purchaseDate": now - 60_000, "originalPurchaseDate": now - 60_000,
        "expiresDate": now + 30 * DAY, "quantity": 1, "type": "Auto-Renewable Subscription",
        "inAppOwnershipType": "PURCHASED", "environment": "Sandbox", "signedDate": now,
        "price": 9990, "currency": "USD", "transactionReason": "PURCHASE",
    }) for n in range(count)]


def naive_rate(ca: AppleTestCA, signed: list[str]) -> float:
    verifier = SignedDataVerifier([ca.root_der], False, Environment.SANDBOX, BUNDLE_ID)
    started = time.perf_counter()
    for jws in signed:
        verifier.verify_and_decode_signed_transaction(jws)
    return len(signed) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--purchases", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-purchases-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    migrate(database_url)
    ca = AppleTestCA.create("Bench")
    root = workdir / "root.der"
    root.write_bytes(ca.root_der)
    signed = transactions(ca, args.purchases)
    bodies = [json.dumps({"account_id": f"acct-{n}", "channel": "apple",
                          "signed_transaction": jws}).encode() for n, jws in enumerate(signed)]
    sample = signed[: min(500, len(signed))]
    naive_before = naive_rate(ca, sample)
    env = service_env(database_url, root, RECONCILE_APP_TOKEN=APP_TOKEN,
                      RECONCILE_CATALOG_FILE=str(CATALOG))
    process, url = start_service(env, log=workdir / "serve.log")
    try:
        latencies, wall = post_concurrently([url], "/v1/purchases", bodies, args.clients,
                                            {"Authorization": f"Bearer {APP_TOKEN}"})
    finally:
        stop_service(process)
    naive = (naive_before + naive_rate(ca, sample)) / 2
    rate = len(bodies) / wall
    figures: dict[str, Any] = {
        "purchases": len(bodies), "clients": args.clients,
        "submitted_per_second": rate, "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000, "naive_verify_per_second": naive,
        "ratio_to_naive": rate / naive,
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value:.2f}" if isinstance(value, float) else f"{key:>24}: {value}")
    return figures


if __name__ == "__main__":
    main()
