"""The chain cache: each chain verified once, within validity; every signature checked."""

from __future__ import annotations

import datetime as dt
import time

import jwt
import pytest
from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier
from cryptography.hazmat.primitives import serialization

from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import APP_APPLE_ID, BUNDLE_ID, sign_notification
from webhooks.apple import AppleRejected, AppleVerifier
from webhooks.apple_jws import FastSignedDataVerifier
from webhooks.chain_cache import CachingChainVerifier

NOW_MS = int(time.time() * 1000)


def notification(n: int, signed: int = NOW_MS) -> dict[str, object]:
    return {
        "notificationType": "DID_RENEW", "notificationUUID": f"66666666-0000-4000-8000-{n:012d}",
        "signedDate": signed,
        "data": {"status": 1, "transaction": {
            "originalTransactionId": "1", "transactionId": str(n), "productId": "p",
            "type": "Auto-Renewable Subscription", "expiresDate": signed + 1000,
        }, "renewal": {"originalTransactionId": "1", "autoRenewStatus": 1}},
    }


def verifier(ca: AppleTestCA, *, online: bool = False) -> AppleVerifier:
    return AppleVerifier(root_certificates=[ca.root_der], bundle_id=BUNDLE_ID,
                         app_apple_id=APP_APPLE_ID, environments=["sandbox"],
                         online_checks=online)


def test_verifier_is_the_library_verifier_with_our_cache(apple_ca: AppleTestCA) -> None:
    """Each environment's verifier is a library `SignedDataVerifier` using the shared cache."""
    v = verifier(apple_ca)
    library = v._verifiers["sandbox"]
    assert isinstance(library, SignedDataVerifier)
    assert isinstance(library, FastSignedDataVerifier)
    assert library._chain_cache is v.chain_cache


def test_one_chain_verification_for_many_payloads(apple_ca: AppleTestCA) -> None:
    """Fifty notifications with their nested JWS verify the chain once."""
    v = verifier(apple_ca)
    for n in range(50):
        verified = v.verify(sign_notification(apple_ca, notification(n)))
        assert verified.payload.data is not None
        v.transaction("sandbox", verified.payload.data.signedTransactionInfo or "")
        v.renewal_info("sandbox", verified.payload.data.signedRenewalInfo or "")
    assert v.chain_cache is not None
    assert v.chain_cache.misses == 1


def test_cached_chain_still_checks_every_signature(apple_ca: AppleTestCA) -> None:
    """A payload with the cached chain but a signature by another key is still rejected."""
    v = verifier(apple_ca)
    v.verify(sign_notification(apple_ca, notification(1)))
    impostor = AppleTestCA.create("Impostor")
    forged = jwt.encode(notification(2), impostor.leaf_key, algorithm="ES256",
                        headers={"x5c": apple_ca.x5c})
    with pytest.raises(AppleRejected):
        v.verify(forged)


def test_cache_not_used_outside_validity(apple_ca: AppleTestCA) -> None:
    """A payload dated outside the certificates' validity is checked afresh, and fails."""
    v = verifier(apple_ca)
    v.verify(sign_notification(apple_ca, notification(1)))
    before_ca = int(dt.datetime(2019, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    with pytest.raises(AppleRejected):
        v.verify(sign_notification(apple_ca, notification(2, signed=before_ca)))
    assert v.chain_cache is not None
    assert v.chain_cache.misses == 1


class CountingChain:
    """Stands in for the library's chain verifier at the outermost edge: counts, returns a key."""

    def __init__(self, ca: AppleTestCA) -> None:
        self.calls = 0
        self.pem = ca.leaf.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def verify_chain(self, certificates: list[str], online: bool, effective_date: int) -> str:
        self.calls += 1
        return self.pem


def test_online_entries_expire(apple_ca: AppleTestCA) -> None:
    """With OCSP on, a cached chain is re-verified once the bounded time has passed."""
    inner = CountingChain(apple_ca)
    now = [1_000_000.0]
    cache = CachingChainVerifier(inner, online_ttl_seconds=900, clock=lambda: now[0])
    date = int(time.time())
    for _ in range(3):
        cache.verify_chain(apple_ca.x5c, True, date)
    assert inner.calls == 1
    now[0] += 901
    cache.verify_chain(apple_ca.x5c, True, date)
    assert inner.calls == 2


def test_failures_are_not_cached(apple_ca: AppleTestCA) -> None:
    """A chain that failed verification is verified again next time (and fails again)."""
    other = AppleTestCA.create("Other")
    v = verifier(apple_ca)
    for n in range(2):
        with pytest.raises(AppleRejected):
            v.verify(sign_notification(other, notification(n)))
    assert v.chain_cache is not None
    assert v.chain_cache.misses == 0
