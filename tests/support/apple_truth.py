"""Planting Apple state on both sides: ours through the webhook, the store's in the fake."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tests.fakes.appstore import FakeAppStore, renewal_payload, transaction_payload
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import BUNDLE_ID, sign_notification
from tests.support.server import RunningApp

DAY_MS = 86_400_000
MONTHLY = "com.example.phone.monthly"
YEARLY = "com.example.phone.yearly"
# The clock's default now is 2026-11-01T12:00Z: a month-old purchase, a webhook an hour after
# it, and the store's reads signed at "now".
PURCHASED = int(datetime(2026, 10, 20, tzinfo=UTC).timestamp() * 1000)
WEBHOOK_AT = PURCHASED + 3_600_000
STORE_AT = int(datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp() * 1000)
EXPIRES = PURCHASED + 30 * DAY_MS


def iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def subscribed(
    otid: str, *, product: str = MONTHLY, expires: int = EXPIRES, auto_renew: int = 1,
    status: int = 1, signed: int = WEBHOOK_AT, notification_uuid: str | None = None,
    account: str | None = None,
) -> dict[str, Any]:
    """A SUBSCRIBED notification (plain dicts; `sign_notification` signs the nested parts)."""
    transaction: dict[str, Any] = {
        "originalTransactionId": otid, "transactionId": f"{otid}01", "productId": product,
        "purchaseDate": PURCHASED, "expiresDate": expires,
        "type": "Auto-Renewable Subscription", "inAppOwnershipType": "PURCHASED",
        "price": 9990, "currency": "USD",
    }
    if account:
        transaction["appAccountToken"] = account
    return {
        "notificationType": "SUBSCRIBED", "subtype": "INITIAL_BUY",
        "notificationUUID": notification_uuid or str(uuid.uuid4()), "signedDate": signed,
        "data": {
            "status": status, "transaction": transaction,
            "renewal": {"originalTransactionId": otid, "autoRenewStatus": auto_renew,
                        "autoRenewProductId": product, "productId": product},
        },
    }


def subscribe(app: RunningApp, ca: AppleTestCA, otid: str, **fields: Any) -> dict[str, Any]:
    """Our side: the subscription as a delivered webhook made it; returns the Subscription."""
    body = {"signedPayload": sign_notification(ca, subscribed(otid, **fields))}
    assert app.client.post("/webhooks/apple", json=body).status_code == 200
    app.drain()
    [sub] = app.client.get("/v1/subscriptions", params={"store_id": otid}).json()["items"]
    return dict(sub)


def store_has(
    fake: FakeAppStore, otid: str, *, product: str = MONTHLY, expires: int = EXPIRES,
    auto_renew: int = 1, status: int = 1, signed: int = STORE_AT,
    renews_as: str | None = None, grace_until: int | None = None, **transaction: Any,
) -> None:
    """The store's side: what a status read of `otid` answers, signed at `signed`."""
    tx = transaction_payload(
        transaction_id=f"{otid}01", original_transaction_id=otid, product_id=product,
        bundle_id=BUNDLE_ID, purchase_date=PURCHASED, expires_date=expires, signed_date=signed,
        **transaction,
    )
    renewal = renewal_payload(
        original_transaction_id=otid, product_id=product, auto_renew_product_id=renews_as,
        auto_renew_status=auto_renew, signed_date=signed, grace_period_expires_date=grace_until,
    )
    fake.add_subscription(tx, renewal, status)


def reconcile(app: RunningApp, **body: Any) -> dict[str, Any]:
    """Start a run over the API, let the worker carry it out, and read the report."""
    started = app.client.post("/v1/reconciliations", json=body)
    assert started.status_code == 202, started.text
    app.drain()
    report = app.client.get(f"/v1/reconciliations/{started.json()['id']}").json()
    return dict(report)


def kinds(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's discrepancies by kind (each kind expected once)."""
    found = {d["kind"]: d for d in report["discrepancies"]}
    assert len(found) == len(report["discrepancies"]), report["discrepancies"]
    return found
