"""The business-facing writers tell their changes as events: submitted purchases, transfers and
every kind of credits ledger entry, each in the transaction that made it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.apple_payloads import sign_notification
from tests.support.purchases import APP_TOKEN, FIXTURES, Shop, load

CONSUMABLE = next(p for p in FIXTURES if p.stem == "apple_signed_transaction_consumable")
SUBSCRIPTION = next(p for p in FIXTURES if p.stem == "apple_signed_transaction_owned_transfer")


def events(shop: Shop, account: str) -> list[dict[str, Any]]:
    answer = shop.app.client.get("/v1/events", params={"account_id": account, "limit": 200},
                                 headers={"Authorization": f"Bearer {APP_TOKEN}"})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    assert [e["sequence"] for e in items] == list(range(1, len(items) + 1))
    return items


def types(shop: Shop, account: str) -> list[str]:
    return [e["type"] for e in events(shop, account)]


def test_a_credit_pack_is_told_from_purchase_to_clawback(
    shop_for: Callable[[dict[str, Any]], Shop],
) -> None:
    """Submitting a credit pack tells purchase.completed and credits.granted; a debit, an
    adjustment and the store's refund tell credits.debited, .adjusted and .clawed_back."""
    shop = shop_for(load(CONSUMABLE))
    assert shop.submit({"account_id": "acct-1", "form": "signed_transaction"}).status_code == 200
    told = types(shop, "acct-1")
    assert "purchase.completed" in told
    assert told.count("credits.granted") == 1
    client = shop.app.client
    debit = client.post("/v1/accounts/acct-1/credits/debits",
                        json={"amount": 30, "idempotency_key": "call-1"})
    assert debit.status_code == 201, debit.text
    assert client.post("/v1/accounts/acct-1/credits/adjustments",
                       json={"amount": -5, "note": "rounding"}).status_code == 201
    tx = shop.transactions[0]
    refund = {"notificationType": "REFUND",
              "notificationUUID": "99999999-0000-4000-8000-00000000000f",
              "signedDate": shop.now_ms,
              "data": {"transaction": {**tx, "revocationDate": shop.now_ms}}}
    answer = client.post("/webhooks/apple",
                         json={"signedPayload": sign_notification(shop.ca, refund)})
    assert answer.status_code == 200
    shop.app.drain()
    told = types(shop, "acct-1")
    for kind in ("credits.debited", "credits.adjusted", "credits.clawed_back",
                 "refund.recorded", "purchase.revoked"):
        assert told.count(kind) == 1, (kind, told)
    [debited] = [e for e in events(shop, "acct-1") if e["type"] == "credits.debited"]
    assert debited["data"]["entry"]["amount"] == -30
    assert debited["data"]["entry"]["reference"] == "call-1"


def test_a_transfer_is_told_to_both_accounts(shop_for: Callable[[dict[str, Any]], Shop]) -> None:
    """Moving a subscription to the submitting account tells subscription.transferred to the
    account it left and to the one it joined, and the entitlements follow it."""
    shop = shop_for(load(SUBSCRIPTION))
    assert shop.submit({"account_id": "acct-owner", "form": "signed_transaction"}).status_code \
        == 200
    assert shop.submit({"account_id": "acct-1", "form": "signed_transaction"}).status_code == 200
    old, new = types(shop, "acct-owner"), types(shop, "acct-1")
    assert "subscription.transferred" in old
    assert "subscription.transferred" in new
    assert "entitlement.revoked" in old
    assert "entitlement.granted" in new
    again = shop.submit({"account_id": "acct-1", "form": "signed_transaction"})
    assert again.status_code == 200
    assert types(shop, "acct-1") == new  # the same submission again tells nothing new
