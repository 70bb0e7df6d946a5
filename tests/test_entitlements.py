"""Entitlements over HTTP: computed from the one state, for every channel, behind the app token."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconcile.catalog.service import Grant
from reconcile.catalog.service import entitlements as read_entitlements
from reconcile.config import Settings
from reconcile.db import migrate
from reconcile.services import build_services
from tests.support.apple_ca import AppleTestCA
from tests.support.policy import (
    DAY_MS,
    NOW_MS,
    apple_note,
    apple_subscription,
    portal_subscription,
    post_apple,
)
from tests.support.postgres import POSTGRES_ENV, DedicatedServer
from tests.support.purchases import APP_TOKEN, CATALOG
from tests.support.server import FakeClock, RunningApp, serve_in_thread

ACCOUNT = "5b0c8a2e-3333-4333-8333-000000000003"

NUMBER_LOCK = "com.example.phone.numberlock"


@pytest.fixture
def shop(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[RunningApp]:
    """The service with the fixture catalog and an app token."""
    services = build_services(make_settings(catalog_file=CATALOG, app_token=APP_TOKEN),
                              clock=clock)
    with serve_in_thread(services, "test-admin-token") as running:
        yield running
    services.close()


def as_app(app: RunningApp) -> dict[str, str]:
    return {"Authorization": f"Bearer {APP_TOKEN}"}


def entitlements(app: RunningApp, account: str = ACCOUNT) -> dict[str, dict[str, Any]]:
    response = app.client.get(f"/v1/accounts/{account}/entitlements", headers=as_app(app))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["account_id"] == account
    return {item["entitlement"]: item for item in body["items"]}


def test_each_entitlement_shows_the_grant_that_runs_longest(
    shop: RunningApp, apple_ca: AppleTestCA
) -> None:
    """An Apple plan and a longer portal plan both grant pro: the item names the portal one."""
    apple = apple_subscription(shop, apple_ca, ACCOUNT)
    portal = portal_subscription(shop, ACCOUNT, expires_at="2027-01-15T00:00:00Z")
    found = entitlements(shop)
    assert set(found) == {"pro", "calling"}
    assert found["pro"] == {
        "entitlement": "pro", "active": True, "expires_at": "2027-01-15T00:00:00Z",
        "channel": "portal", "product_id": "portal.pro.monthly",
        "subscription_id": portal["id"], "purchase_id": None,
    }
    assert apple["entitled"]


def test_access_ends_with_the_paid_period_and_with_a_block(
    shop: RunningApp, apple_ca: AppleTestCA, clock: FakeClock
) -> None:
    """Past its expiry a plan grants nothing; a blocked account is granted nothing at all."""
    apple_subscription(shop, apple_ca, ACCOUNT)
    assert entitlements(shop)["pro"]["active"]
    clock.advance(days=30)
    assert not entitlements(shop)["pro"]["active"]
    clock.advance(days=-30)
    response = shop.client.post(f"/v1/accounts/{ACCOUNT}/block", json={"reason": "abuse"})
    assert response.status_code == 200, response.text
    assert not any(item["active"] for item in entitlements(shop).values())


def test_a_non_consumable_grants_until_it_is_refunded(
    shop: RunningApp, apple_ca: AppleTestCA
) -> None:
    """A one-time non-consumable grants for good (no expiry) until the store refunds it."""
    purchase = apple_note(1, "ONE_TIME_CHARGE", account=ACCOUNT, otx="7000000000000700",
                          product=NUMBER_LOCK, tx_type="Non-Consumable")
    post_apple(shop, apple_ca, purchase)
    lock = entitlements(shop)["number_lock"]
    assert lock["active"]
    assert lock["expires_at"] is None
    assert lock["purchase_id"]
    assert lock["subscription_id"] is None
    assert lock["channel"] == "apple"
    refund = apple_note(2, "REFUND", account=ACCOUNT, otx="7000000000000700", product=NUMBER_LOCK,
                        tx_type="Non-Consumable", revoked_at=NOW_MS - DAY_MS // 2)
    post_apple(shop, apple_ca, refund)
    assert not entitlements(shop)["number_lock"]["active"]


def test_the_account_view_carries_entitlements_and_filters_by_environment(
    shop: RunningApp, apple_ca: AppleTestCA
) -> None:
    """The account view lists entitlements and credits; ?environment= keeps one environment."""
    apple_subscription(shop, apple_ca, ACCOUNT)  # the test notifications are production
    view = shop.client.get(f"/v1/accounts/{ACCOUNT}", headers=as_app(shop)).json()
    assert {e["entitlement"] for e in view["entitlements"]} == {"pro", "calling"}
    assert view["credits"] == {"balance": 0}
    environment = view["subscriptions"][0]["environment"]
    other = "sandbox" if environment == "production" else "production"
    only_other = shop.client.get(f"/v1/accounts/{ACCOUNT}", params={"environment": other},
                                 headers=as_app(shop)).json()
    assert only_other["subscriptions"] == []
    assert only_other["entitlements"] == []
    bad = shop.client.get(f"/v1/accounts/{ACCOUNT}", params={"environment": "prod"})
    assert bad.status_code == 422


def test_an_account_never_seen_has_no_entitlements(shop: RunningApp) -> None:
    """Asking about a new customer is normal: an empty list, not an error."""
    assert entitlements(shop, "nobody-yet") == {}


def test_the_app_token_reaches_only_the_app_endpoints(
    shop: RunningApp, apple_ca: AppleTestCA
) -> None:
    """The app token reads accounts and entitlements, gets 403 elsewhere; a wrong one 401."""
    apple_subscription(shop, apple_ca, ACCOUNT)
    app = as_app(shop)
    assert shop.client.get(f"/v1/accounts/{ACCOUNT}", headers=app).status_code == 200
    assert shop.client.get("/v1/subscriptions", headers=app).status_code == 403
    assert shop.client.post(f"/v1/accounts/{ACCOUNT}/block", json={"reason": "x"},
                            headers=app).status_code == 403
    assert shop.client.get("/v1/catalog", headers=app).status_code == 403
    wrong = {"Authorization": "Bearer test-app-tokem"}
    assert shop.client.get(f"/v1/accounts/{ACCOUNT}/entitlements",
                           headers=wrong).status_code == 401
    # The admin token may call the app endpoints too.
    assert shop.client.get(f"/v1/accounts/{ACCOUNT}/entitlements").status_code == 200


def test_unknown_products_grant_nothing_and_are_counted(
    shop: RunningApp, apple_ca: AppleTestCA
) -> None:
    """A product the catalog does not name is stored, grants nothing, and shows in /metrics."""
    note = apple_note(1, "SUBSCRIBED", "INITIAL_BUY", account=ACCOUNT, product="com.example.gold")
    post_apple(shop, apple_ca, note)
    assert entitlements(shop) == {}
    [sub] = shop.client.get("/v1/subscriptions", params={"account_id": ACCOUNT}).json()["items"]
    assert sub["product_id"] == "com.example.gold"
    assert sub["entitled"]
    catalog = shop.client.get("/v1/catalog").json()
    assert catalog["unknown_products"] == ["com.example.gold"]
    metrics = shop.client.get("/metrics").text
    assert ('reconcile_unknown_products{channel="apple",kind="subscription",'
            'product_id="com.example.gold"} 1.0') in metrics


def test_the_fast_read_answers_as_the_route_does(
    shop: RunningApp, apple_ca: AppleTestCA
) -> None:
    """The hot-path read (plain DBAPI) gives the grants the SQLAlchemy read gives, blocked too."""
    apple_subscription(shop, apple_ca, ACCOUNT)
    portal_subscription(shop, ACCOUNT, expires_at="2027-01-15T00:00:00Z")
    post_apple(shop, apple_ca, apple_note(9, "ONE_TIME_CHARGE", account=ACCOUNT,
                                          otx="7000000000000701", product=NUMBER_LOCK,
                                          tx_type="Non-Consumable"))
    services = shop.services

    def both(environment: str | None) -> tuple[list[Grant], list[Grant]]:
        with (services.reader or services.engine).connect() as connection:
            slow = read_entitlements(connection, services.catalog, ACCOUNT, services.clock(),
                                     environment=environment)
        fast = services.entitlement_reads.read_now(ACCOUNT, environment)
        # The lane's own call: inline on SQLite, psycopg's asyncio connections on PostgreSQL.
        on_loop = asyncio.run(services.entitlement_reads.read(ACCOUNT, environment))
        assert on_loop == fast
        return fast, slow

    for environment in (None, "production", "sandbox"):
        fast, slow = both(environment)
        assert fast == slow
        # Over HTTP the lane reads on the event loop (inline on SQLite, psycopg's asyncio
        # connections on PostgreSQL): the same grants again.
        params = {"environment": environment} if environment else {}
        answer = shop.client.get(f"/v1/accounts/{ACCOUNT}/entitlements", headers=as_app(shop),
                                 params=params)
        assert answer.json()["items"] == [grant.json() for grant in slow]
    assert {grant.entitlement for grant in both(None)[0]} == {"pro", "calling", "number_lock"}
    blocked = shop.client.post(f"/v1/accounts/{ACCOUNT}/block", json={"reason": "abuse"})
    assert blocked.status_code == 200, blocked.text
    fast, slow = both(None)
    assert fast == slow
    assert fast
    assert not any(grant.active for grant in fast)


def test_requests_the_fast_lane_leaves_alone_get_the_routes_answers(shop: RunningApp) -> None:
    """A bad environment filter is still 422, a token of another scheme 401: the route's say."""
    bad = shop.client.get(f"/v1/accounts/{ACCOUNT}/entitlements", headers=as_app(shop),
                          params={"environment": "prod"})
    assert bad.status_code == 422
    basic = shop.client.get(f"/v1/accounts/{ACCOUNT}/entitlements",
                            headers={"Authorization": f"Basic {APP_TOKEN}"})
    assert basic.status_code == 401
    nul = shop.client.get("/v1/accounts/a%00b/entitlements", headers=as_app(shop))
    assert nul.status_code == 422
    both = shop.client.get(f"/v1/accounts/{ACCOUNT}/entitlements", headers=as_app(shop),
                           params={"environment": "sandbox", "x": "1"})
    assert both.status_code == 200
    assert both.json() == {"account_id": ACCOUNT, "items": []}


@pytest.mark.slow
@pytest.mark.postgres
def test_the_fast_read_rides_out_a_database_outage(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """While PostgreSQL is stopped entitlements answer 503 (Retry-After); then 200 again."""
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"needs PostgreSQL server binaries (the suite's run with {POSTGRES_ENV})")
    server = DedicatedServer()
    try:
        migrate(server.admin_url)
        services = build_services(make_settings(database_url=server.admin_url,
                                                catalog_file=CATALOG, app_token=APP_TOKEN),
                                  clock=clock)
        with serve_in_thread(services, "test-admin-token") as shop:
            assert entitlements(shop) == {}  # a reader connection is now held
            server.pause()
            during = shop.client.get(f"/v1/accounts/{ACCOUNT}/entitlements",
                                     headers=as_app(shop))
            server.resume()
            after = shop.client.get(f"/v1/accounts/{ACCOUNT}/entitlements",
                                    headers=as_app(shop))
        services.close()
    finally:
        server.close()
    assert (during.status_code, during.json()) == (503, {"detail": "database unavailable"})
    assert int(during.headers["Retry-After"]) > 0
    assert (after.status_code, after.json()) == (200, {"account_id": ACCOUNT, "items": []})
