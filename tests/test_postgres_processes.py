"""Two real service processes on one PostgreSQL database, one killed mid-burst."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from reconcile.models import InboxEntry, SubscriptionEvent
from tests.conftest import ADMIN_TOKEN
from tests.support.apple_burst import story
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.process import service_env, start_service, stop_service

pytestmark = pytest.mark.slow

SHARED = 30  # subscriptions whose notifications go to both processes
ONLY_B = 10  # subscriptions whose notifications go only to the process that gets killed


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL: set RECONCILE_TEST_POSTGRES_URL (scripts/postgres.sh)")
    return database_url


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_engine(postgres_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str


@pytest.fixture
def services(postgres_url: str, apple_root_file: Path,
             tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """Two `reconcile serve` processes sharing the database, each with its own worker."""
    env = service_env(postgres_url, apple_root_file,
                      RECONCILE_ADMIN_TOKEN=ADMIN_TOKEN,
                      RECONCILE_WORKER_POLL_SECONDS="0.05",
                      # Small batches interleave the two workers more finely.
                      RECONCILE_WORKER_BATCH_SIZE="4",
                      # A dead worker's claimed entries go back to the others after this.
                      RECONCILE_WORKER_LEASE_SECONDS="2")
    started: list[Service] = []
    try:
        for name in ("a", "b"):
            started.append(Service(*start_service(env, log=tmp_path / f"{name}.log")))
        yield started[0], started[1]
    finally:
        for service in started:
            stop_service(service.process)


def post(client: httpx.Client, signed: str) -> bool:
    """True when the service answered 200 (it has the notification durably)."""
    try:
        return client.post("/webhooks/apple", json={"signedPayload": signed}).status_code == 200
    except httpx.TransportError:
        return False


def wait_processed(engine: Engine, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while connection.scalar(
            select(func.count()).select_from(InboxEntry).where(InboxEntry.status == "pending")
        ):
            assert time.monotonic() < deadline, "the surviving worker did not drain the inbox"
            connection.rollback()
            time.sleep(0.1)


def test_burst_to_two_processes_one_killed_applies_each_notification_once(
    services: tuple[Service, Service], engine: Engine, apple_ca: AppleTestCA
) -> None:
    """Every notification a process answered 200 is applied exactly once despite a SIGKILL."""
    a, b = services
    start = datetime.now(UTC) - timedelta(days=31)
    stories = [story(n, start) for n in range(SHARED + ONLY_B)]
    signed = {note["notificationUUID"]: sign_notification(apple_ca, note)
              for s in stories for note in s.notifications}
    shared, only_b = stories[:SHARED], stories[SHARED:]
    # Each shared notification goes to both processes, plus once more (a store retry) to
    # either; each B-only notification goes to B twice. All in a shuffled, concurrent burst.
    chooser = random.Random(6)
    sends = [(target, uuid) for s in shared for uuid in (n["notificationUUID"]
             for n in s.notifications) for target in ("a", "b", chooser.choice("ab"))]
    sends += [("b", n["notificationUUID"]) for s in only_b for n in s.notifications] * 2
    chooser.shuffle(sends)

    accepted: dict[str, set[str]] = {"a": set(), "b": set()}
    refused_by_b_after_kill = 0
    with (httpx.Client(base_url=a.url, timeout=30) as to_a,
          httpx.Client(base_url=b.url, timeout=30) as to_b,
          ThreadPoolExecutor(8) as pool):
        clients = {"a": to_a, "b": to_b}
        futures = {pool.submit(post, clients[target], signed[uuid]): (target, uuid)
                   for target, uuid in sends}
        for done, future in enumerate(as_completed(futures), start=1):
            target, uuid = futures[future]
            if future.result():
                accepted[target].add(uuid)
            elif target == "b" and b.process.returncode is not None:
                refused_by_b_after_kill += 1
            if done == len(sends) // 2:
                b.process.send_signal(signal.SIGKILL)
                b.process.wait(10)
    assert b.process.returncode == -9
    assert accepted["b"], "B accepted nothing before it was killed"
    assert refused_by_b_after_kill, "B was killed after the burst, not during it"
    assert accepted["a"] == {n["notificationUUID"] for s in shared for n in s.notifications}

    wait_processed(engine)
    with engine.connect() as connection:
        inbox = {row.notification_id: row for row in connection.execute(
            select(InboxEntry.id, InboxEntry.notification_id, InboxEntry.status,
                   InboxEntry.attempts, InboxEntry.error))}
        events = dict(connection.execute(
            select(SubscriptionEvent.inbox_id, func.count()).group_by(SubscriptionEvent.inbox_id)
        ).tuples().all())
    assert accepted["a"] | accepted["b"] <= set(inbox)
    assert {(row.status, row.attempts, row.error) for row in inbox.values()} == {
        ("processed", 1, None)
    }
    assert events == {row.id: 1 for row in inbox.values()}

    subscriptions = to_states(a)
    recorded = {s.original_transaction_id for s in stories
                if any(n["notificationUUID"] in inbox for n in s.notifications)}
    assert set(subscriptions) == recorded
    for s in shared:
        assert subscriptions[s.original_transaction_id] == s.expected
    for s in only_b:
        if all(n["notificationUUID"] in accepted["b"] for n in s.notifications):
            assert subscriptions[s.original_transaction_id] == s.expected
    metrics = httpx.get(f"{a.url}/metrics").text
    assert 'status="pending"' not in metrics
    assert 'status="failed"' not in metrics


def to_states(process: Service) -> dict[str, dict[str, object]]:
    """Each subscription's state fields that `Story.expected` names, by store id."""
    response = httpx.get(f"{process.url}/v1/subscriptions", params={"limit": 500},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    keys = story(0, datetime.now(UTC)).expected.keys()
    return {item["store_id"]: {key: item[key] for key in keys}
            for item in response.json()["items"]}
