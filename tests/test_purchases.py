"""POST /v1/purchases beside the notifications of the same purchase, in either order, and its
answers to bad input and to a store that cannot be reached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from reconcile.models import Purchase, Subscription
from tests.support.purchases import APP_TOKEN, FIXTURES, Shop, load

SIGNED = next(p for p in FIXTURES if p.stem == "apple_signed_transaction_subscription")
GOOGLE = next(p for p in FIXTURES if p.stem == "google_subscription")
API = next(p for p in FIXTURES if p.stem == "apple_transaction_id")
ACCOUNT = "acct-1"


def counts(shop: Shop) -> tuple[int, int]:
    with shop.app.services.sessions() as session:
        return (session.scalar(select(func.count()).select_from(Subscription)) or 0,
                session.scalar(select(func.count()).select_from(Purchase)) or 0)


def subscription(shop: Shop) -> dict[str, Any]:
    [item] = shop.app.client.get("/v1/subscriptions").json()["items"]
    assert isinstance(item, dict)
    return item


@pytest.mark.parametrize("path", [SIGNED, GOOGLE], ids=["apple", "google"])
@pytest.mark.parametrize("notification_first", [True, False], ids=["notified", "submitted"])
def test_a_notification_and_a_submission_leave_one_subscription(
    shop_for: Callable[[dict[str, Any]], Shop], path: Path, notification_first: bool
) -> None:
    """Whichever arrives first, one subscription results, owned by the submitting account,
    and the second changes nothing the first got right."""
    shop = shop_for(load(path))
    submit = {"account_id": ACCOUNT, "form": load(path)["submit"]["form"]}
    if notification_first:
        shop.notify()
        first = subscription(shop)
    response = shop.submit(submit)
    assert response.status_code == 200, response.text
    if not notification_first:
        first = subscription(shop)
        shop.notify()
    after = subscription(shop)
    assert counts(shop)[0] == 1
    assert after["account_id"] == ACCOUNT
    assert after["entitled"]
    for field in ("status", "expires_at", "product_id", "store_id"):
        assert after[field] == first[field], field
    assert shop.entitlements(ACCOUNT) == {"pro": True, "calling": True}


def test_a_later_notification_with_another_token_keeps_the_business_link(
    shop_for: Callable[[dict[str, Any]], Shop],
) -> None:
    """The store's appAccountToken is fixed at purchase; once the business linked the purchase,
    a notification naming another token does not take it back."""
    fixture = load(SIGNED)
    fixture["store"]["apple"]["app_account_token"] = "5b0c8a2e-7777-4777-8777-000000000007"
    shop = shop_for(fixture)
    assert shop.submit({"account_id": ACCOUNT, "form": "signed_transaction"}).status_code == 200
    shop.notify()
    assert subscription(shop)["account_id"] == ACCOUNT
    assert shop.entitlements("5b0c8a2e-7777-4777-8777-000000000007") == {}


def test_an_unreachable_app_store_answers_503_and_stores_nothing(
    shop_for: Callable[[dict[str, Any]], Shop],
) -> None:
    """A 5xx from the App Store is a 503 to the caller, with nothing half-stored."""
    shop = shop_for(load(API))
    attempts = shop.app.services.settings.apple_api_attempts
    shop.appstore.fail_next("/inApps/v1/subscriptions/", 500, times=attempts)
    response = shop.submit({"account_id": ACCOUNT, "form": "transaction_id"})
    assert response.status_code == 503, response.text
    assert "try again" in response.json()["detail"]
    assert counts(shop) == (0, 0)
    assert shop.submit({"account_id": ACCOUNT, "form": "transaction_id"}).status_code == 200


def test_an_unreachable_play_api_answers_503_and_stores_nothing(
    shop_for: Callable[[dict[str, Any]], Shop],
) -> None:
    """A 5xx from Google Play is a 503 to the caller, with nothing stored."""
    shop = shop_for(load(GOOGLE))
    shop.play.fail_next("subscriptionsv2.get", 503, times=10)
    response = shop.submit({"account_id": ACCOUNT, "form": "subscription"})
    assert response.status_code == 503, response.text
    assert counts(shop) == (0, 0)


BAD_BODIES: list[Any] = [
    b"not json",
    b"\xff\xfe",
    [],
    {},
    {"account_id": ACCOUNT, "channel": "apple"},
    {"account_id": ACCOUNT, "channel": "amazon", "signed_transaction": "x"},
    {"account_id": ACCOUNT, "channel": "apple", "signed_transaction": "x", "transaction_id": "1"},
    {"account_id": ACCOUNT, "channel": "apple", "transaction_id": 123},
    {"account_id": "", "channel": "apple", "signed_transaction": "x"},
    {"channel": "apple", "signed_transaction": "x"},
    {"account_id": ACCOUNT, "channel": "google", "purchase_token": "t", "product_id": "p"},
    {"account_id": ACCOUNT, "channel": "google", "purchase_token": "t", "product_id": "p",
     "type": "lifetime"},
    {"account_id": ACCOUNT, "channel": "apple", "signed_transaction": "x", "extra": 1},
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_body_of_the_wrong_shape_is_400(
    shop_for: Callable[[dict[str, Any]], Shop], body: Any
) -> None:
    """Anything but one of the four shapes is 400 with the shapes named, and stores nothing."""
    shop = shop_for(load(SIGNED))
    content = body if isinstance(body, bytes) else None
    response = shop.app.client.post(
        "/v1/purchases", content=content, json=None if content else body,
        headers={"Authorization": f"Bearer {APP_TOKEN}", "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "signed_transaction" in response.json()["detail"]
    assert counts(shop) == (0, 0)


def test_a_submission_needs_a_token(shop_for: Callable[[dict[str, Any]], Shop]) -> None:
    """No bearer token, no purchase."""
    shop = shop_for(load(SIGNED))
    body = shop.body({"account_id": ACCOUNT, "form": "signed_transaction"})
    response = shop.app.client.post("/v1/purchases", json=body, headers={"Authorization": ""})
    assert response.status_code == 401
    assert counts(shop) == (0, 0)
