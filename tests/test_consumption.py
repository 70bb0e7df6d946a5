"""Apple refund requests (CONSUMPTION_REQUEST): answered with consent only, DECLINE, on time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconcile.config import Settings
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN
from tests.fakes.appstore import FakeAppStore
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.policy import (
    CREDITS,
    NOW_MS,
    apple_note,
    apple_subscription,
    post_apple,
)
from tests.support.purchases import CATALOG
from tests.support.server import FakeClock, RunningApp, serve_in_thread

ACCOUNT = "5b0c8a2e-3333-4222-8333-000000000003"
HOUR_MS = 3_600_000
ANSWER = {"customerConsented": True, "sampleContentProvided": False,
          "deliveryStatus": "DELIVERED", "refundPreference": "DECLINE"}


def consumption_request(n: int, *, tid: str, signed_at: int = NOW_MS - HOUR_MS,
                        **kwargs: Any) -> dict[str, Any]:
    return apple_note(n, "CONSUMPTION_REQUEST", account=ACCOUNT, tid=tid, signed_at=signed_at,
                      consumptionRequestReason="UNINTENDED_PURCHASE", **kwargs)


def refund_requests(app: RunningApp) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = app.client.get("/v1/refund-requests").json()["items"]
    return items


def consent(app: RunningApp, given: bool = True) -> None:
    response = app.client.put(f"/v1/accounts/{ACCOUNT}/consent",
                              json={"consumption_data": given})
    assert response.status_code == 200


def test_with_consent_the_answer_asks_apple_to_decline(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """With consent one answer is sent: consented, delivered, no sample, DECLINE, no percentage
    for an auto-renewable; REFUND_DECLINED then records the outcome."""
    apple_subscription(apple_app, apple_ca, ACCOUNT)
    consent(apple_app)
    post_apple(apple_app, apple_ca, consumption_request(2, tid="7000000000000002"))
    assert fake_appstore.consumption_requests == [("7000000000000002", ANSWER)]
    assert [c.path for c in fake_appstore.calls] == [
        "/inApps/v2/transactions/consumption/7000000000000002"]
    [request] = refund_requests(apple_app)
    assert {k: request[k] for k in ("transaction_id", "account_id", "state", "answer",
                                    "requested_at", "deadline_at", "sent_at", "outcome",
                                    "reason")} == {
        "transaction_id": "7000000000000002", "account_id": ACCOUNT, "state": "sent",
        "answer": ANSWER, "requested_at": "2026-11-01T11:00:00Z",
        "deadline_at": "2026-11-01T23:00:00Z", "sent_at": "2026-11-01T12:00:00Z",
        "outcome": None, "reason": "UNINTENDED_PURCHASE"}
    post_apple(apple_app, apple_ca, apple_note(3, "REFUND_DECLINED", account=ACCOUNT,
                                               tid="7000000000000002"))
    assert refund_requests(apple_app)[0]["outcome"] == "declined"
    assert len(fake_appstore.calls) == 1


def test_without_consent_nothing_is_sent(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """Without consent the request is skipped with the reason, Apple is not called, and a
    refund Apple makes anyway is listed as unanswered."""
    apple_subscription(apple_app, apple_ca, ACCOUNT)
    consent(apple_app, False)
    post_apple(apple_app, apple_ca, consumption_request(2, tid="7000000000000002"))
    [request] = refund_requests(apple_app)
    assert request["state"] == "skipped"
    assert "not consented" in request["why"]
    post_apple(apple_app, apple_ca, apple_note(
        3, "REFUND", account=ACCOUNT, tid="7000000000000002", status=5,
        revoked_at=NOW_MS - 60_000))
    [refund] = apple_app.client.get("/v1/refunds").json()["items"]
    assert (refund["store_id"], refund["consumption_answer_sent"]) == ("7000000000000002", False)
    assert refund_requests(apple_app)[0]["outcome"] == "refunded"
    assert fake_appstore.calls == []


@pytest.fixture
def credits_app(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any], clock: FakeClock
) -> Iterator[RunningApp]:
    """The Apple service with the fixture catalog (its credit packs grant credits)."""
    services = build_services(make_settings(**apple_api_settings, apple_api_attempts=1,
                                            catalog_file=CATALOG), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


def use_credits(app: RunningApp, amount: int, key: str) -> None:
    response = app.client.post(f"/v1/accounts/{ACCOUNT}/credits/debits",
                               json={"amount": amount, "idempotency_key": key})
    assert response.status_code == 201, response.text


def test_consumable_answer_carries_real_usage(
    credits_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """For a credit pack the consumption percentage is the share of its credits used, from the
    ledger (milliunits); a refund Apple makes anyway is listed as answered and counted."""
    consent(credits_app)
    credits: dict[str, Any] = {"otx": "7000000000000900", "product": CREDITS,
                               "tx_type": "Consumable"}
    post_apple(credits_app, apple_ca, apple_note(1, "ONE_TIME_CHARGE", account=ACCOUNT,
                                                 **credits))
    use_credits(credits_app, 25, "call-1")
    post_apple(credits_app, apple_ca, consumption_request(2, tid="7000000000000900", **credits))
    assert fake_appstore.consumption_requests == [
        ("7000000000000900", {**ANSWER, "consumptionPercentage": 25_000})]
    post_apple(credits_app, apple_ca, apple_note(3, "REFUND", account=ACCOUNT,
                                                 revoked_at=NOW_MS - 60_000, **credits))
    [refund] = credits_app.client.get("/v1/refunds").json()["items"]
    assert {k: refund[k] for k in ("channel", "store_id", "account_id", "product_id", "amount",
                                   "currency", "consumption_answer_sent")} == {
        "channel": "apple", "store_id": "7000000000000900", "account_id": ACCOUNT,
        "product_id": CREDITS, "amount": "9.99", "currency": "USD",
        "consumption_answer_sent": True}
    assert refund_requests(credits_app)[0]["outcome"] == "refunded"
    metrics = credits_app.client.get("/metrics").text
    assert 'reconcile_store_refunds{channel="apple"} 1.0' in metrics
    assert 'reconcile_store_refunds_amount{channel="apple",currency="USD"} 9.99' in metrics
    assert 'reconcile_refund_requests{outcome="refunded",state="sent"} 1.0' in metrics


def test_usage_is_counted_first_in_first_out(
    credits_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """Debits use the oldest pack first: after 150 credits of two 100-credit packs the first is
    used up (100000) and the second half used (50000); a pack with no grant gets none."""
    consent(credits_app)
    first: dict[str, Any] = {"otx": "7000000000000901", "product": CREDITS,
                             "tx_type": "Consumable"}
    second: dict[str, Any] = {"otx": "7000000000000902", "product": CREDITS,
                              "tx_type": "Consumable"}
    post_apple(credits_app, apple_ca,
               apple_note(1, "ONE_TIME_CHARGE", account=ACCOUNT, **first),
               apple_note(2, "ONE_TIME_CHARGE", account=ACCOUNT, **second))
    use_credits(credits_app, 100, "a")
    use_credits(credits_app, 50, "b")
    post_apple(credits_app, apple_ca,
               consumption_request(3, tid="7000000000000902", **second),
               consumption_request(4, tid="7000000000000901", **first))
    assert sorted(fake_appstore.consumption_requests) == [
        ("7000000000000901", {**ANSWER, "consumptionPercentage": 100_000}),
        ("7000000000000902", {**ANSWER, "consumptionPercentage": 50_000})]


def test_transient_fault_is_retried_with_backoff(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore, clock: FakeClock
) -> None:
    """A 503 leaves the answer pending for a later attempt, which then sends it once."""
    apple_subscription(apple_app, apple_ca, ACCOUNT)
    consent(apple_app)
    fake_appstore.fail_next("/inApps/v2/transactions/consumption", 503)
    post_apple(apple_app, apple_ca, consumption_request(2, tid="7000000000000002"))
    [waiting] = refund_requests(apple_app)
    assert (waiting["state"], waiting["attempts"]) == ("pending", 1)
    assert fake_appstore.consumption_requests == []
    clock.advance(minutes=1)
    apple_app.drain()
    [sent] = refund_requests(apple_app)
    assert (sent["state"], sent["attempts"]) == ("sent", 2)
    assert fake_appstore.consumption_requests == [("7000000000000002", ANSWER)]
    assert len(fake_appstore.calls_to("/consumption/")) == 2


def test_earliest_deadline_is_answered_first_and_late_ones_skipped(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """Requests are answered in deadline order; one whose 12 hours have passed is skipped."""
    apple_subscription(apple_app, apple_ca, ACCOUNT)
    consent(apple_app)
    notes = [
        consumption_request(2, tid="7000000000000012", signed_at=NOW_MS - HOUR_MS),
        consumption_request(3, tid="7000000000000013", signed_at=NOW_MS - 6 * HOUR_MS),
        consumption_request(4, tid="7000000000000014", signed_at=NOW_MS - 13 * HOUR_MS),
    ]
    for note in notes:
        signed = sign_notification(apple_ca, note)
        assert apple_app.client.post("/webhooks/apple",
                                     json={"signedPayload": signed}).status_code == 200
    apple_app.drain()
    assert [tid for tid, _ in fake_appstore.consumption_requests] == [
        "7000000000000013", "7000000000000012"]
    late = {r["transaction_id"]: r for r in refund_requests(apple_app)}["7000000000000014"]
    assert late["state"] == "skipped"
    assert "deadline passed" in late["why"]
