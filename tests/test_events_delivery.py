"""Webhook delivery to a real receiver: signed (verified with `standardwebhooks`), retried on
the schedule, in order per account, a dead endpoint never delaying another, 410 disabling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconcile.config import Settings
from reconcile.notify.delivery import DeliveryJob
from reconcile.services import build_services
from tests.support.policy import portal_subscription
from tests.support.purchases import CATALOG
from tests.support.receiver import Receiver, running_receiver
from tests.support.server import FakeClock, RunningApp, serve_in_thread

APP_TOKEN = "test-app-token"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def shop(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[RunningApp]:
    """The service with the test catalog, retries after 5 s and 30 s, a 1 s timeout."""
    services = build_services(make_settings(
        catalog_file=CATALOG, app_token=APP_TOKEN, webhook_retry_seconds=[5, 30],
        webhook_timeout_seconds=1, webhook_endpoint_concurrency=2), clock=clock)
    with serve_in_thread(services, "test-admin-token") as running:
        yield running
    services.close()


def sender(app: RunningApp) -> DeliveryJob:
    [job] = [job for job in app.services.jobs if isinstance(job, DeliveryJob)]
    return job


def send(app: RunningApp, rounds: int = 20) -> None:
    """Run the sender until nothing more is due now, waiting for each round's outcomes."""
    job = sender(app)
    for _ in range(rounds):
        handed = job.run_once(app.services.clock())
        job.wait(10)
        if handed == 0:
            return


def endpoint(app: RunningApp, receiver: Receiver, path: str, **body: Any) -> dict[str, Any]:
    response = app.client.post("/v1/webhook-endpoints", json={"url": receiver.at(path), **body})
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    receiver.secrets[path] = [made["secret"]]
    return made


def deliveries(app: RunningApp, endpoint_id: str, **params: str) -> list[dict[str, Any]]:
    response = app.client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_each_event_arrives_signed_with_the_standard_headers(
    shop: RunningApp, receiver: Receiver
) -> None:
    """A portal subscription's events reach the endpoint as the feed shows them, with
    `webhook-id` the event id and a signature the standardwebhooks package accepts."""
    made = endpoint(shop, receiver, "/hooks")
    assert made["secret"].startswith("whsec_")
    assert made["enabled"] is True
    portal_subscription(shop, "acct-1", expires_at="2026-12-01T12:00:00Z")
    send(shop)
    arrived = receiver.arrivals("/hooks")
    assert [r.event["type"] for r in arrived] == [
        "subscription.started", "entitlement.granted", "entitlement.granted"]
    for item in arrived:
        assert item.verified_with == [made["secret"]]
        assert item.headers["webhook-id"] == item.event["id"]
        assert item.headers["webhook-signature"].startswith("v1,")
        feed = shop.client.get(f"/v1/events/{item.event['id']}").json()
        assert item.event == feed
    assert [d["status"] for d in deliveries(shop, made["id"])] == ["delivered"] * 3
    assert deliveries(shop, made["id"])[0]["last_status_code"] == 200


def test_failures_are_retried_on_the_schedule_then_failed(
    shop: RunningApp, receiver: Receiver, clock: FakeClock
) -> None:
    """A 500 is tried again after 5 s and 30 s; after the last the delivery is `failed`,
    with its attempts, status code and error listed."""
    made = endpoint(shop, receiver, "/down", event_types=["subscription.started"])
    receiver.behaviour["/down"] = "fail"
    portal_subscription(shop, "acct-1")
    send(shop)
    [item] = deliveries(shop, made["id"])
    assert (item["status"], item["attempts"], item["last_status_code"]) == ("pending", 1, 500)
    clock.advance(seconds=4)
    send(shop)
    assert len(receiver.arrivals("/down")) == 1  # not due yet
    clock.advance(seconds=1)
    send(shop)
    assert deliveries(shop, made["id"])[0]["attempts"] == 2
    clock.advance(seconds=30)
    send(shop)
    [item] = deliveries(shop, made["id"])
    assert item == {**item, "status": "failed", "attempts": 3, "last_status_code": 500,
                    "last_error": "HTTP 500", "next_attempt_at": None, "delivered_at": None}
    assert len(receiver.arrivals("/down")) == 3
    retried = shop.client.post(
        f"/v1/webhook-endpoints/{made['id']}/deliveries/{item['event_id']}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "pending"
    receiver.behaviour["/down"] = "ok"
    send(shop)
    assert deliveries(shop, made["id"])[0]["status"] == "delivered"


def test_a_timeout_and_a_refused_connection_are_failed_attempts(
    shop: RunningApp, receiver: Receiver
) -> None:
    """No answer within the timeout, or nobody listening, is retried like a 500."""
    slow = endpoint(shop, receiver, "/slow", event_types=["subscription.started"])
    receiver.behaviour["/slow"] = 3.0
    closed = shop.client.post("/v1/webhook-endpoints", json={
        "url": "http://127.0.0.1:9/nobody", "event_types": ["subscription.started"]}).json()
    portal_subscription(shop, "acct-1")
    send(shop)
    [timed_out] = deliveries(shop, slow["id"])
    assert timed_out["status"] == "pending"
    assert timed_out["last_error"] == "no answer within 1 s"
    [refused] = deliveries(shop, closed["id"])
    assert refused["status"] == "pending"
    assert refused["last_status_code"] is None
    assert "ConnectError" in refused["last_error"]


def test_an_account_s_events_go_out_in_sequence_order(
    shop: RunningApp, receiver: Receiver, clock: FakeClock
) -> None:
    """While the first event of an account fails, its later events wait; another account's
    events do not; once it succeeds the rest follow in sequence order."""
    endpoint(shop, receiver, "/ordered")
    receiver.behaviour["/ordered"] = "fail"
    sub = portal_subscription(shop, "acct-1")
    shop.client.patch(f"/v1/portal/subscriptions/{sub['id']}", json={"auto_renew": False})
    send(shop)
    assert [r.event["sequence"] for r in receiver.arrivals("/ordered")] == [1]
    receiver.behaviour["/ordered"] = "ok"
    portal_subscription(shop, "acct-2")
    send(shop)
    assert {(e["account_id"], e["sequence"]) for e in receiver.delivered("/ordered")} == {
        ("acct-2", 1), ("acct-2", 2), ("acct-2", 3)}
    clock.advance(seconds=5)
    send(shop)
    mine = [e["sequence"] for e in receiver.delivered("/ordered") if e["account_id"] == "acct-1"]
    assert mine == [1, 2, 3, 4]


def test_a_failed_event_no_longer_holds_the_rest_back(
    make_settings: Callable[..., Settings], clock: FakeClock, receiver: Receiver
) -> None:
    """With no retries configured, a failed first event is `failed` and the next goes out."""
    services = build_services(make_settings(catalog_file=CATALOG, webhook_retry_seconds=[]),
                              clock=clock)
    with serve_in_thread(services, "test-admin-token") as app:
        made = endpoint(app, receiver, "/once")
        receiver.behaviour["/once"] = "fail"
        portal_subscription(app, "acct-1")
        send(app)
        assert [d["status"] for d in deliveries(app, made["id"])] == ["failed"] * 3
        assert len(receiver.arrivals("/once")) == 3
    services.close()


def test_a_dead_endpoint_never_delays_another(shop: RunningApp, receiver: Receiver) -> None:
    """One endpoint hangs on every request; the other still gets every event at once."""
    endpoint(shop, receiver, "/dead")
    endpoint(shop, receiver, "/alive")
    receiver.behaviour["/dead"] = "hang"
    for n in range(6):
        portal_subscription(shop, f"acct-{n}")
    job = sender(shop)
    for _ in range(30):
        job.run_once(shop.services.clock())
        if len(receiver.wait_for("/alive", 18, timeout=0.2)) >= 18:
            break
    assert len(receiver.delivered("/alive")) == 18
    assert len(receiver.arrivals("/dead")) <= 2  # its own cap of attempts in flight
    receiver.release.set()
    job.wait(10)


def test_a_410_disables_the_endpoint(shop: RunningApp, receiver: Receiver) -> None:
    """Gone means gone: the delivery fails and the endpoint is disabled, saying why."""
    made = endpoint(shop, receiver, "/gone", event_types=["subscription.started"])
    receiver.behaviour["/gone"] = "gone"
    portal_subscription(shop, "acct-1")
    send(shop)
    assert deliveries(shop, made["id"])[0]["status"] == "failed"
    shown = shop.client.get(f"/v1/webhook-endpoints/{made['id']}").json()
    assert shown["enabled"] is False
    assert "410" in shown["disabled_reason"]


def test_a_rotated_secret_signs_beside_the_new_one_for_24_hours(
    shop: RunningApp, receiver: Receiver, clock: FakeClock
) -> None:
    """After a rotation each delivery carries two signatures, each verifying with one secret;
    after 24 hours only the new one signs."""
    made = endpoint(shop, receiver, "/rotated", event_types=["subscription.started"])
    rotated = shop.client.post(f"/v1/webhook-endpoints/{made['id']}/rotate-secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_")
    assert new != made["secret"]
    receiver.secrets["/rotated"] = [made["secret"], new]
    portal_subscription(shop, "acct-1")
    send(shop)
    [first] = receiver.arrivals("/rotated")
    assert first.verified_with == [made["secret"], new]
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    clock.advance(hours=24, seconds=1)
    portal_subscription(shop, "acct-2")
    send(shop)
    assert receiver.arrivals("/rotated")[1].verified_with == [new]


def test_only_the_chosen_event_types_are_sent(shop: RunningApp, receiver: Receiver) -> None:
    """An endpoint with an event-type filter is owed only those events."""
    made = endpoint(shop, receiver, "/granted", event_types=["entitlement.granted"])
    portal_subscription(shop, "acct-1")
    send(shop)
    assert {e["type"] for e in receiver.delivered("/granted")} == {"entitlement.granted"}
    assert len(deliveries(shop, made["id"])) == 2


def test_metrics_show_events_deliveries_and_the_oldest_pending(
    shop: RunningApp, receiver: Receiver, clock: FakeClock
) -> None:
    """/metrics counts events by type and deliveries by outcome, and ages what waits."""
    made = endpoint(shop, receiver, "/m", event_types=["subscription.started"])
    receiver.behaviour["/m"] = "fail"
    portal_subscription(shop, "acct-1")
    send(shop)
    clock.advance(seconds=2)
    text = shop.client.get("/metrics").text
    assert 'reconcile_events_total{type="subscription.started"} 1.0' in text
    assert f'reconcile_webhook_deliveries{{endpoint="{made["id"]}",status="pending"}} 1.0' in text
    assert f'reconcile_webhook_oldest_pending_seconds{{endpoint="{made["id"]}"}} 2.0' in text
