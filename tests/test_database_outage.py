"""A real `reconcile serve` rides out its PostgreSQL server stopping mid-burst, and resumes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from reconcile.models import InboxEntry, SubscriptionEvent
from tests.conftest import ADMIN_TOKEN
from tests.support.apple_burst import story
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.postgres import POSTGRES_ENV, DedicatedServer
from tests.support.process import service_env, start_service, stop_service

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

STORIES = 30
GONE = "database unavailable ("
BACK = "database available again after"


@pytest.fixture
def server() -> Iterator[DedicatedServer]:
    """A PostgreSQL server of this test's own, since the test stops it."""
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"needs PostgreSQL server binaries (the suite's run with {POSTGRES_ENV})")
    server = DedicatedServer()
    try:
        yield server
    finally:
        server.close()


class Store:
    """Posts notifications as a store does: a 5xx or no answer is tried again shortly."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.refused = 0
        self.lock = threading.Lock()
        self.accepted: set[str] = set()

    def deliver(self, uuid: str, signed: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                answer = self.client.post("/webhooks/apple", json={"signedPayload": signed})
                if answer.status_code == 200:
                    with self.lock:
                        self.accepted.add(uuid)
                    return
                assert answer.status_code == 503, answer.text
            except httpx.TransportError:
                pass
            with self.lock:
                self.refused += 1
            time.sleep(0.2)  # the store's retry interval, not a wait for our clock


def wait_for(condition: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        assert time.monotonic() < deadline, f"timed out waiting for {condition}"
        time.sleep(0.05)


def test_a_database_outage_mid_burst_is_ridden_out(
    server: DedicatedServer, apple_root_file: Path, apple_ca: AppleTestCA, tmp_path: Path
) -> None:
    """While PostgreSQL is stopped: webhooks and /readyz 503, admin routes 503 "database
    unavailable" with Retry-After, /metrics answers with reconcile_database_up 0; the log has
    one line when the database went and one when it came back, no traceback; afterwards every
    accepted notification is applied exactly once, without a restart."""
    log = tmp_path / "serve.log"
    env = service_env(server.admin_url, apple_root_file, RECONCILE_ADMIN_TOKEN=ADMIN_TOKEN,
                      RECONCILE_WORKER_POLL_SECONDS="0.05",
                      # Entries claimed when the server went come back this soon after.
                      RECONCILE_WORKER_LEASE_SECONDS="2")
    process, url = start_service(env, log=log)
    admin = httpx.Client(base_url=url, timeout=10,
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    start = datetime.now(UTC) - timedelta(days=31)
    stories = [story(n, start) for n in range(STORIES)]
    signed = [(note["notificationUUID"], sign_notification(apple_ca, note))
              for s in stories for note in s.notifications]
    store = Store(url)
    try:
        deadline = time.monotonic() + 45
        with ThreadPoolExecutor(4) as pool:
            deliveries = [pool.submit(store.deliver, uuid, payload, deadline)
                          for uuid, payload in signed]
            wait_for("a third of the burst", lambda: len(store.accepted) >= len(signed) // 3)
            server.pause()
            wait_for("the outage in the log", lambda: GONE in log.read_text())
            during = admin.get("/v1/subscriptions")
            metrics = httpx.get(f"{url}/metrics", timeout=10)
            ready = httpx.get(f"{url}/readyz", timeout=10)
            # Long enough for several rounds of the worker's backoff.
            outage_ends = time.monotonic() + 3
            wait_for("the store to meet the outage",
                     lambda: store.refused >= 8 and time.monotonic() > outage_ends)
            server.resume()
            for delivery in deliveries:
                delivery.result()
        assert store.accepted == {uuid for uuid, _ in signed}

        assert (during.status_code, during.json()) == (503, {"detail": "database unavailable"})
        assert int(during.headers["Retry-After"]) > 0
        assert metrics.status_code == 200
        assert "reconcile_database_up 0.0" in metrics.text
        assert "process_resident_memory_bytes" in metrics.text
        assert ready.status_code == 503

        engine = create_engine(server.admin_url, poolclass=NullPool)

        def drained() -> bool:
            with engine.connect() as connection:
                return not connection.scalar(select(func.count()).select_from(InboxEntry)
                                             .where(InboxEntry.status == "pending"))

        wait_for("the worker to apply the rest", drained)
        with engine.connect() as connection:
            statuses = set(connection.scalars(select(InboxEntry.status)))
            events = dict(connection.execute(
                select(SubscriptionEvent.inbox_id, func.count())
                .group_by(SubscriptionEvent.inbox_id)).tuples().all())
            inbox_ids = set(connection.scalars(select(InboxEntry.id)))
        engine.dispose()
        assert statuses == {"processed"}
        assert events == {inbox_id: 1 for inbox_id in inbox_ids}
        listed = admin.get("/v1/subscriptions", params={"limit": 500})
        assert listed.status_code == 200
        keys = stories[0].expected.keys()
        states = {item["store_id"]: {key: item[key] for key in keys}
                  for item in listed.json()["items"]}
        assert states == {s.original_transaction_id: s.expected for s in stories}
        assert "reconcile_database_up 1.0" in httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        store.client.close()
        admin.close()
        stop_service(process)
    text = log.read_text()
    assert text.count(GONE) == 1, text[-4000:]
    assert text.count(BACK) == 1, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
