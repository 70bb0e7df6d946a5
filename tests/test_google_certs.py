"""The certificate cache: fetched once, kept for max-age, refetched for new keys and outages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.google import AUDIENCE, PUSH_ACCOUNT
from tests.support.oidc import OidcIssuer
from webhooks.google import GoogleRejected, GoogleUnavailable, PushAuthenticator
from webhooks.google_certs import CertificateCache, CertificatesUnavailable


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer(kid="cache-key-1", max_age=600) as own:
        yield own


def authenticator(issuer: OidcIssuer, ticker: Ticker) -> PushAuthenticator:
    return PushAuthenticator(AUDIENCE, PUSH_ACCOUNT,
                             CertificateCache(issuer.certs_url, clock=ticker))


def test_kept_for_max_age(issuer: OidcIssuer) -> None:
    """Certificates are reused until the endpoint's max-age runs out, then fetched again."""
    ticker = Ticker()
    auth = authenticator(issuer, ticker)
    for _ in range(3):
        auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}")
    assert issuer.fetches == 1
    ticker.now += 601
    auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}")
    assert issuer.fetches == 2


def test_new_key_id_refetches_but_not_in_a_flood(issuer: OidcIssuer) -> None:
    """A token with an unknown kid refetches once per interval; made-up kids are then refused."""
    ticker = Ticker()
    auth = authenticator(issuer, ticker)
    auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}")
    issuer.rotate("cache-key-2")
    ticker.now += 6
    auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}")
    assert issuer.fetches == 2
    for _ in range(5):
        with pytest.raises(GoogleRejected, match="unknown key id"):
            auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT, kid='made-up')}")
    assert issuer.fetches == 2


def test_stale_certificates_survive_an_outage(issuer: OidcIssuer) -> None:
    """When the endpoint fails after max-age, the held certificates still verify."""
    ticker = Ticker()
    auth = authenticator(issuer, ticker)
    auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}")
    ticker.now += 601
    issuer.fail_next(3)
    auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}")
    auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}")
    assert issuer.fetches == 2  # one failed attempt, then a pause before asking again


def test_no_certificates_at_all_is_unavailable(issuer: OidcIssuer) -> None:
    """With nothing cached and the endpoint failing, verification is a transient fault."""
    issuer.fail_next(1, status=503)
    auth = authenticator(issuer, Ticker())
    with pytest.raises(GoogleUnavailable):
        auth.verify(f"Bearer {issuer.token(AUDIENCE, PUSH_ACCOUNT)}")


def test_unreachable_endpoint() -> None:
    """A closed port is reported as unavailable, not as a bad token."""
    with OidcIssuer() as gone:
        url = gone.certs_url
    with pytest.raises(CertificatesUnavailable):
        CertificateCache(url, timeout=1).certificates(None)
