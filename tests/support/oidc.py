"""A stand-in for Google's Pub/Sub push token signer, and Pub/Sub push envelopes.

`OidcIssuer` serves its signing certificates as `{kid: cert_pem}` JSON over real HTTP, the format
of https://www.googleapis.com/oauth2/v1/certs, so the service verifies tokens with the same
`google.oauth2.id_token` code path it uses in production, pointed at `certs_url`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from tests.fakes.local_server import LocalServer

GOOGLE_ISSUER = "https://accounts.google.com"
DEFAULT_SUBSCRIPTION = "projects/test/subscriptions/play-rtdn"


@dataclass(frozen=True)
class SigningKey:
    """One RSA-2048 key with its self-signed certificate, published under `kid`."""

    kid: str
    private_key_pem: str
    cert_pem: str


def _signing_key(kid: str) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test-oidc-{kid}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(kid, pem, cert.public_bytes(serialization.Encoding.PEM).decode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, issuer: OidcIssuer) -> None:
        self.issuer = issuer
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        status, body, max_age = self.server.issuer._serve(self.path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        if status == 200:
            self.send_header("Cache-Control", f"public, max-age={max_age}, must-revalidate")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class OidcIssuer(LocalServer):
    """Signs Pub/Sub-push-style OIDC tokens and publishes the certificates that verify them."""

    def __init__(self, kid: str = "test-key-1", *, max_age: int = 3600) -> None:
        """Generate the first signing key; `max_age` is the certificates' Cache-Control max-age."""
        self.lock = threading.Lock()
        self.max_age = max_age
        self.fetches = 0
        self._failures: list[int] = []
        self.keys: dict[str, SigningKey] = {}
        self.kid = ""
        self.rotate(kid)
        super().__init__()
        self.thread_name = "oidc-issuer"

    def _make_server(self) -> _Server:
        return _Server(self)

    @property
    def certs_url(self) -> str:
        """Where `{kid: cert_pem}` is served, for `RECONCILE_GOOGLE_OIDC_CERTS_URL`."""
        return self.url + "oauth2/v1/certs"

    @property
    def cert_pem(self) -> str:
        """The current signing key's certificate."""
        return self.keys[self.kid].cert_pem

    def rotate(self, kid: str | None = None, *, keep_old: bool = True) -> str:
        """Add a fresh signing key and sign with it from now on; answer its kid."""
        new_kid = kid or f"test-key-{len(self.keys) + 1}"
        key = _signing_key(new_kid)
        with self.lock:
            if not keep_old:
                self.keys.clear()
            self.keys[new_kid] = key
            self.kid = new_kid
        return new_kid

    def fail_next(self, times: int = 1, status: int = 503) -> None:
        """Make the next `times` certificate fetches answer `status`."""
        with self.lock:
            self._failures.extend([status] * times)

    def token(
        self,
        audience: str,
        email: str,
        *,
        email_verified: bool = True,
        issuer: str = GOOGLE_ISSUER,
        expires_in: int = 3600,
        now: dt.datetime | float | None = None,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Sign an RS256 push token; an unpublished `kid` still signs, with the current key."""
        if now is None:
            issued = int(time.time())
        elif isinstance(now, dt.datetime):
            issued = int(now.timestamp())
        else:
            issued = int(now)
        with self.lock:
            key = self.keys.get(kid or self.kid, self.keys[self.kid])
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "azp": _subject(email),
            "sub": _subject(email),
            "email": email,
            "email_verified": email_verified,
            "iat": issued,
            "exp": issued + expires_in,
        }
        if extra:
            claims.update(extra)
        signer = crypt.RSASigner.from_string(  # type: ignore[no-untyped-call]
            key.private_key_pem, key_id=kid or self.kid
        )
        encoded: bytes = jwt.encode(signer, claims)  # type: ignore[no-untyped-call]
        return encoded.decode()

    def _serve(self, path: str) -> tuple[int, dict[str, Any], int]:
        with self.lock:
            if path.split("?", 1)[0] != "/oauth2/v1/certs":
                return 404, {"error": "not found"}, 0
            self.fetches += 1
            if self._failures:
                return self._failures.pop(0), {"error": "injected failure"}, 0
            return 200, {kid: key.cert_pem for kid, key in self.keys.items()}, self.max_age


def _subject(email: str) -> str:
    return str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16))


def push_envelope(
    notification: dict[str, Any],
    message_id: str,
    *,
    publish_time: dt.datetime | str | None = None,
    attributes: dict[str, str] | None = None,
    subscription: str = DEFAULT_SUBSCRIPTION,
) -> dict[str, Any]:
    """Build the JSON body Cloud Pub/Sub pushes for one message carrying `notification`."""
    when = publish_time if publish_time is not None else dt.datetime.now(dt.UTC)
    if isinstance(when, dt.datetime):
        when = when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data = base64.b64encode(json.dumps(notification).encode()).decode()
    message: dict[str, Any] = {
        "data": data,
        "messageId": message_id,
        "message_id": message_id,
        "publishTime": when,
        "publish_time": when,
    }
    if attributes is not None:
        message["attributes"] = attributes
    return {"message": message, "subscription": subscription}
