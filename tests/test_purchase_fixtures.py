"""fixtures/purchases/ is the spec of POST /v1/purchases: one file per input form and outcome.

Each fixture names the store's side (served by the fake App Store / fake Play over HTTP), what
happened before (an earlier submission, a notification), the submission, and the answer and
state expected. One test walks the folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from reconcile.models import Purchase, Subscription, SubscriptionEvent
from tests.support.purchases import FIXTURES, Shop, load


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_purchase_fixture(path: Path, shop_for: Callable[[dict[str, Any]], Shop]) -> None:
    """Each fixture's submission gets its answer and leaves the state it expects."""
    fixture = load(path)
    shop = shop_for(fixture)
    submit, expect = fixture["submit"], fixture["expect"]
    if fixture.get("block"):
        answer = shop.app.client.post(f"/v1/accounts/{fixture['block']}/block",
                                      json={"reason": "acceptable use"})
        assert answer.status_code in (200, 404), answer.text
        if answer.status_code == 404:
            shop.app.client.put(f"/v1/accounts/{fixture['block']}/consent",
                                json={"consumption_data": False})
            answer = shop.app.client.post(f"/v1/accounts/{fixture['block']}/block",
                                          json={"reason": "acceptable use"})
            assert answer.status_code == 200, answer.text
    for step in fixture.get("before", []):
        if step.get("notify"):
            shop.notify()
        else:
            earlier = shop.submit({**submit, **step["submit"]})
            assert earlier.status_code == 200, earlier.text
    with shop.app.services.sessions() as session:
        counts_before = (session.scalar(select(func.count()).select_from(Subscription)),
                         session.scalar(select(func.count()).select_from(Purchase)))
    response = shop.submit(submit)
    assert response.status_code == expect["status"], response.text
    body = response.json()
    account = submit["account_id"]
    if "detail" in expect:
        assert expect["detail"] in body["detail"]
    if expect.get("stored") is False:
        with shop.app.services.sessions() as session:
            counts = (session.scalar(select(func.count()).select_from(Subscription)),
                      session.scalar(select(func.count()).select_from(Purchase)))
        assert counts == counts_before
        assert shop.entitlements(account) == {}
    if expect["status"] == 409:
        assert body["account_id"] == expect["account_id"]
        assert shop.entitlements(account) == {}
    if expect["status"] == 200:
        assert body["account_id"] == account
        assert {e["entitlement"]: e["active"] for e in body["entitlements"]} == \
            expect.get("entitlements", {})
        assert shop.entitlements(account) == expect.get("entitlements", {})
        again = shop.submit(submit)
        assert again.status_code == 200
        assert again.json()["entitlements"] == body["entitlements"]
    if "owner_entitlements" in expect:
        owner = (fixture.get("before") or [{}])[0].get("submit", {}).get("account_id") \
            or expect.get("account_id") or "acct-owner"
        assert shop.entitlements(owner) == expect["owner_entitlements"]
    if "credits" in expect:
        assert body["credits"]["balance"] == expect["credits"]
        assert shop.balance(account) == expect["credits"]
    if "owner_credits" in expect:
        assert shop.balance("acct-owner") == expect["owner_credits"]
    if "subscription" in expect:
        [subscription] = body["subscriptions"]
        assert expect["subscription"].items() <= subscription.items()
    if "purchase" in expect:
        [purchase] = body["purchases"]
        assert expect["purchase"].items() <= purchase.items()
    if "subscriptions" in expect:
        assert len(body["subscriptions"]) == expect["subscriptions"]
    if "purchases" in expect:
        assert len(body["purchases"]) == expect["purchases"]
    if "history_kind" in expect:
        [subscription] = body["subscriptions"]
        with shop.app.services.sessions() as session:
            kinds = set(session.scalars(select(SubscriptionEvent.kind).where(
                SubscriptionEvent.subscription_id == subscription["id"])))
        assert expect["history_kind"] in kinds
    if expect.get("acknowledged") or expect.get("consumed"):
        shop.app.drain()
        calls = [c.name for c in shop.play.calls]
        wanted = "consume" if expect.get("consumed") else "acknowledge"
        assert any(name.endswith(wanted) for name in calls), calls
