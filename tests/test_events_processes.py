"""Outbound events across real `reconcile serve` processes: a sender killed mid-delivery,
a dead endpoint beside a live one, and the feed while two processes write at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.process import service_env, start_service, stop_service
from tests.support.receiver import Receiver, running_receiver

ADMIN = {"Authorization": "Bearer process-admin-token"}
# Starting a service takes seconds; on a loaded shared machine, much longer.


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def _endpoint(url: str, receiver: Receiver, path: str) -> str:
    made = httpx.post(f"{url}/v1/webhook-endpoints", json={"url": receiver.at(path)},
                      headers=ADMIN, timeout=10)
    assert made.status_code == 201, made.text
    receiver.secrets[path] = [made.json()["secret"]]
    endpoint_id: str = made.json()["id"]
    return endpoint_id


def _portal(url: str, account: str, client: httpx.Client | None = None) -> dict[str, Any]:
    body = {"account_id": account, "product_id": "portal.pro.monthly",
            "expires_at": "2030-01-01T00:00:00Z", "auto_renew": True}
    response = (client or httpx).post(f"{url}/v1/portal/subscriptions", json=body,
                                      headers=ADMIN, timeout=30)
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


def _until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_a_sender_killed_mid_delivery_delivers_after_restart(
    database_url: str, apple_root_file: Path, receiver: Receiver
) -> None:
    """kill -9 while a delivery is in flight: the restarted service sends it again (at least
    once), and every event arrives, verified."""
    env = service_env(database_url, apple_root_file, RECONCILE_WEBHOOK_TIMEOUT_SECONDS="2",
                      RECONCILE_WORKER_LEASE_SECONDS="1")
    process, url = start_service(env, ready_within=120)
    try:
        _endpoint(url, receiver, "/hooks")
        receiver.behaviour["/hooks"] = "hang"
        _portal(url, "acct-1")
        in_flight = _until(lambda: [i for p, i in receiver.arrived if p == "/hooks"])
        assert in_flight, "the delivery never started"
        process.kill()
        process.wait(10)
    finally:
        stop_service(process)
    receiver.behaviour["/hooks"] = "ok"
    process, url = start_service(env, ready_within=120)
    try:
        _portal(url, "acct-2")
        delivered = receiver.wait_for("/hooks", 2, timeout=30)
    finally:
        stop_service(process)
    assert in_flight[0] in [event["id"] for event in delivered]
    assert {(e["account_id"], e["type"]) for e in delivered} == {
        ("acct-1", "subscription.started"), ("acct-2", "subscription.started")}
    assert all(r.verified_with for r in receiver.arrivals("/hooks"))


def test_a_dead_endpoint_leaves_the_other_on_time(
    database_url: str, apple_root_file: Path, receiver: Receiver
) -> None:
    """One endpoint hangs on every request; the other gets every event while the dead
    one's first attempts are still waiting for their answer (nothing queued behind them)."""
    env = service_env(database_url, apple_root_file, RECONCILE_WEBHOOK_TIMEOUT_SECONDS="90",
                      RECONCILE_WEBHOOK_ENDPOINT_CONCURRENCY="2")
    process, url = start_service(env, ready_within=120)
    try:
        _endpoint(url, receiver, "/dead")
        _endpoint(url, receiver, "/alive")
        receiver.behaviour["/dead"] = "hang"
        for n in range(10):
            _portal(url, f"acct-{n}")
        delivered = receiver.wait_for("/alive", 10, timeout=60)
        dead = [i for p, i in receiver.arrived if p == "/dead"]
        answered_dead = receiver.arrivals("/dead")
    finally:
        receiver.release.set()
        stop_service(process)
    assert len(delivered) == 10
    assert answered_dead == []  # its attempts were still hanging the whole time
    assert len(dead) <= 2  # the dead endpoint's own cap of attempts in flight


def test_the_feed_under_two_writing_processes(
    database_url: str, apple_root_file: Path
) -> None:
    """Two processes write events for the same accounts at once while a reader follows the
    feed: the reader gets every event exactly once, in position order, and each account's
    sequence runs 1..n without a gap."""
    env = service_env(database_url, apple_root_file)
    first, first_url = start_service(env, ready_within=120)
    second, second_url = start_service(env, ready_within=120)
    stop = threading.Event()
    followed: list[dict[str, Any]] = []
    cursor: list[str | None] = [None]

    def follow(client: httpx.Client) -> None:
        params: dict[str, str | int] = {"limit": 50}
        if cursor[0]:
            params["cursor"] = cursor[0]
        page = client.get(f"{first_url}/v1/events", params=params, headers=ADMIN).json()
        followed.extend(page["items"])
        if page["next_cursor"]:
            cursor[0] = page["next_cursor"]

    def reader() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                follow(client)
                stop.wait(0.05)  # a poller's pace, leaving the writers room

    def writer(url: str, n: int) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(8):
                sub = _portal(url, f"acct-{(n + i) % 3}", client)
                client.patch(f"{url}/v1/portal/subscriptions/{sub['id']}",
                             json={"auto_renew": False}, headers=ADMIN)

    try:
        threads = [threading.Thread(target=reader)] + [
            threading.Thread(target=writer, args=(url, n))
            for n, url in enumerate((first_url, second_url))]
        for thread in threads:
            thread.start()
        for thread in threads[1:]:
            thread.join(180)
        stop.set()
        threads[0].join(30)
        with httpx.Client(timeout=30) as client:
            follow(client)
            follow(client)
    finally:
        stop_service(first)
        stop_service(second)
    ids = [event["id"] for event in followed]
    assert len(ids) == len(set(ids)) == 32
    for account in ("acct-0", "acct-1", "acct-2"):
        sequences = [e["sequence"] for e in followed if e["account_id"] == account]
        assert sequences == list(range(1, len(sequences) + 1))
