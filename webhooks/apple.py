"""App Store Server Notifications V2: verify the signed payload and decode what it carries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.models.JWSRenewalInfoDecodedPayload import (
    JWSRenewalInfoDecodedPayload,
)
from appstoreserverlibrary.models.JWSTransactionDecodedPayload import (
    JWSTransactionDecodedPayload,
)
from appstoreserverlibrary.models.ResponseBodyV2DecodedPayload import (
    ResponseBodyV2DecodedPayload,
)
from appstoreserverlibrary.signed_data_verifier import (
    SignedDataVerifier,
    VerificationException,
    VerificationStatus,
    _ChainVerifier,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhooks.apple_jws import FastSignedDataVerifier, unverified_claims
from webhooks.chain_cache import CachingChainVerifier
from webhooks.intake import Incoming

ENVIRONMENTS = {"production": Environment.PRODUCTION, "sandbox": Environment.SANDBOX}


class AppleRejected(Exception):
    """The payload is not an authentic notification for this app: answer 401."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Apple notification rejected: {status}")
        self.status = status


class AppleUnavailable(Exception):
    """Verification could not finish (OCSP unreachable): answer 5xx so Apple retries."""


@dataclass(frozen=True)
class VerifiedNotification:
    """The outer notification, verified; nested JWS stay signed until the worker decodes them."""

    signed_payload: str
    payload: ResponseBodyV2DecodedPayload
    environment: str

    @property
    def notification_uuid(self) -> str:
        assert self.payload.notificationUUID is not None
        return self.payload.notificationUUID

    @property
    def kind(self) -> str:
        subtype = self.payload.rawSubtype
        kind = self.payload.rawNotificationType or "UNKNOWN"
        return f"{kind}/{subtype}" if subtype else kind

    def incoming(self, subject: str | None = None) -> Incoming:
        """This notification as an inbox row to record."""
        return Incoming(
            channel="apple",
            notification_id=self.notification_uuid,
            kind=self.kind,
            payload=self.signed_payload,
            store_time=self.signed_at,
            subject=subject,
            environment=self.environment,
        )

    @property
    def signed_at(self) -> datetime | None:
        signed = self.payload.signedDate
        return None if signed is None else datetime.fromtimestamp(signed / 1000, UTC)


def load_certificate(path: Path) -> bytes:
    """A root certificate file, DER or PEM, as DER bytes."""
    raw = path.read_bytes()
    if b"-----BEGIN" in raw:
        return x509.load_pem_x509_certificate(raw).public_bytes(serialization.Encoding.DER)
    return raw


class AppleVerifier:
    """One library `SignedDataVerifier` per accepted environment, sharing one chain cache."""

    def __init__(
        self,
        *,
        root_certificates: list[bytes],
        bundle_id: str,
        app_apple_id: int | None,
        environments: list[str],
        online_checks: bool,
    ) -> None:
        self._verifiers: dict[str, SignedDataVerifier] = {}
        # One cache for every environment: the chain is the same, the roots are the same.
        self.chain_cache = CachingChainVerifier(_ChainVerifier(root_certificates))
        for name in environments:
            # Production needs the app id; without it production payloads are refused.
            if name == "production" and app_apple_id is None:
                continue
            self._verifiers[name] = FastSignedDataVerifier(
                root_certificates, online_checks, ENVIRONMENTS[name], bundle_id, app_apple_id,
                self.chain_cache,
            )

    @property
    def environments(self) -> list[str]:
        """The environments whose payloads this verifier accepts."""
        return list(self._verifiers)

    def verify(self, signed_payload: str) -> VerifiedNotification:
        """Verify signature, chain, bundle id, app id and environment of a signedPayload."""
        environment = _claimed_environment(signed_payload)
        verifier = self._verifiers.get(environment) if environment else None
        candidates = [verifier] if verifier else [] if environment else self._verifiers.values()
        status = "INVALID_ENVIRONMENT"
        for candidate in candidates:
            try:
                payload = candidate.verify_and_decode_notification(signed_payload)
            except VerificationException as error:
                _raise_if_transient(error)
                status = error.status.name
                continue
            if payload.notificationUUID is None:
                raise AppleRejected("MISSING_NOTIFICATION_UUID")
            return VerifiedNotification(
                signed_payload, payload, environment or _environment_of(candidate)
            )
        raise AppleRejected(status)

    def verify_transaction(self, signed: str) -> tuple[str, JWSTransactionDecodedPayload]:
        """A StoreKit 2 signed transaction (jwsRepresentation) on its own, with the same checks
        as a notification: signature, chain, bundle id, app id (production) and environment."""
        try:
            claimed = unverified_claims(signed).get("environment")
        except ValueError as error:
            raise AppleRejected("MALFORMED_JWS") from error
        environment = claimed.lower() if isinstance(claimed, str) else ""
        if environment not in ENVIRONMENTS:
            raise AppleRejected("INVALID_ENVIRONMENT")
        return environment, self.transaction(environment, signed)

    def transaction(self, environment: str, signed: str) -> JWSTransactionDecodedPayload:
        decoded: JWSTransactionDecodedPayload = self._call(
            environment, "verify_and_decode_signed_transaction", signed
        )
        return decoded

    def renewal_info(self, environment: str, signed: str) -> JWSRenewalInfoDecodedPayload:
        decoded: JWSRenewalInfoDecodedPayload = self._call(
            environment, "verify_and_decode_renewal_info", signed
        )
        return decoded

    def _call(self, environment: str, method: str, signed: str) -> Any:
        verifier = self._verifiers.get(environment)
        if verifier is None:
            raise AppleRejected("INVALID_ENVIRONMENT")
        try:
            return getattr(verifier, method)(signed)
        except VerificationException as error:
            _raise_if_transient(error)
            raise AppleRejected(error.status.name) from error


def _raise_if_transient(error: VerificationException) -> None:
    if error.status == VerificationStatus.RETRYABLE_VERIFICATION_FAILURE:
        raise AppleUnavailable("certificate revocation check unavailable") from error


def _environment_of(verifier: SignedDataVerifier) -> str:
    env: Environment = verifier._environment
    return "production" if env == Environment.PRODUCTION else "sandbox"


def _claimed_environment(signed_payload: str) -> str | None:
    """The environment the payload claims, to pick a verifier; the verifier then enforces it."""
    try:
        claims = unverified_claims(signed_payload)
    except ValueError as error:
        raise AppleRejected("MALFORMED_JWS") from error
    for section in ("data", "summary", "appData"):
        body = claims.get(section)
        if isinstance(body, dict) and isinstance(body.get("environment"), str):
            value = body["environment"].lower()
            return value if value in ENVIRONMENTS else "unknown"
    return None


def parse_body(raw: bytes) -> str:
    """The signedPayload of a request body, or ValueError saying what is wrong with it."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError("body is not JSON") from error
    if not isinstance(body, dict) or not isinstance(body.get("signedPayload"), str):
        raise ValueError('body must be {"signedPayload": "<JWS>"}')
    signed: str = body["signedPayload"]
    if not signed:
        raise ValueError("signedPayload is empty")
    return signed
