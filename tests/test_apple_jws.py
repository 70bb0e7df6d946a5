"""Our single-pass JWS step agrees with the stock library verifier on every input."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.signed_data_verifier import (
    SignedDataVerifier,
    VerificationException,
    _ChainVerifier,
)

from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import APP_APPLE_ID, BUNDLE_ID, sign_notification
from webhooks.apple_jws import FastSignedDataVerifier
from webhooks.chain_cache import CachingChainVerifier

NOW_MS = int(time.time() * 1000)


def body(**changes: Any) -> dict[str, Any]:
    notification: dict[str, Any] = {
        "notificationType": "DID_RENEW", "notificationUUID": "88888888-0000-4000-8000-000000000001",
        "signedDate": NOW_MS,
        "data": {"status": 1, "environment": "Sandbox", "transaction": {
            "originalTransactionId": "1", "transactionId": "2", "productId": "p",
            "type": "Auto-Renewable Subscription"}},
    }
    notification.update(changes)
    return notification


def segments(token: str) -> list[str]:
    return token.split(".")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resign_header(ca: AppleTestCA, header: dict[str, Any]) -> str:
    return jwt.encode(body(), ca.leaf_key, algorithm="ES256", headers=header)


Case = Callable[[AppleTestCA], str]
CASES: dict[str, Case] = {
    "valid": lambda ca: sign_notification(ca, body()),
    "tampered-payload": lambda ca: ".".join(
        [segments(sign_notification(ca, body()))[0], b64(json.dumps(body(signedDate=1)).encode()),
         segments(sign_notification(ca, body()))[2]]),
    "bad-base64": lambda ca: sign_notification(ca, body()).replace(".", ".!!", 1),
    "padded-segment": lambda ca: sign_notification(ca, body()) + "=",
    "two-segments": lambda ca: ".".join(segments(sign_notification(ca, body()))[:2]),
    "alg-none": lambda ca: f"{b64(json.dumps({'alg': 'none', 'x5c': ca.x5c}).encode())}."
                           f"{b64(json.dumps(body()).encode())}.",
    "hs256": lambda ca: jwt.encode(body(), "k" * 32, algorithm="HS256", headers={"x5c": ca.x5c}),
    "no-x5c": lambda ca: jwt.encode(body(), ca.leaf_key, algorithm="ES256"),
    "empty-x5c": lambda ca: resign_header(ca, {"x5c": []}),
    "short-chain": lambda ca: resign_header(ca, {"x5c": ca.x5c[:2]}),
    "other-ca": lambda ca: sign_notification(AppleTestCA.create("Other"), body()),
    "leaf-of-other-key": lambda ca: jwt.encode(
        body(), AppleTestCA.create("Other").leaf_key, algorithm="ES256",
        headers={"x5c": ca.x5c}),
    "expired-claim": lambda ca: sign_notification(ca, body(exp=int(time.time()) - 10)),
    "future-iat": lambda ca: sign_notification(ca, body(iat=int(time.time()) + 3600)),
    "audience": lambda ca: sign_notification(ca, body(aud="someone")),
    "wrong-bundle": lambda ca: sign_notification(
        ca, body(data={"environment": "Sandbox", "bundleId": "x"})),
    "production": lambda ca: sign_notification(
        ca, body(data={"environment": "Production", "bundleId": BUNDLE_ID,
                       "appAppleId": APP_APPLE_ID})),
    "before-validity": lambda ca: sign_notification(ca, body(signedDate=1_500_000_000_000)),
    "not-json": lambda ca: f"{b64(b'{}')}.{b64(b'not json')}.{b64(b'x' * 64)}",
}


def verdict(verifier: SignedDataVerifier, token: str) -> str:
    try:
        verifier.verify_and_decode_notification(token)
    except VerificationException as error:
        return error.status.name
    return "OK"


@pytest.mark.parametrize("case", list(CASES))
def test_same_verdict_as_the_library(apple_ca: AppleTestCA, case: str) -> None:
    """For valid, tampered and forged inputs, both verifiers accept or reject alike."""
    token = CASES[case](apple_ca)
    stock = SignedDataVerifier([apple_ca.root_der], False, Environment.SANDBOX, BUNDLE_ID)
    fast = FastSignedDataVerifier([apple_ca.root_der], False, Environment.SANDBOX, BUNDLE_ID,
                                  None, CachingChainVerifier(_ChainVerifier([apple_ca.root_der])))
    assert verdict(fast, token) == verdict(stock, token)
    assert (verdict(fast, token) == "OK") == (case == "valid")


@pytest.mark.parametrize("environment", [Environment.XCODE, Environment.LOCAL_TESTING])
def test_refuses_unsigned_environments(apple_ca: AppleTestCA, environment: Environment) -> None:
    """The environments for which the library skips signatures cannot be configured at all."""
    with pytest.raises(ValueError, match="refusing"):
        FastSignedDataVerifier([apple_ca.root_der], False, environment, BUNDLE_ID, None,
                               CachingChainVerifier(_ChainVerifier([apple_ca.root_der])))
