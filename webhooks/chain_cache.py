"""Verify each distinct Apple certificate chain once, not three times per notification.

Every JWS in a notification (payload, transaction, renewal info) carries the same x5c chain, and
Apple rotates its signing certificate rarely. The library re-verifies the chain on every call when
online checks are off; this wrapper remembers a verified chain keyed by its exact bytes, and serves
it again only while the date being checked lies inside every certificate's validity and, with OCSP
on, for a bounded time (revocation must be re-checked). Each JWS signature is still verified by the
library against the returned key, every time.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


class ChainVerifier(Protocol):
    def verify_chain(
        self, certificates: list[str], perform_online_checks: bool, effective_date: int
    ) -> str: ...


@dataclass(frozen=True)
class _Verified:
    public_key: str
    key: ec.EllipticCurvePublicKey
    valid_from: float
    valid_until: float
    verified_at: float


class CachingChainVerifier:
    """A drop-in for the library's `_ChainVerifier` that caches successful verifications."""

    def __init__(
        self,
        inner: ChainVerifier,
        *,
        online_ttl_seconds: float = 15 * 60,
        max_entries: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._inner = inner
        self._online_ttl = online_ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, ...], _Verified] = OrderedDict()
        self._lock = threading.Lock()
        self.misses = 0

    def verify_chain(
        self, certificates: list[str], perform_online_checks: bool, effective_date: int
    ) -> str:
        """The library's interface: the leaf's public key as PEM."""
        return self._verified(certificates, perform_online_checks, effective_date).public_key

    def public_key(
        self, certificates: Sequence[str], perform_online_checks: bool, effective_date: int
    ) -> ec.EllipticCurvePublicKey:
        """The leaf's public key, parsed once per verified chain."""
        return self._verified(certificates, perform_online_checks, effective_date).key

    def _verified(
        self, certificates: Sequence[str], perform_online_checks: bool, effective_date: int
    ) -> _Verified:
        key = tuple(certificates)
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and self._usable(hit, perform_online_checks, effective_date, now):
                self._entries.move_to_end(key)
                return hit
        public_key = self._inner.verify_chain(
            list(certificates), perform_online_checks, effective_date)
        parsed = serialization.load_pem_public_key(public_key.encode())
        if not isinstance(parsed, ec.EllipticCurvePublicKey):
            raise ValueError("leaf key is not an EC key")
        valid_from, valid_until = _validity(certificates)
        entry = _Verified(public_key, parsed, valid_from, valid_until, now)
        with self._lock:
            self.misses += 1
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return entry

    def _usable(self, hit: _Verified, online: bool, effective_date: float, now: float) -> bool:
        if not hit.valid_from <= effective_date <= hit.valid_until:
            return False
        return not online or now - hit.verified_at < self._online_ttl


def _validity(certificates: Sequence[str]) -> tuple[float, float]:
    """The window in which every certificate of the chain is valid."""
    certs = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in certificates]
    start = max(c.not_valid_before_utc for c in certs)
    end = min(c.not_valid_after_utc for c in certs)
    return start.timestamp(), end.timestamp()


