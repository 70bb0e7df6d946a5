"""Account-wide policy over HTTP: block, unblock, port-out, cancel, consent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.appstore import FakeAppStore
from tests.support.apple_ca import AppleTestCA
from tests.support.policy import (
    CREDITS,
    apple_note,
    apple_subscription,
    portal_subscription,
    post_apple,
)
from tests.support.server import FakeClock, RunningApp

ACCOUNT = "5b0c8a2e-2222-4222-8333-000000000002"
APPLE_URL = "https://apps.apple.com/account/subscriptions"


def account_with_everything(app: RunningApp, ca: AppleTestCA) -> dict[str, str]:
    """An Apple subscription, a portal subscription and a consumable purchase of ACCOUNT."""
    apple = apple_subscription(app, ca, ACCOUNT)
    web = portal_subscription(app, ACCOUNT)
    post_apple(app, ca, apple_note(5, "ONE_TIME_CHARGE", account=ACCOUNT, otx="7000000000000900",
                                   product=CREDITS, tx_type="Consumable"))
    return {"apple": apple["id"], "portal": web["id"]}


def by_channel(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["channel"]: item for item in items}


def test_block_ends_access_and_renewal_without_refund(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A block: no access to anything at once, renewal cancelled per channel, no store call."""
    account_with_everything(apple_app, apple_ca)
    response = apple_app.client.post(f"/v1/accounts/{ACCOUNT}/block",
                                     json={"reason": "spam calls (AUP 4.2)"})
    assert response.status_code == 200
    body = response.json()
    assert body["account_id"] == ACCOUNT
    assert body["blocked"] == {"at": "2026-11-01T12:00:00Z", "reason": "spam calls (AUP 4.2)"}
    assert body["entitled"] is False
    subs = by_channel(body["items"])
    assert [s["entitled"] for s in body["items"]] == [False, False]
    assert [p["entitled"] for p in body["purchases"]] == [False]
    assert subs["portal"]["auto_renew"] is False
    assert subs["portal"]["cancellation"]["state"] == "confirmed"
    assert subs["apple"]["cancellation"] == {
        "reason": "policy_block", "state": "customer_action_required",
        "requested_at": "2026-11-01T12:00:00Z", "manage_url": APPLE_URL}
    assert {s["status"] for s in body["items"]} == {"active"}
    shown = apple_app.client.get(f"/v1/accounts/{ACCOUNT}").json()
    assert shown["blocked"] == body["blocked"]
    assert shown["entitled"] is False
    apple_app.drain()
    assert fake_appstore.calls == []


def test_unblock_restores_the_paid_period(
    apple_app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock
) -> None:
    """Unblocking gives back access to what is still paid for; renewals stay cancelled."""
    ids = account_with_everything(apple_app, apple_ca)
    apple_app.client.post(f"/v1/accounts/{ACCOUNT}/block", json={"reason": "abuse"})
    clock.advance(hours=1)
    again = apple_app.client.post(f"/v1/accounts/{ACCOUNT}/block", json={"reason": "other"})
    assert again.json()["blocked"] == {"at": "2026-11-01T12:00:00Z", "reason": "abuse"}
    response = apple_app.client.post(f"/v1/accounts/{ACCOUNT}/unblock")
    assert response.status_code == 200
    body = response.json()
    assert body["blocked"] is None
    assert body["entitled"] is True
    assert [s["entitled"] for s in body["items"]] == [True, True]
    assert [p["entitled"] for p in body["purchases"]] == [True]
    portal = apple_app.client.get(f"/v1/subscriptions/{ids['portal']}").json()
    assert (portal["auto_renew"], portal["cancellation"]["reason"]) == (False, "policy_block")


def test_port_out_stops_billing_after_the_period(
    apple_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """Port-out cancels renewal on every channel with reason port_out; access continues."""
    account_with_everything(apple_app, apple_ca)
    response = apple_app.client.post(f"/v1/accounts/{ACCOUNT}/port-out",
                                     json={"note": "ported to carrier X"})
    assert response.status_code == 200
    subs = by_channel(response.json()["items"])
    assert {c: s["cancellation"]["reason"] for c, s in subs.items()} == {
        "apple": "port_out", "portal": "port_out"}
    assert {c: s["entitled"] for c, s in subs.items()} == {"apple": True, "portal": True}
    assert subs["portal"]["auto_renew"] is False
    bare = apple_app.client.post(f"/v1/accounts/{ACCOUNT}/port-out")
    assert bare.status_code == 200
    assert by_channel(bare.json()["items"]) == subs
    assert fake_appstore.calls == []


def test_account_cancel_skips_what_renews_no_more(
    app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock
) -> None:
    """Cancelling an account cancels each renewing subscription and leaves ended ones alone."""
    renewing = portal_subscription(app, ACCOUNT, store_id="web-renewing")
    ended = portal_subscription(app, ACCOUNT, store_id="web-ended",
                                expires_at="2026-11-01T13:00:00Z")
    clock.advance(hours=2)
    response = app.client.post(f"/v1/accounts/{ACCOUNT}/cancel",
                               json={"reason": "customer_request", "note": "by phone"})
    assert response.status_code == 200
    items = {s["id"]: s for s in response.json()["items"]}
    assert items[renewing["id"]]["cancellation"]["state"] == "confirmed"
    assert items[ended["id"]]["cancellation"] is None
    assert items[ended["id"]]["auto_renew"] is True


@pytest.mark.parametrize("action", ["block", "unblock", "cancel", "port-out"])
def test_unknown_account_is_404(app: RunningApp, action: str) -> None:
    """Account actions on an account the service does not know are 404 and create nothing."""
    body = {"block": {"reason": "x"}, "cancel": {"reason": "admin"}}.get(action)
    response = app.client.post(f"/v1/accounts/nobody/{action}", json=body)
    assert response.status_code == 404
    assert app.client.get("/v1/accounts/nobody").status_code == 404


@pytest.mark.parametrize(
    ("action", "body"),
    [("block", {}), ("block", {"reason": ""}), ("cancel", {"reason": "refund"}),
     ("port-out", {"note": 5})],
)
def test_bad_account_action_is_422(
    app: RunningApp, action: str, body: dict[str, Any]
) -> None:
    """A malformed account action is refused and changes nothing."""
    portal_subscription(app, ACCOUNT)
    before = app.client.get(f"/v1/accounts/{ACCOUNT}").json()
    response = app.client.post(f"/v1/accounts/{ACCOUNT}/{action}", json=body)
    assert response.status_code == 422
    assert app.client.get(f"/v1/accounts/{ACCOUNT}").json() == before


def test_consent_is_recorded_and_usage_counters_are_gone(app: RunningApp) -> None:
    """Consent may be given before any purchase; the old usage counters answer 410 (credits are
    a ledger now) and the account shows its credit balance instead."""
    response = app.client.put("/v1/accounts/new-acct/consent", json={"consumption_data": True})
    assert response.status_code == 200
    body = response.json()
    assert (body["account_id"], body["items"], body["consumption_data_consent"]) == (
        "new-acct", [], True)
    assert app.client.put("/v1/accounts/new-acct/consent",
                          json={"consumption_data": "yes"}).status_code == 422
    usage = app.client.put("/v1/accounts/new-acct/usage",
                           json={"credits_purchased": 500, "credits_used": 120})
    assert usage.status_code == 410
    assert "ledger" in usage.json()["detail"]
    shown = app.client.get("/v1/accounts/new-acct").json()
    assert "usage" not in shown
    assert shown["credits"] == {"balance": 0}
    withdrawn = app.client.put("/v1/accounts/new-acct/consent", json={"consumption_data": False})
    assert withdrawn.json()["consumption_data_consent"] is False
