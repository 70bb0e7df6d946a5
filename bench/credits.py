"""Credits benchmark: debits per second over real HTTP, and balance reads on a long ledger.

Starts `reconcile serve` on a fresh database (SQLite by default, or `--postgres` for a
throwaway PostgreSQL server via scripts/postgres.sh), seeds credits through the ledger's own
functions, then:
- `--debits` debits of 1 credit from `--clients` concurrent clients on ONE account (every
  debit contends for the same balance row), and again spread over `--accounts` accounts;
  debits per second and answer latency p50/p99;
- `--reads` sequential `GET /v1/accounts/{id}/credits` for an account with `--entries` ledger
  entries (the balance is one row, never a sum), latency p50/p99.

    python -m bench.credits                       # SQLite, small default run
    python -m bench.credits --postgres --debits 4000 --entries 100000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, insert

from bench.apple_ingest_pg import throwaway_postgres
from bench.load import percentile, send_concurrently
from reconcile.catalog.file import load_catalog
from reconcile.credits.models import CreditBalance, CreditEntry
from reconcile.db import make_engine, make_sessionmaker, migrate, transaction
from reconcile.outcomes import PurchaseSeen
from reconcile.state import Channel, Stamp
from reconcile.store_records import record_purchase
from tests.support.process import start_service, stop_service

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "fixtures" / "catalog" / "phone.toml"
TOKEN = "bench-admin-token"
PACK = "com.example.phone.credits.500"


def seed(url: str, accounts: int, per_account: int, long_entries: int) -> None:
    """Credits for every account (portal purchases through the writer), and one account with a
    long history written in bulk (its balance row kept equal to the entries' sum)."""
    catalog = load_catalog(CATALOG)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        for n in range(accounts):
            seen = PurchaseSeen(channel=Channel.PORTAL, store_id=f"bench-{n}",
                                environment="production", product_id=PACK, kind="consumable",
                                stamp=Stamp(now, str(n)), account_id=f"acct-{n:05d}",
                                quantity=max(1, per_account // 500 + 1))
            record_purchase(session, seen, now, catalog)
    entries = cast(Table, CreditEntry.__table__)
    batch = 10_000
    with transaction(sessions) as session:
        for start in range(0, long_entries, batch):
            rows = [{"account_id": "acct-long", "kind": "grant", "amount": 1,
                     "balance_after": start + i + 1, "reference": f"seed-{start + i}",
                     "created_at": now} for i in range(min(batch, long_entries - start))]
            session.execute(insert(entries), rows)
        session.add(CreditBalance(account_id="acct-long", balance=long_entries,
                                  granted=long_entries, used=0, adjusted=0, clawed_back=0,
                                  updated_at=now))
    engine.dispose()


def debit_concurrently(url: str, accounts: list[str], count: int, clients: int,
                       label: str) -> tuple[list[float], float]:
    """`count` debits of 1 with `clients` threads on kept-alive connections; every answer
    must be 201 (a refusal means the seed was too small: the run measures nothing)."""
    rng = random.Random(5)
    requests = [
        ("POST", f"/v1/accounts/{rng.choice(accounts)}/credits/debits",
         json.dumps({"amount": 1, "idempotency_key": f"{label}-{n}"}).encode())
        for n in range(count)
    ]
    return send_concurrently([url], requests, clients, {"Authorization": f"Bearer {TOKEN}"},
                             expect=201)


def read_balances(url: str, account: str, reads: int) -> list[float]:
    split = urlsplit(url)
    connection = http.client.HTTPConnection(split.hostname or "127.0.0.1", split.port,
                                            timeout=60)
    latencies = []
    for _ in range(reads):
        began = time.perf_counter()
        connection.request("GET", f"/v1/accounts/{account}/credits",
                           headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - began)
        if response.status != 200:
            raise RuntimeError(f"balance read answered {response.status}")
    connection.close()
    return latencies


def summary(latencies: list[float], seconds: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }
    if seconds is not None:
        out["per_second"] = round(len(latencies) / seconds, 1)
    return out


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    migrate(url)
    seed(url, args.accounts, args.debits, args.entries)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
    env.update({"RECONCILE_DATABASE_URL": url, "RECONCILE_ADMIN_TOKEN": TOKEN,
                "RECONCILE_CATALOG_FILE": str(CATALOG),
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])})
    process, base = start_service(env)
    try:
        one, one_s = debit_concurrently(base, ["acct-00000"], args.debits, args.clients, "one")
        many, many_s = debit_concurrently(
            base, [f"acct-{n:05d}" for n in range(args.accounts)], args.debits, args.clients,
            "many")
        reads = read_balances(base, "acct-long", args.reads)
    finally:
        stop_service(process)
    return {
        "database": url.split(":", 1)[0],
        "clients": args.clients,
        "debits_one_account": summary(one, one_s),
        f"debits_{args.accounts}_accounts": summary(many, many_s),
        f"balance_read_{args.entries}_entries": summary(reads),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postgres", action="store_true",
                        help="a throwaway PostgreSQL server instead of an SQLite file")
    parser.add_argument("--database-url", help="an empty database of your own")
    parser.add_argument("--debits", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        if args.database_url:
            url = args.database_url
        elif args.postgres:
            url = stack.enter_context(throwaway_postgres())
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-credits-"))
            url = f"sqlite:///{folder}/credits.db"
        result = run(url, args)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
