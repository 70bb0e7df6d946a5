"""Apple cancellations and plan changes: the customer acts in the App Store; we never call."""

from __future__ import annotations

from tests.fakes.appstore import FakeAppStore
from tests.support.apple_ca import AppleTestCA
from tests.support.policy import LITE, apple_note, apple_subscription, post_apple
from tests.support.server import FakeClock, RunningApp

ACCOUNT = "5b0c8a2e-1111-4222-8333-000000000001"
MANAGE = "https://apps.apple.com/account/subscriptions"


def test_cancel_is_the_customers_to_make(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore, clock: FakeClock
) -> None:
    """An Apple cancel asks the customer (manage_url), calls nothing, and is confirmed when
    AUTO_RENEW_DISABLED arrives; access runs on to expires_at."""
    sub = apple_subscription(apple_app, apple_ca, ACCOUNT)
    response = apple_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                                     json={"reason": "customer_request"})
    assert response.status_code == 200
    body = response.json()
    assert body["cancellation"] == {"reason": "customer_request",
                                    "state": "customer_action_required",
                                    "requested_at": "2026-11-01T12:00:00Z", "manage_url": MANAGE}
    assert (body["auto_renew"], body["entitled"]) == (True, True)
    clock.advance(minutes=1)
    assert apple_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                                 json={"reason": "admin"}).json()["cancellation"] == (
        body["cancellation"])
    apple_app.drain()
    post_apple(apple_app, apple_ca, apple_note(2, "DID_CHANGE_RENEWAL_STATUS",
                                               "AUTO_RENEW_DISABLED", account=ACCOUNT,
                                               auto_renew=0))
    after = apple_app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert after["cancellation"]["state"] == "confirmed"
    assert (after["auto_renew"], after["status"], after["entitled"]) == (False, "active", True)
    assert after["expires_at"] == sub["expires_at"]
    assert fake_appstore.calls == []


def test_cancel_after_the_customer_already_did_is_409(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """When renewal is already off at Apple, a cancel answers 409 and records nothing."""
    sub = apple_subscription(apple_app, apple_ca, ACCOUNT)
    post_apple(apple_app, apple_ca, apple_note(2, "DID_CHANGE_RENEWAL_STATUS",
                                               "AUTO_RENEW_DISABLED", account=ACCOUNT,
                                               auto_renew=0))
    response = apple_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                                     json={"reason": "customer_request"})
    assert response.status_code == 409
    assert response.json()["subscription"]["cancellation"] is None
    assert apple_app.client.get(f"/v1/subscriptions/{sub['id']}/requests").json()["items"] == []
    assert fake_appstore.calls == []


def test_plan_change_waits_for_the_store(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """An Apple downgrade is the customer's to make: tracked until DID_CHANGE_RENEWAL_PREF."""
    sub = apple_subscription(apple_app, apple_ca, ACCOUNT)
    response = apple_app.client.post(f"/v1/subscriptions/{sub['id']}/change-plan",
                                     json={"product_id": LITE})
    assert response.status_code == 200
    body = response.json()
    assert body["renewal_product_id"] == sub["renewal_product_id"]
    request = body["request"]
    assert (request["kind"], request["state"], request["product_id"], request["manage_url"]) == (
        "change_plan", "customer_action_required", LITE, MANAGE)
    post_apple(apple_app, apple_ca, apple_note(2, "DID_CHANGE_RENEWAL_PREF", "DOWNGRADE",
                                               account=ACCOUNT, renews=LITE))
    [tracked] = apple_app.client.get(f"/v1/subscriptions/{sub['id']}/requests").json()["items"]
    assert (tracked["state"], tracked["confirmed_at"]) == ("confirmed", "2026-11-01T12:00:00Z")
    after = apple_app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert (after["product_id"], after["renewal_product_id"]) == (sub["product_id"], LITE)
    assert fake_appstore.calls == []
