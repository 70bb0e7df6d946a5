"""Building signed App Store Server Notifications V2 from plain fixture dictionaries."""

from __future__ import annotations

import copy
from typing import Any

from tests.support.apple_ca import AppleTestCA

BUNDLE_ID = "com.example.phone"
APP_APPLE_ID = 1234567890


def sign_notification(ca: AppleTestCA, notification: dict[str, Any]) -> str:
    """A signedPayload for `notification`, whose `data` may hold plain `transaction` and
    `renewal` dictionaries: they are signed and put in as signedTransactionInfo/RenewalInfo."""
    body = copy.deepcopy(notification)
    data = body.get("data")
    if isinstance(data, dict):
        data.setdefault("bundleId", BUNDLE_ID)
        data.setdefault("appAppleId", APP_APPLE_ID)
        data.setdefault("environment", "Sandbox")
        signed_date = body.get("signedDate")
        for plain, signed in (("transaction", "signedTransactionInfo"),
                              ("renewal", "signedRenewalInfo")):
            if plain in data:
                inner = data.pop(plain)
                inner.setdefault("environment", data["environment"])
                if plain == "transaction":
                    inner.setdefault("bundleId", data["bundleId"])
                inner.setdefault("signedDate", signed_date)
                data[signed] = ca.sign(inner)
    body.setdefault("version", "2.0")
    return ca.sign(body)
