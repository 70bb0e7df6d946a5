"""Building the store events and admin calls the policy tests are made of."""

from __future__ import annotations

from typing import Any

from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.server import RunningApp

DAY_MS = 86_400_000
NOW_MS = 1_793_534_400_000  # 2026-11-01T12:00:00Z, the FakeClock's start
MONTHLY = "com.example.phone.monthly"
LITE = "com.example.phone.monthly.lite"
CREDITS = "com.example.phone.credits100"
AUTO_RENEWABLE = "Auto-Renewable Subscription"


def apple_note(
    n: int,
    ntype: str,
    subtype: str | None = None,
    *,
    account: str,
    otx: str = "7000000000000001",
    tid: str | None = None,
    product: str = MONTHLY,
    renews: str | None = None,
    auto_renew: int = 1,
    status: int = 1,
    tx_type: str = AUTO_RENEWABLE,
    signed_at: int | None = None,
    revoked_at: int | None = None,
    **data: Any,
) -> dict[str, Any]:
    """An App Store Server Notification V2 (plain dicts, signed when posted)."""
    transaction: dict[str, Any] = {
        "originalTransactionId": otx, "transactionId": tid or otx, "productId": product,
        "purchaseDate": NOW_MS - DAY_MS, "type": tx_type, "appAccountToken": account,
        "price": 9990, "currency": "USD", "quantity": 1,
    }
    if revoked_at is not None:
        transaction["revocationDate"] = revoked_at
    body: dict[str, Any] = {
        "notificationType": ntype,
        "notificationUUID": f"77777777-0000-4000-8000-{n:012d}",
        "signedDate": signed_at if signed_at is not None else NOW_MS - DAY_MS + n,
        "data": {"status": status, "transaction": transaction, **data},
    }
    if tx_type == AUTO_RENEWABLE:
        transaction["expiresDate"] = NOW_MS + 29 * DAY_MS
        body["data"]["renewal"] = {"originalTransactionId": otx, "productId": product,
                                   "autoRenewProductId": renews or product,
                                   "autoRenewStatus": auto_renew}
    else:
        del body["data"]["status"]
    if subtype:
        body["subtype"] = subtype
    return body


def post_apple(app: RunningApp, ca: AppleTestCA, *notes: dict[str, Any]) -> None:
    """Post each notification to the webhook and run the worker until idle."""
    for note in notes:
        response = app.client.post("/webhooks/apple",
                                   json={"signedPayload": sign_notification(ca, note)})
        assert response.status_code == 200, response.text
    app.drain()


def apple_subscription(app: RunningApp, ca: AppleTestCA, account: str, n: int = 1,
                       otx: str = "7000000000000001") -> dict[str, Any]:
    """An active, renewing Apple subscription of `account`, as the API shows it."""
    post_apple(app, ca, apple_note(n, "SUBSCRIBED", "INITIAL_BUY", account=account, otx=otx))
    [sub] = app.client.get("/v1/subscriptions", params={"store_id": otx}).json()["items"]
    assert isinstance(sub, dict)
    return sub


def portal_subscription(app: RunningApp, account: str, *, expires_at: str = "2026-12-01T12:00:00Z",
                        product: str = "portal.pro.monthly", auto_renew: bool = True,
                        store_id: str | None = None) -> dict[str, Any]:
    """A portal subscription created through the admin API (201)."""
    body: dict[str, Any] = {"account_id": account, "product_id": product,
                            "expires_at": expires_at, "auto_renew": auto_renew}
    if store_id is not None:
        body["store_id"] = store_id
    response = app.client.post("/v1/portal/subscriptions", json=body)
    assert response.status_code == 201, response.text
    sub: dict[str, Any] = response.json()
    return sub
