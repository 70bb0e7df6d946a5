"""The App Store channel: decode recorded notifications, verify what they carry, normalise.

A notification's outer payload is verified in full (signature, chain, bundle id, app id,
environment) before it is recorded, by the webhook or by history recovery; nothing else writes
Apple rows into the inbox. The worker therefore only decodes the outer payload it reads back, and
verifies the transaction and renewal info inside it, once each: every JWS signature is checked
exactly once on its way into the state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from reconcile.channels.apple_normalise import AppleMessage, MalformedPayload, normalise
from reconcile.models import InboxEntry
from reconcile.outcomes import Normalised
from reconcile.worker import PermanentError
from webhooks.apple import AppleRejected, AppleVerifier, VerifiedNotification
from webhooks.apple_jws import unverified_claims

_T = TypeVar("_T")


@dataclass(frozen=True)
class Envelope:
    """A notification's outer fields, with its transaction and renewal info still signed."""

    notification_type: str | None
    subtype: str | None
    notification_id: str
    signed_at: datetime
    environment: str
    status: int | None = None
    signed_transaction: str | None = None
    signed_renewal: str | None = None
    consumption_reason: str | None = None

    @classmethod
    def of(cls, verified: VerifiedNotification) -> Envelope:
        """The envelope of a notification verified just now."""
        payload = verified.payload
        data = payload.data
        return cls(
            notification_type=payload.rawNotificationType,
            subtype=payload.rawSubtype,
            notification_id=verified.notification_uuid,
            signed_at=verified.signed_at or datetime.fromtimestamp(0, UTC),
            environment=verified.environment,
            status=data.rawStatus if data is not None else None,
            signed_transaction=data.signedTransactionInfo if data is not None else None,
            signed_renewal=data.signedRenewalInfo if data is not None else None,
            consumption_reason=data.rawConsumptionRequestReason if data is not None else None,
        )

    @classmethod
    def recorded(cls, entry: InboxEntry) -> Envelope:
        """The envelope of an inbox entry, whose payload was verified before it was recorded."""
        try:
            claims = unverified_claims(entry.payload)
        except ValueError as error:
            raise MalformedPayload(f"recorded payload: {error}") from error
        data = _field(claims, "data", dict) or {}
        signed = _field(claims, "signedDate", int)
        return cls(
            notification_type=_field(claims, "notificationType", str),
            subtype=_field(claims, "subtype", str),
            notification_id=entry.notification_id,
            signed_at=datetime.fromtimestamp((signed or 0) / 1000, UTC),
            environment=entry.environment or "",
            status=_field(data, "status", int),
            signed_transaction=_field(data, "signedTransactionInfo", str),
            signed_renewal=_field(data, "signedRenewalInfo", str),
            consumption_reason=_field(data, "consumptionRequestReason", str),
        )


def _field(claims: dict[str, Any], name: str, kind: type[_T]) -> _T | None:
    value = claims.get(name)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise MalformedPayload(f"{name} is not a {kind.__name__}")


class AppleProcessor:
    """Decodes each recorded notification, verifies its nested JWS and normalises it."""

    channel = "apple"

    def __init__(self, verifier: AppleVerifier) -> None:
        self.verifier = verifier

    def normalise(
        self, entries: Sequence[InboxEntry], now: datetime
    ) -> list[Normalised | Exception]:
        results: list[Normalised | Exception] = []
        for entry in entries:
            try:
                results.append(normalise(self.decode(Envelope.recorded(entry))))
            except (AppleRejected, MalformedPayload) as error:
                results.append(PermanentError(str(error)))
            except Exception as error:  # transient (OCSP down): retried with backoff
                results.append(error)
        return results

    def decode(self, envelope: Envelope) -> AppleMessage:
        """The notification with its transaction and renewal info verified and decoded."""
        env = envelope.environment
        transaction = renewal = None
        if envelope.signed_transaction:
            transaction = self.verifier.transaction(env, envelope.signed_transaction)
        if envelope.signed_renewal:
            renewal = self.verifier.renewal_info(env, envelope.signed_renewal)
        return AppleMessage(
            notification_type=envelope.notification_type,
            subtype=envelope.subtype,
            notification_id=envelope.notification_id,
            signed_at=envelope.signed_at,
            environment=env,
            status=envelope.status,
            transaction=transaction,
            renewal=renewal,
            consumption_reason=envelope.consumption_reason,
        )
