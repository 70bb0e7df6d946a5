"""Concurrent debits on two real `reconcile serve` processes sharing one database."""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.process import service_env, start_service, stop_service
from tests.support.purchases import CATALOG

pytestmark = pytest.mark.slow

TOKEN = "process-admin-token"
ACCOUNT = "acct-concurrent"
OTHER = "acct-same-key"


@pytest.fixture
def two_services(database_url: str, apple_root_file: Path) -> Iterator[tuple[str, str]]:
    """Two service processes on the test's database (SQLite file or PostgreSQL)."""
    env = service_env(database_url, apple_root_file, RECONCILE_CATALOG_FILE=str(CATALOG))
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(2):
            process, url = start_service(env)
            processes.append(process)
            urls.append(url)
        yield urls[0], urls[1]
    finally:
        for process in processes:
            stop_service(process)


def post_all(
    urls: tuple[str, str], account: str, bodies: list[dict[str, object]]
) -> list[httpx.Response]:
    """Every body posted as a debit at the same moment, alternating between the processes."""
    start = threading.Barrier(len(bodies))
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def post(n: int) -> httpx.Response:
        with httpx.Client(base_url=urls[n % 2], headers=headers, timeout=60) as client:
            start.wait()
            return client.post(f"/v1/accounts/{account}/credits/debits", json=bodies[n])

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, range(len(bodies))))


def test_concurrent_debits_never_overdraw_and_one_key_debits_once(
    two_services: tuple[str, str],
) -> None:
    """50 debits of 10 at once against 100 credits, over two processes: exactly 10 succeed, 40
    are refused with 409, the ledger ends with 10 debits and a zero balance. Then ten requests
    with one key at once on another account: one 201, nine 200 with the same entry, one debit."""
    first, _ = two_services
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for account, reference in ((ACCOUNT, "web-concurrent"), (OTHER, "web-same-key")):
        bought = httpx.post(f"{first}/v1/portal/purchases", headers=headers, timeout=30, json={
            "account_id": account, "product_id": "credits_100", "reference": reference})
        assert bought.status_code == 201, bought.text
    answers = post_all(two_services, ACCOUNT, [{"amount": 10, "idempotency_key": f"call-{n}"}
                                               for n in range(50)])
    assert Counter(a.status_code for a in answers) == {201: 10, 409: 40}
    assert {a.json()["balance"] for a in answers if a.status_code == 409} <= set(range(0, 100, 10))
    credits = httpx.get(f"{first}/v1/accounts/{ACCOUNT}/credits", headers=headers).json()
    assert (credits["balance"], credits["used"]) == (0, 100)
    entries = httpx.get(f"{first}/v1/accounts/{ACCOUNT}/credits/entries", headers=headers,
                        params={"limit": 100}).json()["items"]
    assert Counter(e["kind"] for e in entries) == {"debit": 10, "grant": 1}
    assert sorted(e["balance_after"] for e in entries if e["kind"] == "debit") == list(
        range(0, 100, 10))

    same = post_all(two_services, OTHER, [{"amount": 7, "idempotency_key": "same"}] * 10)
    assert Counter(a.status_code for a in same) == {201: 1, 200: 9}
    assert len({a.json()["id"] for a in same}) == 1
    other = httpx.get(f"{first}/v1/accounts/{OTHER}/credits", headers=headers).json()
    assert (other["balance"], other["used"]) == (93, 7)
