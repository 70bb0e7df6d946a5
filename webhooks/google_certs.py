"""Google's token-signing certificates, fetched from a URL and cached.

`google.oauth2.id_token.verify_token(..., certs_url=)` downloads the certificates on every call:
one outbound request per webhook, and every webhook fails while that endpoint is slow. Google
rotates these keys slowly and publishes new ones before signing with them, so we keep them for
the `Cache-Control: max-age` the endpoint announces and refetch early only for an unknown key id.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping

import requests

DEFAULT_MAX_AGE = 3600.0
# A few minutes at least (a flapping endpoint must not be hammered), a day at most.
MIN_MAX_AGE, MAX_MAX_AGE = 60.0, 86400.0


class CertificatesUnavailable(Exception):
    """The certificates could not be fetched and none are held: a transient fault."""


class CertificateCache:
    """`{kid: certificate PEM}` from `url`, shared by every request thread."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        refetch_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.timeout = timeout
        # An unknown kid triggers at most one refetch per interval: a flood of tokens with
        # made-up key ids must not turn into a flood of requests to Google.
        self.refetch_interval = refetch_interval
        self.clock = clock
        self.fetches = 0
        self._certs: dict[str, str] = {}
        self._fresh_until = float("-inf")
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def certificates(self, kid: str | None) -> Mapping[str, str]:
        """The current certificates, refetched when stale or when `kid` is not among them."""
        with self._lock:
            now = self.clock()
            stale = now >= self._fresh_until
            unknown = kid is not None and kid not in self._certs
            if stale or (unknown and now - self._fetched_at >= self.refetch_interval):
                try:
                    self._fetch(now)
                except CertificatesUnavailable:
                    # Keys outlive their publication by days: stale ones still verify, and
                    # the endpoint is asked again only after a pause.
                    if not self._certs or unknown:
                        raise
                    self._fresh_until = now + self.refetch_interval
            return dict(self._certs)

    def _fetch(self, now: float) -> None:
        self.fetches += 1
        self._fetched_at = now
        try:
            response = requests.get(self.url, timeout=self.timeout)
        except requests.RequestException as error:
            raise CertificatesUnavailable(f"certificates unreachable: {error}") from error
        if response.status_code != 200:
            raise CertificatesUnavailable(f"certificates answered {response.status_code}")
        try:
            body = response.json()
        except ValueError as error:
            raise CertificatesUnavailable("certificates are not JSON") from error
        if not isinstance(body, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in body.items()
        ):
            raise CertificatesUnavailable("certificates are not a {kid: PEM} object")
        self._certs = body
        self._fresh_until = now + _max_age(response.headers.get("Cache-Control", ""))


def _max_age(cache_control: str) -> float:
    match = re.search(r"max-age=(\d+)", cache_control)
    seconds = float(match.group(1)) if match else DEFAULT_MAX_AGE
    return min(MAX_MAX_AGE, max(MIN_MAX_AGE, seconds))
