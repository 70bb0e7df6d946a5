"""`RECONCILE_WORKER_JOBS`: which background jobs a process runs, e.g. the webhook sender in a
process of its own beside `serve`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from reconcile.config import WORKER_JOBS, Settings
from reconcile.services import build_services
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.process import service_env, start_service, start_worker, stop_service
from tests.support.receiver import Receiver, running_receiver

ADMIN = {"Authorization": "Bearer process-admin-token"}


def test_every_job_has_a_name_the_setting_knows(
    make_google_settings: Callable[..., Settings], apple_api_settings: dict[str, Any]
) -> None:
    """With both channels and both store APIs configured, the jobs built are exactly the names
    the setting accepts: a new job cannot be left out of it."""
    services = build_services(make_google_settings(**apple_api_settings,
                                                   reconcile_interval_minutes=60))
    try:
        assert sorted(job.name for job in services.jobs) == sorted(WORKER_JOBS)
    finally:
        services.close()


@pytest.mark.parametrize(("jobs", "expected"), [
    ([], set(WORKER_JOBS)),
    (["webhook-delivery"], {"webhook-delivery"}),
    (["inbox", "reconcile"], {"inbox", "reconcile"}),
    (["-webhook-delivery"], set(WORKER_JOBS) - {"webhook-delivery"}),
    (["-webhook-delivery", "-reconcile"], set(WORKER_JOBS) - {"webhook-delivery", "reconcile"}),
])
def test_the_worker_runs_the_jobs_named(
    make_google_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    jobs: list[str], expected: set[str],
) -> None:
    services = build_services(make_google_settings(
        **apple_api_settings, reconcile_interval_minutes=60, worker_jobs=jobs))
    try:
        assert {job.name for job in services.worker().jobs} == expected
    finally:
        services.close()


@pytest.mark.parametrize(("value", "message"), [
    ("inbox,sender", "unknown worker job(s) sender: expected a comma list of inbox,"),
    ("inbox,-reconcile", "either all named (run only those) or all prefixed with '-'"),
])
def test_a_bad_job_list_is_refused(value: str, message: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILE_WORKER_JOBS", value)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(_env_file=None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def _renewal(n: int) -> dict[str, Any]:
    start = 1_790_000_000_000 + n * 1000
    return {
        "notificationType": "DID_RENEW", "notificationUUID": f"33333333-0000-4000-8000-{n:012d}",
        "signedDate": start,
        "data": {"status": 1, "transaction": {
            "originalTransactionId": f"66{n:06d}", "transactionId": f"67{n:06d}",
            "productId": "com.example.phone.monthly", "purchaseDate": start,
            "expiresDate": start + 30 * 86400_000, "type": "Auto-Renewable Subscription"}},
    }


def _processed(client: httpx.Client, ca: AppleTestCA, n: int) -> None:
    """Post an Apple notification and wait until `serve`'s worker has applied it."""
    posted = client.post("/webhooks/apple",
                         json={"signedPayload": sign_notification(ca, _renewal(n))})
    assert posted.status_code == 200, posted.text
    deadline = time.monotonic() + 60
    while not client.get("/v1/subscriptions", params={"store_id": f"66{n:06d}"},
                         headers=ADMIN).json()["items"]:
        assert time.monotonic() < deadline, "serve's worker never applied the notification"
        time.sleep(0.02)


@pytest.mark.slow
def test_the_sender_in_its_own_process(
    database_url: str, apple_root_file: Path, apple_ca: AppleTestCA, receiver: Receiver
) -> None:
    """`serve` without the sender and `reconcile worker` with only the sender: the events
    `serve` writes reach the endpoint, signed, through the other process, and `serve`'s own
    worker, running its other jobs, never attempts one."""
    env = service_env(database_url, apple_root_file, RECONCILE_WORKER_POLL_SECONDS="0.05")
    serve, url = start_service({**env, "RECONCILE_WORKER_JOBS": "-webhook-delivery"},
                               ready_within=120)
    sender = None
    try:
        made = httpx.post(f"{url}/v1/webhook-endpoints", json={"url": receiver.at("/hooks")},
                          headers=ADMIN, timeout=30)
        assert made.status_code == 201, made.text
        receiver.secrets["/hooks"] = [made.json()["secret"]]
        created = httpx.post(f"{url}/v1/portal/subscriptions", headers=ADMIN, timeout=30, json={
            "account_id": "acct-1", "product_id": "portal.pro.monthly",
            "expires_at": "2030-01-01T00:00:00Z", "auto_renew": True})
        assert created.status_code == 201, created.text
        with httpx.Client(base_url=url, timeout=30) as client:
            # Two worker rounds after the event (the worker runs its jobs in turn, the inbox
            # first): a sender in `serve` would have claimed the event's delivery by now.
            _processed(client, apple_ca, 1)
            _processed(client, apple_ca, 2)
            endpoint_id = made.json()["id"]
            pending = client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
                                 headers=ADMIN).json()["items"]
        assert pending
        assert {(d["status"], d["attempts"]) for d in pending} == {("pending", 0)}
        assert receiver.arrivals("/hooks") == []
        sender = start_worker({**env, "RECONCILE_WORKER_JOBS": "webhook-delivery"})
        delivered = receiver.wait_for("/hooks", len(pending), timeout=60)
        assert sorted(body["id"] for body in delivered) == sorted(d["event_id"] for d in pending)
    finally:
        if sender is not None:
            stop_service(sender)
        stop_service(serve)
