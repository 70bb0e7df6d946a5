"""The admin API: bearer auth, filters, cursor pages, accounts, health and metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from reconcile.config import Settings
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.server import FakeClock, RunningApp, serve_in_thread

DAY = 86_400_000
NOW = 1_793_534_400_000  # 2026-11-01T12:00:00Z, the FakeClock's start


def subscribe(n: int, *, account: str, expires: int, environment: str = "Sandbox",
              status: int = 1) -> dict[str, Any]:
    return {
        "notificationType": "SUBSCRIBED", "subtype": "INITIAL_BUY",
        "notificationUUID": f"55555555-0000-4000-8000-{n:012d}", "signedDate": NOW - DAY + n,
        "data": {"status": status, "environment": environment, "transaction": {
            "originalTransactionId": f"50{n:04d}", "transactionId": f"51{n:04d}",
            "productId": "com.example.phone.monthly", "purchaseDate": NOW - DAY,
            "expiresDate": expires, "type": "Auto-Renewable Subscription",
            "appAccountToken": account,
        }},
    }


@pytest.fixture
def populated(app: RunningApp, apple_ca: AppleTestCA) -> RunningApp:
    for n in range(7):
        body = subscribe(n, account=f"acct-{n % 2}", expires=NOW + (n - 2) * DAY,
                         status=1 if n >= 2 else 2)
        response = app.client.post("/webhooks/apple",
                                   json={"signedPayload": sign_notification(apple_ca, body)})
        assert response.status_code == 200
    app.drain()
    return app


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic " + ADMIN_TOKEN, ADMIN_TOKEN])
def test_admin_needs_the_token(app: RunningApp, header: str | None) -> None:
    """Anything but `Bearer <token>` is 401 on every /v1 route."""
    headers = {"Authorization": header} if header else {}
    for path in ("/v1/subscriptions", "/v1/subscriptions/sub_x", "/v1/accounts/a", "/v1/refunds"):
        response = httpx.get(app.url + path, headers=headers)
        assert response.status_code == 401, path


def test_no_configured_token_refuses_all(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """With RECONCILE_ADMIN_TOKEN unset the admin API refuses every request, even empty bearers."""
    services = build_services(make_settings(admin_token=None), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        assert app.client.get("/v1/subscriptions").status_code == 401
        for guess in ("Bearer None", "Bearer null", "Bearer undefined"):
            response = httpx.get(app.url + "/v1/subscriptions", headers={"Authorization": guess})
            assert response.status_code == 401
        assert app.client.get("/healthz").status_code == 200
    services.close()


def test_filters_and_entitlement(populated: RunningApp) -> None:
    """Filters narrow the list; `entitled` is computed against the service clock."""
    client = populated.client
    items = client.get("/v1/subscriptions").json()["items"]
    assert len(items) == 7
    assert {i["store_id"]: i["entitled"] for i in items} == {
        "500000": False, "500001": False, "500002": False,  # expired, or expiring at now
        "500003": True, "500004": True, "500005": True, "500006": True,
    }
    acct = client.get("/v1/subscriptions", params={"account_id": "acct-1"}).json()["items"]
    assert sorted(i["store_id"] for i in acct) == ["500001", "500003", "500005"]
    expired = client.get("/v1/subscriptions", params={"status": "expired"}).json()["items"]
    assert sorted(i["store_id"] for i in expired) == ["500000", "500001"]
    by_store = client.get("/v1/subscriptions", params={"store_id": "500004"}).json()["items"]
    assert [i["store_id"] for i in by_store] == ["500004"]
    assert client.get("/v1/subscriptions", params={"channel": "google"}).json()["items"] == []
    prod = client.get("/v1/subscriptions", params={"environment": "production"}).json()
    assert prod["items"] == []


def test_cursor_pages_cover_everything_once(populated: RunningApp) -> None:
    """Following next_cursor visits every subscription exactly once."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = populated.client.get("/v1/subscriptions", params=params).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    bad = populated.client.get("/v1/subscriptions", params={"cursor": "%%%"})
    assert bad.status_code == 400


def test_subscription_events_and_account(populated: RunningApp) -> None:
    """A subscription, its history and its account read back in the contract's shapes."""
    client = populated.client
    [sub] = client.get("/v1/subscriptions", params={"store_id": "500003"}).json()["items"]
    assert client.get(f"/v1/subscriptions/{sub['id']}").json() == sub
    assert set(sub) == {
        "id", "channel", "environment", "store_id", "store_ids", "account_id", "product_id",
        "renewal_product_id", "status", "entitled", "auto_renew", "expires_at",
        "grace_expires_at", "cancellation", "last_event_at", "updated_at"}
    assert sub["expires_at"].endswith("Z")
    [event] = client.get(f"/v1/subscriptions/{sub['id']}/events").json()["items"]
    assert event["kind"] == "SUBSCRIBED/INITIAL_BUY"
    assert event["applied"] is True
    account = client.get("/v1/accounts/acct-1").json()
    assert account["entitled"] is True
    assert len(account["subscriptions"]) == 3
    assert client.get("/v1/accounts/nobody").status_code == 404
    assert client.get("/v1/subscriptions/sub_missing").status_code == 404


def test_health_and_metrics(populated: RunningApp) -> None:
    """/healthz, /readyz and /metrics answer without a token; metrics count by status."""
    client = populated.client
    assert httpx.get(populated.url + "/readyz").json() == {"status": "ready"}
    text = httpx.get(populated.url + "/metrics").text
    processed = 'reconcile_notifications{channel="apple",status="processed",type="SUBSCRIBED"}'
    assert f"{processed} 7.0" in text
    assert 'reconcile_notifications_received_total{channel="apple",type="SUBSCRIBED"} 7.0' in text
    client.post("/webhooks/apple", json={"signedPayload": "a.b.c"})
    text = httpx.get(populated.url + "/metrics").text
    rejected = 'reconcile_notifications_rejected_total{channel="apple",reason="MALFORMED_JWS"}'
    assert f"{rejected} 1.0" in text


def test_processing_lag_metric(app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock) -> None:
    """While a notification waits, the lag metric reports its age."""
    body = subscribe(1, account="a", expires=NOW + DAY)
    app.client.post("/webhooks/apple", json={"signedPayload": sign_notification(apple_ca, body)})
    clock.advance(seconds=90)
    text = httpx.get(app.url + "/metrics").text
    assert 'reconcile_processing_lag_seconds{channel="apple"} 90.0' in text


def test_openapi_documents_the_bearer_scheme_and_refusals(app: RunningApp) -> None:
    """Swagger UI can authorize (a bearer scheme on every admin route) and the document lists
    the refusals each route answers, beside the hand-written webhook paths."""
    document = app.client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"admin token": {
        "type": "http", "scheme": "bearer",
        "description": "RECONCILE_ADMIN_TOKEN (or, for the endpoints marked app, "
                       "RECONCILE_APP_TOKEN), sent as `Authorization: Bearer <token>`"}}
    paths = document["paths"]
    assert {"/webhooks/apple", "/webhooks/google"} <= set(paths)
    admin = {(path, method): operation for path, operations in paths.items()
             if path.startswith("/v1/") for method, operation in operations.items()}
    assert admin
    for (path, method), operation in admin.items():
        assert operation["security"] == [{"admin token": []}], (path, method)
        assert {"401", "503"} <= set(operation["responses"]), (path, method)
    assert "404" in admin[("/v1/subscriptions/{subscription_id}", "get")]["responses"]
    assert {"404", "409"} <= set(admin[("/v1/subscriptions/{subscription_id}/cancel", "post")]
                                 ["responses"])
    assert "409" in admin[("/v1/portal/subscriptions", "post")]["responses"]
    parameters = {p["name"]: p["schema"] for p in
                  admin[("/v1/subscriptions", "get")]["parameters"]}
    status = parameters["status"]["anyOf"][0]
    status = document["components"]["schemas"][status["$ref"].rsplit("/", 1)[1]] \
        if "$ref" in status else status
    assert status["enum"] == ["pending", "active", "grace_period", "billing_retry", "paused",
                              "expired", "revoked"]


@pytest.mark.parametrize("query", [
    "/v1/subscriptions?status=bogus", "/v1/subscriptions?channel=amazon",
    "/v1/subscriptions?environment=prod", "/v1/refunds?channel=amazon",
    "/v1/refund-requests?state=bogus", "/v1/acknowledgements?state=bogus",
    "/v1/reconciliations?status=bogus",
])
def test_unknown_filter_words_are_422(app: RunningApp, query: str) -> None:
    """A filter value outside its closed set is refused (422), not answered with nothing."""
    response = app.client.get(query)
    assert response.status_code == 422, response.text
