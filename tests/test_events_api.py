"""The events API over HTTP: the feed (app token) and the webhook endpoints (admin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from reconcile.config import Settings
from reconcile.services import build_services
from tests.support.policy import portal_subscription
from tests.support.purchases import CATALOG
from tests.support.server import FakeClock, RunningApp, serve_in_thread

APP = {"Authorization": "Bearer test-app-token"}


@pytest.fixture
def shop(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[RunningApp]:
    services = build_services(make_settings(catalog_file=CATALOG, app_token="test-app-token"),
                              clock=clock)
    with serve_in_thread(services, "test-admin-token") as running:
        yield running
    services.close()


def test_the_feed_pages_oldest_first_and_filters(shop: RunningApp) -> None:
    """Following `next_cursor` walks every event once, oldest first; `account_id` and `type`
    filter; one event is read by id; the app token may read the feed."""
    for account in ("acct-1", "acct-2"):
        portal_subscription(shop, account)
    seen, cursor = [], None
    while True:
        page = shop.client.get("/v1/events", params={"limit": 2, **(
            {"cursor": cursor} if cursor else {})}, headers=APP)
        assert page.status_code == 200, page.text
        body = page.json()
        seen.extend(body["items"])
        cursor = body["next_cursor"]
        if not body["items"]:
            assert cursor is None
            break
    assert [(e["account_id"], e["sequence"], e["type"]) for e in seen] == [
        ("acct-1", 1, "subscription.started"), ("acct-1", 2, "entitlement.granted"),
        ("acct-1", 3, "entitlement.granted"), ("acct-2", 1, "subscription.started"),
        ("acct-2", 2, "entitlement.granted"), ("acct-2", 3, "entitlement.granted")]
    mine = shop.client.get("/v1/events", params={"account_id": "acct-2",
                                                 "type": "subscription.started"}, headers=APP)
    assert [e["id"] for e in mine.json()["items"]] == [seen[3]["id"]]
    one = shop.client.get(f"/v1/events/{seen[0]['id']}", headers=APP)
    assert one.json() == seen[0]
    assert seen[0]["data"]["subscription"]["account_id"] == "acct-1"
    assert seen[0]["data"]["previous"] == {}
    assert shop.client.get("/v1/events/evt_missing", headers=APP).status_code == 404
    assert shop.client.get("/v1/events", params={"cursor": "%%%"}).status_code == 400


def test_endpoints_are_made_listed_changed_and_deleted(shop: RunningApp) -> None:
    """Create shows the secret once; list and get never do; PATCH changes the four fields;
    DELETE removes it; the app token may not manage endpoints."""
    made = shop.client.post("/v1/webhook-endpoints", json={
        "url": "https://hooks.example.com/in", "event_types": ["subscription.started"],
        "description": "billing"})
    assert made.status_code == 201, made.text
    endpoint = made.json()
    assert set(endpoint) >= {"id", "url", "event_types", "description", "enabled", "secret",
                             "created_at"}
    assert endpoint["event_types"] == ["subscription.started"]
    listed = shop.client.get("/v1/webhook-endpoints").json()["items"]
    assert [e["id"] for e in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]
    assert "secret" not in shop.client.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
    patched = shop.client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={
        "url": "https://hooks.example.com/v2", "event_types": None, "enabled": False,
        "description": "all"})
    assert patched.status_code == 200, patched.text
    assert {k: patched.json()[k] for k in ("url", "event_types", "enabled", "description")} == {
        "url": "https://hooks.example.com/v2", "event_types": None, "enabled": False,
        "description": "all"}
    assert shop.client.get("/v1/webhook-endpoints", headers=APP).status_code == 403
    assert shop.client.delete(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 204
    assert shop.client.get(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 404


@pytest.mark.parametrize(("body", "why"), [
    ({"url": "http://hooks.example.com/in"}, "must use https"),
    ({"url": "ftp://hooks.example.com/in"}, "http(s)"),
    ({"url": "https://"}, "http(s)"),
    ({"url": "https://hooks.example.com/in", "event_types": ["subscription.begun"]},
     "unknown event types: subscription.begun"),
])
def test_a_bad_endpoint_is_refused_and_nothing_is_made(
    shop: RunningApp, body: dict[str, object], why: str
) -> None:
    """http off loopback, other schemes, no host and unknown event types are 422, and no
    endpoint is made."""
    refused = shop.client.post("/v1/webhook-endpoints", json=body)
    assert refused.status_code == 422
    assert why in refused.text
    assert shop.client.get("/v1/webhook-endpoints").json()["items"] == []


def test_plain_http_is_allowed_on_loopback_or_when_configured(
    shop: RunningApp, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """http://127.0.0.1 and http://localhost are accepted; other hosts only with
    RECONCILE_WEBHOOK_ALLOW_HTTP."""
    for url in ("http://127.0.0.1:9000/in", "http://localhost/in", "http://[::1]:8/in"):
        assert shop.client.post("/v1/webhook-endpoints", json={"url": url}).status_code == 201
    services = build_services(make_settings(webhook_allow_http=True), clock=clock)
    with serve_in_thread(services, "test-admin-token") as relaxed:
        made = relaxed.client.post("/v1/webhook-endpoints",
                                   json={"url": "http://hooks.internal/in"})
        assert made.status_code == 201
    services.close()


def test_patch_validates_like_create(shop: RunningApp) -> None:
    """A PATCH with a bad URL or type, or a null `enabled`, changes nothing."""
    endpoint = shop.client.post("/v1/webhook-endpoints",
                                json={"url": "https://hooks.example.com/in"}).json()
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    for body in ({"url": "http://elsewhere.example.com/"}, {"event_types": ["nope"]},
                 {"enabled": None}, {"colour": "red"}):
        assert shop.client.patch(path, json=body).status_code in (400, 422)
    assert shop.client.get(path).json()["url"] == "https://hooks.example.com/in"
    assert shop.client.patch("/v1/webhook-endpoints/we_none", json={}).status_code == 404
