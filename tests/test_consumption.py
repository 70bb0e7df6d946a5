"""Apple refund requests (CONSUMPTION_REQUEST): answered with consent only, DECLINE, on time."""

from __future__ import annotations

from typing import Any

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
from tests.support.server import FakeClock, RunningApp

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


def test_consumable_answer_carries_real_usage(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """For usage credits the consumption percentage comes from the credits used (milliunits);
    a refund Apple makes anyway is listed as answered and counted in /metrics."""
    consent(apple_app)
    apple_app.client.put(f"/v1/accounts/{ACCOUNT}/usage",
                         json={"credits_purchased": 400, "credits_used": 100})
    credits: dict[str, Any] = {"otx": "7000000000000900", "product": CREDITS,
                               "tx_type": "Consumable"}
    post_apple(apple_app, apple_ca, apple_note(1, "ONE_TIME_CHARGE", account=ACCOUNT, **credits))
    post_apple(apple_app, apple_ca, consumption_request(2, tid="7000000000000900", **credits))
    assert fake_appstore.consumption_requests == [
        ("7000000000000900", {**ANSWER, "consumptionPercentage": 25_000})]
    post_apple(apple_app, apple_ca, apple_note(3, "REFUND", account=ACCOUNT,
                                               revoked_at=NOW_MS - 60_000, **credits))
    [refund] = apple_app.client.get("/v1/refunds").json()["items"]
    assert {k: refund[k] for k in ("channel", "store_id", "account_id", "product_id", "amount",
                                   "currency", "consumption_answer_sent")} == {
        "channel": "apple", "store_id": "7000000000000900", "account_id": ACCOUNT,
        "product_id": CREDITS, "amount": "9.99", "currency": "USD",
        "consumption_answer_sent": True}
    assert refund_requests(apple_app)[0]["outcome"] == "refunded"
    metrics = apple_app.client.get("/metrics").text
    assert 'reconcile_store_refunds{channel="apple"} 1.0' in metrics
    assert 'reconcile_store_refunds_amount{channel="apple",currency="USD"} 9.99' in metrics
    assert 'reconcile_refund_requests{outcome="refunded",state="sent"} 1.0' in metrics


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
