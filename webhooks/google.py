"""Google Play real-time developer notifications: authenticate the Pub/Sub push, decode it."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.auth import jwt

from webhooks.body import check_json, parse_json
from webhooks.google_certs import CertificateCache, CertificatesUnavailable
from webhooks.intake import Incoming

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})

SUBSCRIPTION_TYPES = {
    1: "SUBSCRIPTION_RECOVERED",
    2: "SUBSCRIPTION_RENEWED",
    3: "SUBSCRIPTION_CANCELED",
    4: "SUBSCRIPTION_PURCHASED",
    5: "SUBSCRIPTION_ON_HOLD",
    6: "SUBSCRIPTION_IN_GRACE_PERIOD",
    7: "SUBSCRIPTION_RESTARTED",
    8: "SUBSCRIPTION_PRICE_CHANGE_CONFIRMED",
    9: "SUBSCRIPTION_DEFERRED",
    10: "SUBSCRIPTION_PAUSED",
    11: "SUBSCRIPTION_PAUSE_SCHEDULE_CHANGED",
    12: "SUBSCRIPTION_REVOKED",
    13: "SUBSCRIPTION_EXPIRED",
    17: "SUBSCRIPTION_ITEMS_CHANGED",
    18: "SUBSCRIPTION_CANCELLATION_SCHEDULED",
    19: "SUBSCRIPTION_PRICE_CHANGE_UPDATED",
    20: "SUBSCRIPTION_PENDING_PURCHASE_CANCELED",
    22: "SUBSCRIPTION_PRICE_STEP_UP_CONSENT_UPDATED",
}
ONE_TIME_TYPES = {1: "ONE_TIME_PRODUCT_PURCHASED", 2: "ONE_TIME_PRODUCT_CANCELED"}
REVOKED, PENDING_PURCHASE_CANCELED = 12, 20


class GoogleRejected(Exception):
    """The push token is missing or not one Google issued for us: answer 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Google push rejected: {reason}")
        self.reason = reason


class GoogleUnavailable(Exception):
    """Authentication could not finish (certificates unreachable): answer 5xx so Pub/Sub retries."""


class MalformedEnvelope(ValueError):
    """Not a Pub/Sub push envelope with a message id: nothing can even be recorded (400)."""


class UnusableNotification(ValueError):
    """An authentic message we can never process: kept as rejected, answered 2xx."""


class PushAuthenticator:
    """Checks the Pub/Sub push OIDC token: signature, expiry, issuer, audience, sender."""

    def __init__(
        self,
        audience: str,
        service_account: str,
        certs: CertificateCache | str,
        *,
        clock_skew_seconds: int = 10,
    ) -> None:
        self.audience = audience
        self.service_account = service_account
        self.certs = certs if isinstance(certs, CertificateCache) else CertificateCache(certs)
        self.clock_skew_seconds = clock_skew_seconds

    def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims; GoogleRejected for any fault in it."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise GoogleRejected("no bearer token")
        try:
            header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as error:
            raise GoogleRejected("malformed token") from error
        # Google signs push tokens with RS256 only; anything else is not theirs.
        if not isinstance(header, Mapping) or header.get("alg") != "RS256":
            raise GoogleRejected("unexpected signing algorithm")
        kid = header.get("kid")
        try:
            certs = self.certs.certificates(kid if isinstance(kid, str) else None)
        except CertificatesUnavailable as error:
            raise GoogleUnavailable(str(error)) from error
        try:
            claims = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=self.audience,
                clock_skew_in_seconds=self.clock_skew_seconds,
            )
        except (ValueError, TypeError) as error:
            raise GoogleRejected(_short(error)) from error
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise GoogleRejected("wrong issuer")
        if claims.get("email") != self.service_account:
            raise GoogleRejected("wrong email")
        if claims.get("email_verified") is not True:
            raise GoogleRejected("email not verified")
        return dict(claims)


def _short(error: Exception) -> str:
    text = str(error)
    if "expired" in text:
        return "token expired"
    if "audience" in text:
        return "wrong audience"
    if "key id" in text:
        return "unknown key id"
    if "signature" in text:
        return "bad signature"
    return "invalid token"


@dataclass(frozen=True)
class PushMessage:
    """The Pub/Sub message around a notification; `data` not yet decoded."""

    message_id: str
    data: str | None
    publish_time: str | None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeveloperNotification:
    """A decoded DeveloperNotification: exactly one kind, with what identifies its purchase."""

    package_name: str
    event_time: datetime
    kind: str  # subscription | one_time | voided | test
    label: str  # SUBSCRIPTION_RENEWED, ONE_TIME_PRODUCT_PURCHASED, VOIDED_PURCHASE, ...
    purchase_token: str | None = None
    notification_type: int | None = None
    sku: str | None = None
    order_id: str | None = None
    product_type: int | None = None  # voided: 1 subscription, 2 one-time
    refund_type: int | None = None  # voided: 1 full, 2 partial quantity
    raw: Mapping[str, Any] = field(default_factory=dict)


def decode_envelope(body: bytes | str) -> PushMessage:
    """The push envelope's message; MalformedEnvelope when there is no usable message id."""
    try:
        envelope = parse_json(body)
    except ValueError as error:
        raise MalformedEnvelope(f"body is not usable JSON: {error}") from error
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        raise MalformedEnvelope("no message object")
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str) or not message_id or len(message_id) > 128:
        raise MalformedEnvelope("no messageId")
    data = message.get("data")
    publish = message.get("publishTime") or message.get("publish_time")
    attributes = message.get("attributes")
    return PushMessage(
        message_id=message_id,
        data=data if isinstance(data, str) else None,
        publish_time=publish if isinstance(publish, str) else None,
        attributes=attributes if isinstance(attributes, dict) else {},
    )


def decode_notification(message: PushMessage, package_name: str) -> DeveloperNotification:
    """The DeveloperNotification in `message`; UnusableNotification for anything we can't use."""
    if not message.data:
        raise UnusableNotification("message has no data")
    try:
        decoded = base64.b64decode(message.data, validate=True)
        raw = json.loads(decoded)
    except (binascii.Error, ValueError, RecursionError) as error:
        raise UnusableNotification("data is not base64-encoded JSON") from error
    try:
        check_json(raw)
    except ValueError as error:
        raise UnusableNotification(f"data is unusable: {error}") from error
    if not isinstance(raw, dict):
        raise UnusableNotification("data is not a JSON object")
    if raw.get("packageName") != package_name:
        raise UnusableNotification(f"package {str(raw.get('packageName'))[:100]!r} is not ours")
    base: dict[str, Any] = {
        "package_name": package_name, "event_time": _event_time(raw), "raw": raw,
    }
    if isinstance(sub := raw.get("subscriptionNotification"), dict):
        code = _code(sub.get("notificationType"))
        return DeveloperNotification(
            kind="subscription", label=SUBSCRIPTION_TYPES.get(code, f"SUBSCRIPTION_{code}"),
            purchase_token=_token(sub), notification_type=code, **base,
        )
    if isinstance(one := raw.get("oneTimeProductNotification"), dict):
        code = _code(one.get("notificationType"))
        if code not in ONE_TIME_TYPES:
            raise UnusableNotification(f"unknown one-time notification type {code}")
        sku = one.get("sku")
        if not isinstance(sku, str) or not sku:
            raise UnusableNotification("one-time notification without sku")
        return DeveloperNotification(
            kind="one_time", label=ONE_TIME_TYPES[code], purchase_token=_token(one),
            notification_type=code, sku=sku, **base,
        )
    if isinstance(voided := raw.get("voidedPurchaseNotification"), dict):
        order = voided.get("orderId")
        return DeveloperNotification(
            kind="voided", label="VOIDED_PURCHASE", purchase_token=_token(voided),
            order_id=order if isinstance(order, str) else None,
            product_type=_optional_code(voided.get("productType")),
            refund_type=_optional_code(voided.get("refundType")), **base,
        )
    if isinstance(raw.get("testNotification"), dict):
        return DeveloperNotification(kind="test", label="TEST_NOTIFICATION", **base)
    raise UnusableNotification("unknown notification kind")


def _event_time(raw: Mapping[str, Any]) -> datetime:
    value = raw.get("eventTimeMillis")
    # Google's examples send a string of milliseconds; some clients relay a number.
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnusableNotification("eventTimeMillis missing or not a number")
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError) as error:
        raise UnusableNotification("eventTimeMillis out of range") from error


def _code(value: object) -> int:
    code = _optional_code(value)
    if code is None:
        raise UnusableNotification("notificationType missing or not a number")
    return code


def _optional_code(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _token(section: Mapping[str, Any]) -> str:
    token = section.get("purchaseToken")
    if not isinstance(token, str) or not token or len(token) > 512:
        raise UnusableNotification("purchaseToken missing or too long")
    return token


def incoming(body: bytes, package_name: str) -> Incoming:
    """What to keep for an authenticated push; MalformedEnvelope when there is no message id.

    A test notification needs no work and is kept as processed; anything we can never use
    (another package, bad data, an unknown kind) is kept as rejected with the reason.
    """
    message = decode_envelope(body)
    payload = body.decode("utf-8", errors="replace")
    try:
        notification = decode_notification(message, package_name)
    except UnusableNotification as error:
        return Incoming(channel="google", notification_id=message.message_id, kind="UNUSABLE",
                        payload=payload, status="rejected", error=str(error))
    return Incoming(
        channel="google",
        notification_id=message.message_id,
        kind=notification.label,
        payload=payload,
        store_time=notification.event_time,
        subject=notification.purchase_token,
        status="processed" if notification.kind == "test" else "pending",
    )
