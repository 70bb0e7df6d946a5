"""Google Play test pieces: the package, push identities, notifications and pushing them."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.oidc import OidcIssuer, push_envelope

PACKAGE = "com.example.reconcile"
AUDIENCE = "https://reconcile.example/webhooks/google"
PUSH_ACCOUNT = "pubsub-push@test-project.iam.gserviceaccount.com"


def service_account_pem() -> str:
    """A throwaway RSA key in PEM, as a service-account JSON key carries it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def write_service_account(path: Path, private_key_pem: str, token_uri: str) -> Path:
    """A service-account JSON key file whose `token_uri` is `token_uri` (a fake's)."""
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-key",
        "private_key": private_key_pem,
        "client_email": "reconcile@test-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }))
    return path


def millis(when: dt.datetime) -> str:
    return str(int(when.timestamp() * 1000))


def subscription_notification(
    token: str, notification_type: int, when: dt.datetime, *, package: str = PACKAGE
) -> dict[str, Any]:
    return {
        "version": "1.0", "packageName": package, "eventTimeMillis": millis(when),
        "subscriptionNotification": {
            "version": "1.0", "notificationType": notification_type, "purchaseToken": token,
        },
    }


def one_time_notification(
    token: str, sku: str, notification_type: int, when: dt.datetime
) -> dict[str, Any]:
    return {
        "version": "1.0", "packageName": PACKAGE, "eventTimeMillis": millis(when),
        "oneTimeProductNotification": {
            "version": "1.0", "notificationType": notification_type, "purchaseToken": token,
            "sku": sku,
        },
    }


def voided_notification(
    token: str, order_id: str, product_type: int, when: dt.datetime, refund_type: int = 1
) -> dict[str, Any]:
    return {
        "version": "1.0", "packageName": PACKAGE, "eventTimeMillis": millis(when),
        "voidedPurchaseNotification": {
            "purchaseToken": token, "orderId": order_id, "productType": product_type,
            "refundType": refund_type,
        },
    }


def raw_envelope(data: str, message_id: str) -> dict[str, Any]:
    """An envelope whose `data` is exactly `data` (for malformed-data cases)."""
    return {"message": {"data": data, "messageId": message_id,
                        "publishTime": "2026-11-01T12:00:00.000Z"},
            "subscription": "projects/test/subscriptions/play-rtdn"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Pusher:
    """Posts Pub/Sub push envelopes to the running app with a valid (or chosen) OIDC token."""

    def __init__(self, client: httpx.Client, issuer: OidcIssuer) -> None:
        self.client = client
        self.issuer = issuer
        self.sent = 0

    def token(self, **overrides: Any) -> str:
        audience = overrides.pop("audience", AUDIENCE)
        email = overrides.pop("email", PUSH_ACCOUNT)
        return self.issuer.token(audience, email, **overrides)

    def post(
        self, envelope: dict[str, Any] | bytes, *, bearer: str | None = None,
        authorization: str | None = None,
    ) -> httpx.Response:
        header = authorization if authorization is not None else f"Bearer {bearer or self.token()}"
        headers = {"Authorization": header} if header else {}
        content = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
        headers["Content-Type"] = "application/json"
        return self.client.post("/webhooks/google", content=content, headers=headers)

    def push(self, notification: dict[str, Any], message_id: str | None = None) -> httpx.Response:
        """Push `notification` in a fresh envelope; answers the response (asserted 2xx)."""
        self.sent += 1
        envelope = push_envelope(notification, message_id or f"msg-{self.sent}")
        response = self.post(envelope)
        assert response.status_code == 200, response.text
        return response
