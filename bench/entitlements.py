"""Entitlement reads: GET /v1/accounts/{id}/entitlements against the framework's own ceiling.

Seeds N accounts (one subscription each over the three channels, every tenth also a
non-consumable purchase), starts `reconcile serve` with the fixture catalog and an app token,
then reads entitlements of random accounts with C keep-alive clients, beside a trivial endpoint
of the same server answering a constant JSON (`GET /healthz`) measured in the same run.

    python -m bench.entitlements --accounts 100000 --clients 16
    python -m bench.entitlements --database-url postgresql+psycopg://...   (an empty database)
    python -m bench.entitlements --client wrk --access-log off   (behind a proxy that logs)
"""

from __future__ import annotations

import argparse
import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench import wrk
from bench.load import get_concurrently, percentile
from reconcile.db import make_engine, migrate
from reconcile.models import Account, Purchase, StoreId, Subscription
from tests.support.apple_ca import AppleTestCA
from tests.support.process import service_env, start_service, stop_service
from tests.support.purchases import APP_TOKEN, CATALOG

PRODUCTS = {"apple": "com.example.phone.monthly", "google": "pro_monthly",
            "portal": "portal.pro.monthly"}


def seed(database_url: str, accounts: int) -> None:
    """`accounts` accounts in bulk: a subscription each, a purchase for every tenth."""
    migrate(database_url)
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    channels = list(PRODUCTS)
    with engine.begin() as connection:
        for start in range(0, accounts, 5000):
            subs: list[dict[str, Any]] = []
            ids: list[dict[str, Any]] = []
            purchases: list[dict[str, Any]] = []
            people: list[dict[str, Any]] = []
            for n in range(start, min(start + 5000, accounts)):
                channel = channels[n % 3]
                sub_id = f"sub_bench{n:09d}"
                store_id = f"{channel}-{n:09d}"
                subs.append({
                    "id": sub_id, "channel": channel, "environment": "production",
                    "store_id": store_id, "account_id": f"acct-{n}",
                    "product_id": PRODUCTS[channel], "renewal_product_id": PRODUCTS[channel],
                    # A steady state: nothing the worker would change at once (a subscription
                    # past its period is expired), so the run measures reads, not catch-up.
                    "status": "active" if n % 7 and n % 30 > 3 else "expired",
                    "auto_renew": n % 5 != 0,
                    "expires_at": now + timedelta(days=n % 30 - 3), "grace_expires_at": None,
                    "prepaid": False, "last_event_at": now, "clock": {}, "created_at": now,
                    "updated_at": now, "version": 1,
                })
                ids.append({"channel": channel, "store_id": store_id, "subscription_id": sub_id,
                            "created_at": now})
                people.append({"account_id": f"acct-{n}", "consumption_consent": False,
                               "credits_purchased": 0, "credits_used": 0, "updated_at": now})
                if n % 10 == 0:
                    purchases.append({
                        "id": f"pur_bench{n:09d}", "channel": "apple", "environment": "production",
                        "store_id": f"70{n:012d}", "account_id": f"acct-{n}",
                        "product_id": "com.example.phone.numberlock", "kind": "non_consumable",
                        "quantity": 1, "state": "purchased", "consumed": False, "clock": {},
                        "created_at": now, "updated_at": now,
                    })
            connection.execute(insert(Subscription), subs)
            connection.execute(insert(StoreId), ids)
            connection.execute(insert(Account), people)
            if purchases:
                connection.execute(insert(Purchase), purchases)
    if engine.dialect.name == "postgresql":
        # What autovacuum would do soon after a bulk load, done before the run instead of in it.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE subscriptions, store_ids, accounts, "
                                       "purchases")
    engine.dispose()


def measure(url: str, paths: list[str], clients: int, client: str = "python"
            ) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {APP_TOKEN}"}
    if client == "wrk":
        # A fixed time rather than a count: roughly what the Python client would take.
        return wrk.wrk_get(url, paths, clients, seconds=10, headers=headers)
    latencies, wall = get_concurrently(url, paths, clients, headers)
    return {"per_second": len(paths) / wall, "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--client", choices=["python", "wrk"], default="python",
                        help="load generator: Python threads, or `wrk` (Debian package), a C "
                             "client that leaves the cores to the service")
    parser.add_argument("--access-log", choices=["on", "off"], default="on",
                        help="RECONCILE_ACCESS_LOG of the service (default on, as the service)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-entitlements-"))
    database_url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    seed(database_url, args.accounts)
    root = workdir / "root.der"
    root.write_bytes(AppleTestCA.create("Bench").root_der)
    env = service_env(database_url, root, RECONCILE_APP_TOKEN=APP_TOKEN,
                      RECONCILE_CATALOG_FILE=str(CATALOG),
                      RECONCILE_ACCESS_LOG="true" if args.access_log == "on" else "false")
    process, url = start_service(env, log=workdir / "serve.log")
    rng = random.Random(7)
    try:
        warm = [f"/v1/accounts/acct-{rng.randrange(args.accounts)}/entitlements"
                for _ in range(2000)]
        get_concurrently(url, warm, args.clients, {"Authorization": f"Bearer {APP_TOKEN}"})
        ceiling = measure(url, ["/healthz"] * args.requests, args.clients, args.client)
        paths = [f"/v1/accounts/acct-{rng.randrange(args.accounts)}/entitlements"
                 for _ in range(args.requests)]
        reads = measure(url, paths, args.clients, args.client)
        ceiling_after = measure(url, ["/healthz"] * args.requests, args.clients, args.client)
    finally:
        stop_service(process)
    trivial = (ceiling["per_second"] + ceiling_after["per_second"]) / 2
    figures: dict[str, Any] = {
        "database": database_url.split(":")[0], "accounts": args.accounts, "client": args.client,
        "access_log": args.access_log,
        "clients": args.clients, "trivial_per_second": trivial,
        "trivial_p99_ms": max(ceiling["p99_ms"], ceiling_after["p99_ms"]),
        "entitlements_per_second": reads["per_second"],
        "entitlements_p50_ms": reads["p50_ms"], "entitlements_p99_ms": reads["p99_ms"],
        "share_of_ceiling": reads["per_second"] / trivial,
    }
    for key, value in figures.items():
        print(f"{key:>24}: {value:.2f}" if isinstance(value, float) else f"{key:>24}: {value}")
    return figures


if __name__ == "__main__":
    main()
