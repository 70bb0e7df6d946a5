"""App Store Server Notifications V2: verify the signed payload and decode what it carries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

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
from webhooks.body import parse_json
from webhooks.chain_cache import CachingChainVerifier
from webhooks.intake import Incoming

ENVIRONMENTS = {"production": Environment.PRODUCTION, "sandbox": Environment.SANDBOX}
# Why production notifications are refused while RECONCILE_APPLE_APP_APPLE_ID is unset.
MISSING_APP_APPLE_ID = "MISSING_APP_APPLE_ID"


class AppleRejected(Exception):
    """The payload is not an authentic notification for this app: answer 401."""

    def __init__(self, status: str) -> None:
        super().__init__(f"Apple notification rejected: {status}")
        self.status = status


class AppleUnusable(AppleRejected):
    """Signed by Apple, but its fields do not decode (wrong types, text no database stores):
    it can never be processed. With a usable notificationUUID it is kept as rejected."""

    def __init__(self, reason: str, claims: dict[str, Any], environment: str | None) -> None:
        super().__init__("UNUSABLE_PAYLOAD")
        self.reason = reason
        uuid = claims.get("notificationUUID")
        usable = isinstance(uuid, str) and 0 < len(uuid) <= MAX_NOTIFICATION_UUID
        self.notification_uuid = uuid if usable else None
        self.environment = environment


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
        self._bundle_id = bundle_id
        # Accepted environments that cannot be verified, with the status they are refused with.
        self._refused: dict[str, str] = {}
        # One cache for every environment: the chain is the same, the roots are the same.
        self.chain_cache = CachingChainVerifier(_ChainVerifier(root_certificates))
        for name in environments:
            # Production needs the app id; without it production payloads are refused.
            if name == "production" and app_apple_id is None:
                self._refused[name] = MISSING_APP_APPLE_ID
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
        try:
            claims = unverified_claims(signed_payload)
        except ValueError as error:
            raise AppleRejected("MALFORMED_JWS") from error
        environment = _claimed_environment(claims)
        verifier = self._verifiers.get(environment) if environment else None
        candidates = [verifier] if verifier else [] if environment else self._verifiers.values()
        status = self._refused.get(environment or "", "INVALID_ENVIRONMENT")
        for candidate in candidates:
            try:
                payload = candidate.verify_and_decode_notification(signed_payload)
            except VerificationException as error:
                _raise_if_transient(error)
                status = error.status.name
                continue
            except Exception as error:
                # The signature held (every fault before it is a VerificationException): the
                # payload is Apple's, but its fields do not decode into the library's model.
                self._raise_unusable(claims, environment or _environment_of(candidate), error)
            if payload.notificationUUID is None:
                raise AppleRejected("MISSING_NOTIFICATION_UUID")
            fault = _mistyped(claims)
            if fault is not None:
                raise AppleUnusable(fault, claims, environment or _environment_of(candidate))
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

    def _raise_unusable(
        self, claims: dict[str, Any], environment: str, error: Exception
    ) -> NoReturn:
        """AppleUnusable for a signed payload that does not decode, unless it names another
        app (then it is refused like any payload for another app)."""
        for section in ("data", "summary", "appData"):
            body = claims.get(section)
            bundle = body.get("bundleId") if isinstance(body, dict) else None
            if isinstance(bundle, str) and bundle != self._bundle_id:
                raise AppleRejected("INVALID_APP_IDENTIFIER") from error
        raise AppleUnusable(_reason(error), claims, environment) from error

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
            raise AppleRejected(self._refused.get(environment, "INVALID_ENVIRONMENT"))
        try:
            return getattr(verifier, method)(signed)
        except VerificationException as error:
            _raise_if_transient(error)
            raise AppleRejected(error.status.name) from error
        except Exception as error:  # signed, but its fields do not decode: never usable
            raise AppleUnusable(_reason(error), {}, environment) from error


def _raise_if_transient(error: VerificationException) -> None:
    if error.status == VerificationStatus.RETRYABLE_VERIFICATION_FAILURE:
        raise AppleUnavailable("certificate revocation check unavailable") from error


def _environment_of(verifier: SignedDataVerifier) -> str:
    env: Environment = verifier._environment
    return "production" if env == Environment.PRODUCTION else "sandbox"


def _claimed_environment(claims: dict[str, Any]) -> str | None:
    """The environment the payload claims, to pick a verifier; the verifier then enforces it."""
    for section in ("data", "summary", "appData"):
        body = claims.get(section)
        if isinstance(body, dict) and isinstance(body.get("environment"), str):
            value = body["environment"].lower()
            return value if value in ENVIRONMENTS else "unknown"
    return None


# The claims the inbox row and the worker read, with the JSON type Apple sends each as. The
# library's model converts rather than checks (a list becomes the text "[]"), so they are
# checked here, before anything is recorded.
_CLAIM_TYPES: dict[tuple[str, ...], type] = {
    ("notificationUUID",): str, ("notificationType",): str, ("subtype",): str,
    ("signedDate",): int, ("version",): str, ("data",): dict, ("summary",): dict,
    ("data", "status"): int, ("data", "environment"): str,
    ("data", "signedTransactionInfo"): str, ("data", "signedRenewalInfo"): str,
    ("data", "consumptionRequestReason"): str,
}
MAX_NOTIFICATION_UUID = 128


def _mistyped(claims: dict[str, Any]) -> str | None:
    """What is wrong with the types of a verified payload's claims, or None."""
    for path, kind in _CLAIM_TYPES.items():
        value: Any = claims
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"{'.'.join(path)} is not a {'number' if kind is int else kind.__name__}"
    if len(str(claims.get("notificationUUID", ""))) > MAX_NOTIFICATION_UUID:
        return f"notificationUUID is longer than {MAX_NOTIFICATION_UUID} characters"
    return None


def _reason(error: Exception) -> str:
    """What is wrong with a signed payload's fields, in one line (cattrs nests its causes)."""
    while isinstance(error, ExceptionGroup) and error.exceptions:
        nested = error.exceptions[0]
        if not isinstance(nested, Exception):
            break
        error = nested
    return f"fields do not decode: {str(error)[:200]}"


def parse_body(raw: bytes) -> str:
    """The signedPayload of a request body, or ValueError saying what is wrong with it."""
    try:
        body = parse_json(raw)
    except ValueError as error:
        raise ValueError(f"body is not usable JSON: {error}") from error
    if not isinstance(body, dict) or not isinstance(body.get("signedPayload"), str):
        raise ValueError('body must be {"signedPayload": "<JWS>"}')
    signed: str = body["signedPayload"]
    if not signed:
        raise ValueError("signedPayload is empty")
    return signed
