"""The web portal channel: admin-written subscriptions whose truth is this service."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.apple_ca import AppleTestCA
from tests.support.policy import apple_subscription, portal_subscription
from tests.support.server import FakeClock, RunningApp

ACCOUNT = "acct-portal-1"


def get(app: RunningApp, sub_id: str) -> dict[str, Any]:
    response = app.client.get(f"/v1/subscriptions/{sub_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_create_answers_201_with_the_subscription(app: RunningApp) -> None:
    """POST /v1/portal/subscriptions makes an active, entitled portal subscription."""
    sub = portal_subscription(app, ACCOUNT, store_id="web-123")
    assert {k: sub[k] for k in ("channel", "environment", "store_id", "store_ids", "account_id",
                                "product_id", "renewal_product_id", "status", "entitled",
                                "auto_renew", "expires_at", "cancellation")} == {
        "channel": "portal", "environment": "production", "store_id": "web-123",
        "store_ids": ["web-123"], "account_id": ACCOUNT, "product_id": "portal.pro.monthly",
        "renewal_product_id": "portal.pro.monthly", "status": "active", "entitled": True,
        "auto_renew": True, "expires_at": "2026-12-01T12:00:00Z", "cancellation": None}
    assert get(app, sub["id"]) == sub
    [event] = app.client.get(f"/v1/subscriptions/{sub['id']}/events").json()["items"]
    assert (event["source"], event["kind"]) == ("portal", "PORTAL_CREATED")
    again = app.client.post("/v1/portal/subscriptions", json={
        "account_id": ACCOUNT, "product_id": "x", "expires_at": "2026-12-01T12:00:00Z",
        "store_id": "web-123"})
    assert again.status_code == 409
    assert again.json()["subscription"] == sub


def test_renewal_moves_expires_at_and_lapse_expires(app: RunningApp, clock: FakeClock) -> None:
    """A PATCH of expires_at renews; past expires_at without one the subscription is expired."""
    sub = portal_subscription(app, ACCOUNT)
    renewed = app.client.patch(f"/v1/portal/subscriptions/{sub['id']}",
                               json={"expires_at": "2027-01-01T12:00:00Z"})
    assert renewed.status_code == 200
    assert (renewed.json()["expires_at"], renewed.json()["status"]) == (
        "2027-01-01T12:00:00Z", "active")
    clock.advance(days=62)
    assert get(app, sub["id"])["entitled"] is False
    app.drain()
    lapsed = get(app, sub["id"])
    assert (lapsed["status"], lapsed["entitled"]) == ("expired", False)
    back = app.client.patch(f"/v1/portal/subscriptions/{sub['id']}",
                            json={"expires_at": "2027-02-01T12:00:00+00:00"}).json()
    assert (back["status"], back["entitled"]) == ("active", True)


def test_plan_change_takes_over_at_the_period_end(app: RunningApp) -> None:
    """A portal downgrade sets renewal_product_id now and becomes the product at renewal."""
    sub = portal_subscription(app, ACCOUNT)
    changed = app.client.post(f"/v1/subscriptions/{sub['id']}/change-plan",
                              json={"product_id": "portal.basic.monthly"})
    assert changed.status_code == 200
    body = changed.json()
    assert (body["product_id"], body["renewal_product_id"]) == (
        "portal.pro.monthly", "portal.basic.monthly")
    assert (body["request"]["kind"], body["request"]["state"]) == ("change_plan", "confirmed")
    assert body["request"]["manage_url"] is None
    repeat = app.client.post(f"/v1/subscriptions/{sub['id']}/change-plan",
                             json={"product_id": "portal.basic.monthly"}).json()
    assert repeat["request"] == body["request"]
    renewed = app.client.patch(f"/v1/portal/subscriptions/{sub['id']}",
                               json={"expires_at": "2027-01-01T12:00:00Z"}).json()
    assert (renewed["product_id"], renewed["renewal_product_id"]) == (
        "portal.basic.monthly", "portal.basic.monthly")


def test_cancel_stops_renewal_at_once(app: RunningApp, clock: FakeClock) -> None:
    """A portal cancel turns auto-renew off now, confirmed; access runs on to expires_at."""
    sub = portal_subscription(app, ACCOUNT)
    response = app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                               json={"reason": "customer_request", "note": "ticket 42"})
    assert response.status_code == 200
    body = response.json()
    assert (body["auto_renew"], body["status"], body["entitled"]) == (False, "active", True)
    assert body["expires_at"] == sub["expires_at"]
    assert body["cancellation"] == {"reason": "customer_request", "state": "confirmed",
                                    "requested_at": "2026-11-01T12:00:00Z", "manage_url": None}
    assert body["request"]["note"] == "ticket 42"
    clock.advance(minutes=5)
    twice = app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                            json={"reason": "admin"})
    assert twice.status_code == 200
    assert {**twice.json(), "updated_at": None} == {**body, "updated_at": None}
    assert len(app.client.get(f"/v1/subscriptions/{sub['id']}/requests").json()["items"]) == 1


def test_cancelling_what_renews_no_more_is_409(app: RunningApp, clock: FakeClock) -> None:
    """An expired or already non-renewing subscription answers 409 with itself; nothing changes."""
    off = portal_subscription(app, ACCOUNT, auto_renew=False, store_id="web-off")
    answer = app.client.post(f"/v1/subscriptions/{off['id']}/cancel",
                             json={"reason": "customer_request"})
    assert answer.status_code == 409
    assert answer.json()["error"] == "not_renewing"
    assert "already cancelled" in answer.json()["message"]
    assert answer.json()["subscription"] == off
    assert app.client.get(f"/v1/subscriptions/{off['id']}/requests").json()["items"] == []
    ending = portal_subscription(app, ACCOUNT, expires_at="2026-11-02T12:00:00Z")
    clock.advance(days=2)
    expired = app.client.post(f"/v1/subscriptions/{ending['id']}/cancel",
                              json={"reason": "admin"})
    assert expired.status_code == 409
    assert "has ended (expired)" in expired.json()["message"]
    assert expired.json()["subscription"]["auto_renew"] is True
    plan = app.client.post(f"/v1/subscriptions/{ending['id']}/change-plan",
                           json={"product_id": "other"})
    assert plan.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"product_id": "p", "expires_at": "2026-12-01T12:00:00Z"},
        {"account_id": "a", "product_id": "p", "expires_at": "2026-12-01T12:00:00"},
        {"account_id": "a", "product_id": "p", "expires_at": "next week"},
        {"account_id": "a", "product_id": "", "expires_at": "2026-12-01T12:00:00Z"},
        {"account_id": "a", "product_id": "p", "expires_at": "2026-12-01T12:00:00Z",
         "auto_renew": "yes"},
        {"account_id": "a", "product_id": "p", "expires_at": "2026-12-01T12:00:00Z",
         "status": "active"},
    ],
    ids=["no-account", "naive-time", "not-a-time", "empty-product", "auto-renew-string",
         "unknown-field"],
)
def test_bad_create_is_422_and_creates_nothing(app: RunningApp, body: dict[str, Any]) -> None:
    """An invalid portal subscription is refused with a message and nothing is stored."""
    response = app.client.post("/v1/portal/subscriptions", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]
    assert app.client.get("/v1/subscriptions").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "nothing to update"),
        ({"expires_at": None}, "cannot be null: expires_at"),
        ({"auto_renew": 1}, None),
        ({"expires_at": "2027-01-01T00:00:00"}, None),
        ({"renewal_product_id": "x"}, None),
    ],
    ids=["empty", "null", "auto-renew-int", "naive-time", "unknown-field"],
)
def test_bad_patch_is_422_and_changes_nothing(
    app: RunningApp, body: dict[str, Any], message: str | None
) -> None:
    """An invalid PATCH is refused with a clear message and the subscription stays as it was."""
    sub = portal_subscription(app, ACCOUNT)
    response = app.client.patch(f"/v1/portal/subscriptions/{sub['id']}", json=body)
    assert response.status_code == 422
    if message:
        assert message in response.json()["message"]
    assert get(app, sub["id"]) == sub


def test_patch_of_unknown_or_store_subscription_is_refused(
    app: RunningApp, apple_ca: AppleTestCA
) -> None:
    """PATCH is 404 for an unknown id and 409 for a subscription sold through a store."""
    missing = app.client.patch("/v1/portal/subscriptions/sub_nope", json={"auto_renew": False})
    assert missing.status_code == 404
    apple = apple_subscription(app, apple_ca, "acct-apple")
    refused = app.client.patch(f"/v1/portal/subscriptions/{apple['id']}",
                               json={"auto_renew": False})
    assert refused.status_code == 409
    assert "apple" in refused.json()["message"]
    assert get(app, apple["id"]) == apple


def test_cancel_validation(app: RunningApp) -> None:
    """A cancel with an unknown reason is 422, of an unknown subscription 404."""
    sub = portal_subscription(app, ACCOUNT)
    for body in ({"reason": "refund"}, {}, {"reason": "admin", "extra": 1}):
        response = app.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json=body)
        assert response.status_code == 422, body
    assert get(app, sub["id"]) == sub
    missing = app.client.post("/v1/subscriptions/sub_nope/cancel", json={"reason": "admin"})
    assert missing.status_code == 404
