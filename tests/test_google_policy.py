"""Google cancellations over HTTP against FakePlay: the exact calls, sent once, confirmed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from reconcile.config import Settings
from reconcile.outbox import GoogleCancelJob
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN
from tests.fakes.appstore import FakeAppStore
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.apple_ca import AppleTestCA
from tests.support.google import PACKAGE, Pusher, subscription_notification
from tests.support.oidc import OidcIssuer
from tests.support.policy import apple_subscription, portal_subscription
from tests.support.server import FakeClock, RunningApp, serve_in_thread

ACCOUNT = "5b0c8a2e-4444-4222-8333-000000000004"
TOKEN = "gpt-policy-0001.AO-J1Oz"
CANCEL = "subscriptionsv2.cancel"
PURCHASED, CANCELED = 4, 3


def user_stop(kind: str) -> dict[str, Any]:
    return {"cancellationContext": {"cancellationType": kind}}


def subscribe(app: RunningApp, pusher: Pusher, fake: FakePlay, clock: FakeClock,
              **purchase: Any) -> dict[str, Any]:
    """A Google subscription known to the service through a pushed SUBSCRIPTION_PURCHASED."""
    fake.subscriptions[TOKEN] = subscription_purchase(
        "premium_monthly", acknowledged=True, account_id=ACCOUNT,
        expiry_time=clock.now + timedelta(days=20), now=clock.now, **purchase)
    pusher.push(subscription_notification(TOKEN, PURCHASED, clock.now))
    app.drain()
    [sub] = app.client.get("/v1/subscriptions", params={"store_id": TOKEN}).json()["items"]
    assert isinstance(sub, dict)
    return sub


def cancel_calls(fake: FakePlay) -> list[tuple[str, dict[str, Any] | None]]:
    return [(call.params["token"], call.body) for call in fake.calls_named(CANCEL)]


def test_customer_cancel_is_sent_once_then_confirmed(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A customer's cancel goes to Google once as USER_REQUESTED_STOP_RENEWALS: requested,
    sent, then confirmed when Google shows renewal off; access runs on to expires_at."""
    sub = subscribe(google_app, pusher, fake_play, clock)
    response = google_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                                      json={"reason": "customer_request"})
    assert response.status_code == 200
    body = response.json()
    assert body["cancellation"] == {"reason": "customer_request", "state": "requested",
                                    "requested_at": "2026-11-01T12:00:00Z", "manage_url": None}
    assert body["request"]["cancellation_type"] == "USER_REQUESTED_STOP_RENEWALS"
    assert cancel_calls(fake_play) == []
    google_app.drain()
    assert cancel_calls(fake_play) == [(TOKEN, user_stop("USER_REQUESTED_STOP_RENEWALS"))]
    sent = google_app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert sent["cancellation"]["state"] == "sent"
    clock.advance(minutes=1)
    pusher.push(subscription_notification(TOKEN, CANCELED, clock.now))
    google_app.drain()
    done = google_app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert done["cancellation"]["state"] == "confirmed"
    assert (done["auto_renew"], done["status"], done["entitled"]) == (False, "active", True)
    assert done["expires_at"] == sub["expires_at"]
    again = google_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                                   json={"reason": "customer_request"})
    assert again.json()["cancellation"] == done["cancellation"]
    google_app.drain()
    assert len(fake_play.calls_named(CANCEL)) == 1
    assert [c.name.removeprefix("androidpublisher.purchases.") for c in fake_play.calls] == [
        "subscriptionsv2.get", CANCEL, "subscriptionsv2.get"]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/accounts/{account}/block", {"reason": "AUP"}, "policy_block"),
        ("/v1/accounts/{account}/port-out", None, "port_out"),
        ("/v1/accounts/{account}/cancel", {"reason": "admin"}, "admin"),
    ],
    ids=["block", "port-out", "admin"],
)
def test_company_decisions_stop_payments(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock,
    path: str, body: dict[str, Any] | None, reason: str,
) -> None:
    """Blocks, port-outs and admin cancels are DEVELOPER_REQUESTED_STOP_PAYMENTS."""
    subscribe(google_app, pusher, fake_play, clock)
    response = google_app.client.post(path.format(account=ACCOUNT), json=body)
    assert response.status_code == 200
    [item] = response.json()["items"]
    assert (item["cancellation"]["reason"], item["cancellation"]["state"]) == (reason, "requested")
    google_app.drain()
    assert cancel_calls(fake_play) == [(TOKEN, user_stop("DEVELOPER_REQUESTED_STOP_PAYMENTS"))]
    assert fake_play.subscriptions[TOKEN]["canceledStateContext"] == {
        "developerInitiatedCancellation": {}}


def test_prepaid_plan_fails_with_the_reason(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A prepaid plan cannot be cancelled: failed with why, and Google is not called."""
    sub = subscribe(google_app, pusher, fake_play, clock, prepaid=True)
    response = google_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                                      json={"reason": "customer_request"})
    assert response.status_code == 200
    body = response.json()
    assert body["cancellation"]["state"] == "failed"
    assert "prepaid plan" in body["request"]["failure"]
    assert body["entitled"] is True
    google_app.drain()
    assert cancel_calls(fake_play) == []
    again = google_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                                   json={"reason": "admin"})
    assert again.json()["request"] == body["request"]


def test_google_refusal_is_failed(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A 4xx from Google is permanent: failed with Google's answer, not retried; a new cancel
    is a new request."""
    sub = subscribe(google_app, pusher, fake_play, clock)
    fake_play.fail_next(CANCEL, 404)
    google_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={"reason": "admin"})
    google_app.drain()
    clock.advance(hours=2)
    google_app.drain()
    [request] = google_app.client.get(f"/v1/subscriptions/{sub['id']}/requests").json()["items"]
    assert request["state"] == "failed"
    assert "Google Play refused the cancellation" in request["failure"]
    assert len(cancel_calls(fake_play)) == 1
    again = google_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                                   json={"reason": "admin"}).json()
    assert again["cancellation"]["state"] == "requested"
    google_app.drain()
    states = [r["state"] for r in
              google_app.client.get(f"/v1/subscriptions/{sub['id']}/requests").json()["items"]]
    assert states == ["failed", "sent"]
    stop = user_stop("DEVELOPER_REQUESTED_STOP_PAYMENTS")
    assert cancel_calls(fake_play) == [(TOKEN, stop), (TOKEN, stop)]


@pytest.fixture
def one_try_app(
    make_google_settings: Callable[..., Settings], clock: FakeClock
) -> Any:
    """The Google-configured service whose Play client makes one attempt per call."""
    services = build_services(make_google_settings(google_api_retries=0), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


def test_transient_fault_is_retried_later(
    one_try_app: RunningApp, oidc: OidcIssuer, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A 503 leaves the cancellation requested; after the backoff the same call succeeds."""
    pusher = Pusher(one_try_app.client, oidc)
    sub = subscribe(one_try_app, pusher, fake_play, clock)
    fake_play.fail_next(CANCEL, 503)
    one_try_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                            json={"reason": "port_out"})
    one_try_app.drain()
    [waiting] = one_try_app.client.get(f"/v1/subscriptions/{sub['id']}/requests").json()["items"]
    assert (waiting["state"], waiting["attempts"]) == ("requested", 1)
    clock.advance(minutes=1)
    one_try_app.drain()
    [sent] = one_try_app.client.get(f"/v1/subscriptions/{sub['id']}/requests").json()["items"]
    assert (sent["state"], sent["attempts"]) == ("sent", 2)
    stop = user_stop("DEVELOPER_REQUESTED_STOP_PAYMENTS")
    assert cancel_calls(fake_play) == [(TOKEN, stop), (TOKEN, stop)]


class ProcessDied(BaseException):
    """Stands for the worker process being killed (not an error the job could catch)."""


class DiesAfterGoogleAccepts:
    """The real Play client, with the process dying right after Google answered 200."""

    def __init__(self, play: Any) -> None:
        self.play = play

    def cancel(self, token: str, cancellation_type: str) -> None:
        self.play.cancel(token, cancellation_type)
        raise ProcessDied


def test_crash_after_google_accepted_repeats_only_the_same_call(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """If the worker dies between Google's success and our commit, the entry is sent again
    after its lease, with the very same token and type; then it is sent and never again."""
    sub = subscribe(google_app, pusher, fake_play, clock)
    google_app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                           json={"reason": "customer_request"})
    services = google_app.services
    doomed = GoogleCancelJob(sessions=services.sessions,
                             play=DiesAfterGoogleAccepts(services.play), owner="doomed",
                             is_permanent=lambda _error: False)
    with pytest.raises(ProcessDied):
        doomed.run_once(clock.now)
    google_app.drain()
    assert len(cancel_calls(fake_play)) == 1
    requested = google_app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert requested["cancellation"]["state"] == "requested"
    clock.advance(seconds=doomed.lease.total_seconds() + 1)
    google_app.drain()
    clock.advance(hours=1)
    google_app.drain()
    stop = user_stop("USER_REQUESTED_STOP_RENEWALS")
    assert cancel_calls(fake_play) == [(TOKEN, stop), (TOKEN, stop)]
    sent = google_app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert sent["cancellation"]["state"] == "sent"


def test_plan_change_is_the_customers_in_play(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A Google plan change points the customer at Play and is confirmed by the deferred
    replacement Google reports; Google is never called for it."""
    sub = subscribe(google_app, pusher, fake_play, clock)
    response = google_app.client.post(f"/v1/subscriptions/{sub['id']}/change-plan",
                                      json={"product_id": "basic_monthly"})
    request = response.json()["request"]
    assert request["state"] == "customer_action_required"
    assert request["manage_url"] == (
        "https://play.google.com/store/account/subscriptions"
        f"?sku=premium_monthly&package={PACKAGE}")
    fake_play.subscriptions[TOKEN]["lineItems"][0]["deferredItemReplacement"] = {
        "productId": "basic_monthly"}
    clock.advance(minutes=1)
    pusher.push(subscription_notification(TOKEN, 9, clock.now))
    google_app.drain()
    [tracked] = google_app.client.get(f"/v1/subscriptions/{sub['id']}/requests").json()["items"]
    assert tracked["state"] == "confirmed"
    assert cancel_calls(fake_play) == []


@pytest.fixture
def every_channel_app(
    make_google_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    clock: FakeClock,
) -> Any:
    """The service with Apple's API on the fake App Store and Google's on FakePlay."""
    services = build_services(make_google_settings(**apple_api_settings), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


def test_block_reaches_every_channel(
    every_channel_app: RunningApp, oidc: OidcIssuer, apple_ca: AppleTestCA,
    fake_play: FakePlay, fake_appstore: FakeAppStore, clock: FakeClock,
) -> None:
    """A block of an account with Apple, Google and portal subscriptions ends access to all,
    makes exactly one store call (Google's developer cancel) and none to Apple."""
    app = every_channel_app
    subscribe(app, Pusher(app.client, oidc), fake_play, clock)
    apple_subscription(app, apple_ca, ACCOUNT)
    portal_subscription(app, ACCOUNT)
    calls_before = len(fake_play.calls)
    response = app.client.post(f"/v1/accounts/{ACCOUNT}/block", json={"reason": "AUP 4.2"})
    assert response.status_code == 200
    body = response.json()
    app.drain()
    assert body["entitled"] is False
    states = {s["channel"]: (s["entitled"], s["cancellation"]["state"]) for s in body["items"]}
    assert states == {"google": (False, "requested"), "apple": (False, "customer_action_required"),
                      "portal": (False, "confirmed")}
    assert [c.name.removeprefix("androidpublisher.purchases.")
            for c in fake_play.calls[calls_before:]] == [CANCEL]
    assert cancel_calls(fake_play) == [(TOKEN, user_stop("DEVELOPER_REQUESTED_STOP_PAYMENTS"))]
    assert fake_appstore.calls == []
