"""The worker: retries with backoff, gives up on what can never work, never blocks the rest."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from reconcile.channels.apple import Envelope
from reconcile.channels.apple_normalise import MalformedPayload
from reconcile.config import Settings
from reconcile.models import InboxEntry
from reconcile.outcomes import Normalised
from reconcile.services import build_services
from reconcile.worker import Processor
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import BUNDLE_ID, sign_notification
from tests.support.server import FakeClock, RunningApp


def renewal(n: int, *, original: str | None = "4000") -> dict[str, Any]:
    transaction: dict[str, Any] = {
        "transactionId": f"40{n}", "productId": "com.example.phone.monthly",
        "purchaseDate": 1_790_000_000_000, "expiresDate": 1_792_000_000_000,
        "type": "Auto-Renewable Subscription",
    }
    if original:
        transaction["originalTransactionId"] = original
    return {"notificationType": "DID_RENEW",
            "notificationUUID": f"44444444-0000-4000-8000-{n:012d}",
            "signedDate": 1_790_000_000_000 + n, "data": {"status": 1, "transaction": transaction}}


@dataclass
class Flaky:
    """A stand-in processor (registered like any other) that fails its first `failures` calls."""

    inner: Processor
    failures: int
    channel: str = "apple"

    def normalise(
        self, entries: Sequence[InboxEntry], now: datetime
    ) -> Sequence[Normalised | Exception]:
        if self.failures > 0:
            self.failures -= 1
            return [ConnectionError("store unreachable")] * len(entries)
        return self.inner.normalise(entries, now)


def post(app: RunningApp, ca: AppleTestCA, body: dict[str, Any]) -> None:
    signed = sign_notification(ca, body)
    response = app.client.post("/webhooks/apple", json={"signedPayload": signed})
    assert response.status_code == 200


def inbox(app: RunningApp) -> list[InboxEntry]:
    with app.services.sessions() as session:
        return list(session.scalars(select(InboxEntry).order_by(InboxEntry.id)))


def test_unprocessable_is_failed_and_does_not_block(app: RunningApp, apple_ca: AppleTestCA) -> None:
    """A verified payload missing a required field is marked failed; the next one is applied."""
    post(app, apple_ca, renewal(1, original=None))
    post(app, apple_ca, renewal(2))
    app.drain()
    bad, good = inbox(app)
    assert (bad.status, good.status) == ("failed", "processed")
    assert "originalTransactionId" in (bad.error or "")
    assert len(app.client.get("/v1/subscriptions").json()["items"]) == 1


def test_nested_jws_are_verified_by_the_worker(app: RunningApp, apple_ca: AppleTestCA) -> None:
    """The outer payload is verified before it is recorded, the transaction inside it when it is
    processed: a forged transaction in an authentic notification fails and changes no state."""
    forged = renewal(1, original="5000")
    transaction = forged["data"].pop("transaction")
    transaction.update(environment="Sandbox", bundleId=BUNDLE_ID, signedDate=forged["signedDate"])
    forged["data"]["signedTransactionInfo"] = AppleTestCA.create("Impostor").sign(transaction)
    post(app, apple_ca, forged)
    post(app, apple_ca, renewal(2))
    app.drain()
    bad, good = inbox(app)
    assert (bad.status, good.status) == ("failed", "processed")
    assert "VERIFICATION_FAILURE" in (bad.error or "")
    items = app.client.get("/v1/subscriptions").json()["items"]
    assert len(items) == 1
    assert "4000" in json.dumps(items)
    assert "5000" not in json.dumps(items)


@pytest.mark.parametrize("claims", [
    {"notificationType": 5}, {"signedDate": "yesterday"}, {"data": []},
    {"data": {"status": "1"}}, {"data": {"signedTransactionInfo": {"not": "a JWS"}}},
])
def test_recorded_payload_of_the_wrong_shape_is_malformed(
    apple_ca: AppleTestCA, claims: dict[str, Any]
) -> None:
    """Decoding a recorded payload checks every field it reads: a wrong type can never be
    processed (it is marked failed), rather than crashing or being read as something else."""
    entry = InboxEntry(channel="apple", notification_id="n", environment="sandbox",
                       payload=apple_ca.sign({"notificationType": "DID_RENEW", **claims}))
    with pytest.raises(MalformedPayload):
        Envelope.recorded(entry)


def test_transient_failure_retried_with_backoff(
    app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock
) -> None:
    """A transient fault leaves the entry pending until its backoff has passed, then it applies."""
    app.services.processors["apple"] = Flaky(app.services.processors["apple"], failures=1)
    post(app, apple_ca, renewal(1))
    app.drain()
    [entry] = inbox(app)
    assert (entry.status, entry.attempts) == ("pending", 1)
    assert entry.error == "ConnectionError: store unreachable"
    assert entry.next_attempt_at > clock.now
    app.drain()
    assert inbox(app)[0].status == "pending"  # not due yet: no busy retry loop
    clock.advance(seconds=5)
    app.drain()
    [entry] = inbox(app)
    assert (entry.status, entry.attempts, entry.error) == ("processed", 2, None)


def test_gives_up_after_max_attempts(
    app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock
) -> None:
    """After the configured number of attempts a still-failing entry is marked failed."""
    app.services.processors["apple"] = Flaky(app.services.processors["apple"], failures=10**6)
    post(app, apple_ca, renewal(1))
    for _ in range(app.services.settings.worker_max_attempts):
        app.drain()
        clock.advance(hours=2)
    [entry] = inbox(app)
    assert entry.status == "failed"
    assert entry.attempts == app.services.settings.worker_max_attempts


def test_expired_lease_is_taken_over(
    app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock
) -> None:
    """Work claimed by a worker that died is picked up by another once the lease runs out."""
    post(app, apple_ca, renewal(1))
    with app.services.sessions() as session, session.begin():
        row = session.scalars(select(InboxEntry)).one()
        row.lease_owner = "dead-worker"
        row.lease_until = clock.now.replace(year=clock.now.year + 1)
    app.drain()
    assert inbox(app)[0].status == "pending"
    with app.services.sessions() as session, session.begin():
        session.scalars(select(InboxEntry)).one().lease_until = clock.now
    clock.advance(seconds=1)
    app.drain()
    assert inbox(app)[0].status == "processed"


@dataclass
class Rounds:
    """A job registered like any other that only counts the worker's rounds."""

    name: str = "rounds"
    done: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def run_once(self, now: datetime) -> int:
        self.done.release()
        return 0


def test_recorded_work_wakes_the_worker(
    make_settings: Callable[..., Settings], clock: FakeClock, apple_ca: AppleTestCA
) -> None:
    """A notification recorded by this process is processed at once, not at the next poll."""
    services = build_services(make_settings(worker_poll_seconds=600), clock=clock)
    rounds = Rounds()
    services.jobs.append(rounds)
    worker = services.worker()
    worker.start()
    try:
        assert rounds.done.acquire(timeout=10)  # a round found nothing: the worker now waits
        assert services.apple is not None
        verified = services.apple.verify(sign_notification(apple_ca, renewal(1)))
        assert services.intake.submit(verified.incoming(), clock()).result(10)
        assert rounds.done.acquire(timeout=10)  # the next round came long before the poll
        with services.sessions() as session:
            assert session.scalars(select(InboxEntry.status)).all() == ["processed"]
    finally:
        worker.stop()
        services.close()
