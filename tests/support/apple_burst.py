"""Many subscriptions' worth of App Store notifications, with the state each must end in.

Used by the multi-process tests and the ingest benchmarks: every subscription gets the same
short story (bought, renewed, renewal turned off), told by distinct signed notifications.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

PRODUCT = "com.example.phone.monthly"
_NAMESPACE = uuid.UUID("6f1c2a3e-0000-4000-8000-000000000000")


@dataclass(frozen=True)
class Story:
    """One subscription's notifications (in store order) and its expected final state."""

    original_transaction_id: str
    notifications: list[dict[str, Any]]
    expected: dict[str, Any]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def story(index: int, start: datetime) -> Story:
    """Subscription `index`: SUBSCRIBED at `start`, DID_RENEW a month on, then auto-renew off.

    Expiry dates are a month apart from `start`; pass a `start` a month before now for a
    subscription that is active now.
    """
    original = f"39{index:014d}"
    account = str(uuid.uuid5(_NAMESPACE, f"account-{index}"))
    first_expiry = start + timedelta(days=30)
    second_expiry = start + timedelta(days=60)

    def transaction(number: int, purchased: datetime, expires: datetime) -> dict[str, Any]:
        transaction_id = f"{original[:-2]}{number:02d}"
        return {
            "originalTransactionId": original, "transactionId": transaction_id,
            "webOrderLineItemId": f"wol-{transaction_id}", "productId": PRODUCT,
            "subscriptionGroupIdentifier": "21000001", "purchaseDate": _ms(purchased),
            "originalPurchaseDate": _ms(start), "expiresDate": _ms(expires), "quantity": 1,
            "type": "Auto-Renewable Subscription", "appAccountToken": account,
            "inAppOwnershipType": "PURCHASED",
            "transactionReason": "PURCHASE" if number == 1 else "RENEWAL",
            "storefront": "USA", "storefrontId": "143441", "price": 9990, "currency": "USD",
        }

    def renewal(auto_renew: bool) -> dict[str, Any]:
        return {
            "originalTransactionId": original, "autoRenewProductId": PRODUCT,
            "productId": PRODUCT, "autoRenewStatus": 1 if auto_renew else 0,
            "renewalDate": _ms(second_expiry), "recentSubscriptionStartDate": _ms(start),
        }

    def notification(n: int, kind: str, subtype: str | None, signed: datetime,
                     data: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "notificationType": kind,
            "notificationUUID": str(uuid.uuid5(_NAMESPACE, f"{index}-{n}")),
            "signedDate": _ms(signed), "version": "2.0",
            "data": {"environment": "Sandbox", "status": 1, **data},
        }
        if subtype:
            body["subtype"] = subtype
        return body

    renewed = start + timedelta(days=30)
    notifications = [
        notification(1, "SUBSCRIBED", "INITIAL_BUY", start + timedelta(seconds=5), {
            "transaction": transaction(1, start, first_expiry), "renewal": renewal(True)}),
        notification(2, "DID_RENEW", None, renewed + timedelta(seconds=5), {
            "transaction": transaction(2, renewed, second_expiry), "renewal": renewal(True)}),
        notification(3, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED",
                     renewed + timedelta(days=3), {
            "transaction": transaction(2, renewed, second_expiry), "renewal": renewal(False)}),
    ]
    expected = {
        "store_id": original, "account_id": account, "product_id": PRODUCT,
        "status": "active", "auto_renew": False, "expires_at": _iso(second_expiry),
    }
    return Story(original, notifications, expected)
