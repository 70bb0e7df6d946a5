"""Webhook endpoints: where events are pushed, with their signing secrets (Standard Webhooks).

Functions take the caller's session and never commit.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from reconcile.errors import Invalid, NotFound
from reconcile.ids import new_id
from reconcile.notify.event_types import KNOWN
from reconcile.notify.models import Delivery, WebhookEndpoint
from reconcile.views import iso

# After a rotation the old secret keeps signing beside the new one this long.
ROTATION_OVERLAP = timedelta(hours=24)
SECRET_PREFIX = "whsec_"  # noqa: S105  (the Standard Webhooks prefix, not a secret)


class UnknownEndpoint(NotFound):
    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id}", endpoint_id=endpoint_id)


def new_secret() -> str:
    """`whsec_` and 32 random bytes in base64, as Standard Webhooks libraries expect."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_url(url: str, *, allow_http: bool) -> str:
    """`url` if it may receive events: https, or http only on loopback unless allowed."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as error:
        raise Invalid(f"not a URL: {error}", url=url) from error
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Invalid("the endpoint URL must be http(s)://host/...", url=url)
    if parts.scheme == "http" and not allow_http and not _loopback(parts.hostname):
        raise Invalid("the endpoint URL must use https (http only on loopback, or with "
                      "RECONCILE_WEBHOOK_ALLOW_HTTP)", url=url)
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_types(types: Sequence[str] | None) -> list[str] | None:
    if types is None:
        return None
    unknown = sorted(set(types) - KNOWN)
    if unknown:
        raise Invalid(f"unknown event types: {', '.join(unknown)}", event_types=unknown)
    return list(dict.fromkeys(types))


def create(session: Session, *, url: str, event_types: Sequence[str] | None,
           description: str | None, allow_http: bool, now: datetime) -> WebhookEndpoint:
    row = WebhookEndpoint(
        id=new_id("we"), url=check_url(url, allow_http=allow_http),
        event_types=check_types(event_types), description=description, enabled=True,
        secret=new_secret(), created_at=now, updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def load(session: Session, endpoint_id: str, *, lock: bool = False) -> WebhookEndpoint:
    row = session.get(WebhookEndpoint, endpoint_id, with_for_update=lock)
    if row is None:
        raise UnknownEndpoint(endpoint_id)
    return row


def listed(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at,
                                                                 WebhookEndpoint.id)))


def update(session: Session, row: WebhookEndpoint, changes: dict[str, Any], *,
           allow_http: bool, now: datetime) -> WebhookEndpoint:
    """Apply a PATCH: `url`, `event_types`, `enabled`, `description`."""
    if "url" in changes:
        row.url = check_url(changes["url"], allow_http=allow_http)
    if "event_types" in changes:
        row.event_types = check_types(changes["event_types"])
    if "description" in changes:
        row.description = changes["description"]
    if "enabled" in changes:
        row.enabled = changes["enabled"]
        if row.enabled:
            row.disabled_reason = None
    row.updated_at = now
    return row


def remove(session: Session, row: WebhookEndpoint) -> None:
    """The endpoint and what it was still owed."""
    session.execute(delete(Delivery).where(Delivery.endpoint_id == row.id))
    session.delete(row)


def rotate(session: Session, row: WebhookEndpoint, now: datetime) -> str:
    """A new secret; the current one keeps signing beside it for `ROTATION_OVERLAP`."""
    row.previous_secret = row.secret
    row.previous_until = now + ROTATION_OVERLAP
    row.secret = new_secret()
    row.updated_at = now
    return row.secret


def signing_secrets(row: WebhookEndpoint, now: datetime) -> list[str]:
    """Every secret a delivery made at `now` is signed with."""
    keys = [row.secret]
    if row.previous_secret and row.previous_until is not None and now < row.previous_until:
        keys.append(row.previous_secret)
    return keys


def endpoint_json(row: WebhookEndpoint, *, secret: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": row.id, "url": row.url, "event_types": row.event_types,
        "description": row.description, "enabled": row.enabled,
        "disabled_reason": row.disabled_reason, "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
    if secret:
        document["secret"] = row.secret
    return document


def delivery_json(row: Delivery) -> dict[str, Any]:
    return {
        "event_id": row.event_id, "event_type": row.event_type, "status": row.status,
        "attempts": row.attempts, "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
        "delivered_at": iso(row.delivered_at),
    }
