"""A recorded notification made readable: the JWS layers of an Apple payload, the base64 data
of a Google Pub/Sub envelope. Signatures were checked at intake; this only decodes."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

MAX_DEPTH = 4


def decode_payload(channel: str, raw: str) -> Any:
    """The payload as nested JSON; what cannot be decoded is shown as it is."""
    if channel == "apple":
        return _unwrap(raw, 0)
    try:
        envelope = json.loads(raw)
    except ValueError:
        return raw
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if isinstance(message, dict) and isinstance(message.get("data"), str):
        with contextlib.suppress(ValueError, binascii.Error):
            message = {**message, "data": json.loads(base64.b64decode(message["data"]))}
        envelope = {**envelope, "message": message}
    return envelope


def _unwrap(value: Any, depth: int) -> Any:
    """Decode a compact JWS's claims, and every `signed...` JWS nested in them."""
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, str) and value.count(".") == 2:
        claims = _claims(value)
        return value if claims is None else _unwrap(claims, depth + 1)
    if isinstance(value, dict):
        return {k: _unwrap(v, depth + 1) if k.startswith("signed") or isinstance(v, dict)
                else v for k, v in value.items()}
    return value


def _claims(jws: str) -> Any | None:
    part = jws.split(".")[1]
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, binascii.Error):
        return None
