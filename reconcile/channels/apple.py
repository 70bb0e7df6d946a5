"""The App Store channel: decode recorded notifications; (later) fetch truth and answer Apple."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from reconcile.channels.apple_normalise import AppleMessage, MalformedPayload, normalise
from reconcile.events import Normalised
from reconcile.models import InboxEntry
from reconcile.worker import PermanentError
from webhooks.apple import AppleRejected, AppleVerifier, VerifiedNotification


class AppleProcessor:
    """Re-verifies each recorded payload with its nested JWS and normalises it."""

    channel = "apple"

    def __init__(self, verifier: AppleVerifier) -> None:
        self.verifier = verifier

    def normalise(
        self, entries: Sequence[InboxEntry], now: datetime
    ) -> list[Normalised | Exception]:
        results: list[Normalised | Exception] = []
        for entry in entries:
            try:
                results.append(normalise(self.decode(self.verifier.verify(entry.payload))))
            except (AppleRejected, MalformedPayload) as error:
                results.append(PermanentError(str(error)))
            except Exception as error:  # transient (OCSP down): retried with backoff
                results.append(error)
        return results

    def decode(self, verified: VerifiedNotification) -> AppleMessage:
        """The notification with its transaction and renewal info verified and decoded."""
        payload = verified.payload
        data = payload.data
        env = verified.environment
        transaction = renewal = None
        if data is not None and data.signedTransactionInfo:
            transaction = self.verifier.transaction(env, data.signedTransactionInfo)
        if data is not None and data.signedRenewalInfo:
            renewal = self.verifier.renewal_info(env, data.signedRenewalInfo)
        return AppleMessage(
            notification_type=payload.rawNotificationType,
            subtype=payload.rawSubtype,
            notification_id=verified.notification_uuid,
            signed_at=verified.signed_at or datetime.fromtimestamp(0, UTC),
            environment=env,
            status=data.rawStatus if data is not None else None,
            transaction=transaction,
            renewal=renewal,
            consumption_reason=data.rawConsumptionRequestReason if data is not None else None,
        )
