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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509


class ChainVerifier(Protocol):
    def verify_chain(
        self, certificates: list[str], perform_online_checks: bool, effective_date: int
    ) -> str: ...


@dataclass(frozen=True)
class _Verified:
    public_key: str
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
        key = tuple(certificates)
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and self._usable(hit, perform_online_checks, effective_date, now):
                self._entries.move_to_end(key)
                return hit.public_key
        public_key = self._inner.verify_chain(certificates, perform_online_checks, effective_date)
        valid_from, valid_until = _validity(certificates)
        with self._lock:
            self.misses += 1
            self._entries[key] = _Verified(public_key, valid_from, valid_until, now)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return public_key

    def _usable(self, hit: _Verified, online: bool, effective_date: float, now: float) -> bool:
        if not hit.valid_from <= effective_date <= hit.valid_until:
            return False
        return not online or now - hit.verified_at < self._online_ttl


def _validity(certificates: list[str]) -> tuple[float, float]:
    """The window in which every certificate of the chain is valid."""
    certs = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in certificates]
    start = max(c.not_valid_before_utc for c in certs)
    end = min(c.not_valid_after_utc for c in certs)
    return start.timestamp(), end.timestamp()


def install(verifier: Any, cache: CachingChainVerifier) -> None:
    """Route a `SignedDataVerifier`'s chain checks through `cache`.

    `_chain_verifier` is private to app-store-server-library 3.x; tests/test_apple_verify.py
    pins that the attribute exists and that the cache is really consulted.
    """
    if not hasattr(verifier, "_chain_verifier"):
        raise RuntimeError("app-store-server-library changed: SignedDataVerifier._chain_verifier")
    verifier._chain_verifier = cache
