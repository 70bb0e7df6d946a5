"""The App Store's truth for reconciliation: subscription statuses and notification history.

Signed data from the API is verified exactly like a notification (same verifier, same chain
cache) and normalised by the same `apple_normalise.normalise`, as a "STATUS" message stamped
with the store's signedDate. Recovered history goes into the same inbox as webhooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from appstoreserverlibrary.models.LastTransactionsItem import LastTransactionsItem
from appstoreserverlibrary.models.NotificationHistoryRequest import NotificationHistoryRequest
from sqlalchemy.orm import Session

from reconcile.chains import find_subscription
from reconcile.channels.apple import AppleProcessor, Envelope
from reconcile.channels.apple_api import AppleApiError, AppStoreApi
from reconcile.channels.apple_normalise import AppleMessage, MalformedPayload, millis, normalise
from reconcile.reconciliation.sources import (
    Fetched,
    Filters,
    Finding,
    StoreFault,
    Sweep,
    SweepPage,
    Target,
    read_cursor,
    write_cursor,
)
from webhooks.apple import AppleRejected, AppleUnavailable, AppleVerifier, VerifiedNotification
from webhooks.intake import insert_entry, is_known

# History windows overlap a little: Apple may list a notification under a signedDate just
# before the previous window's end after that read. Dedupe by UUID makes overlap free.
HISTORY_OVERLAP = timedelta(hours=1)
HISTORY_RETENTION = timedelta(days=180)


class AppleTruth:
    """`TruthSource` for the App Store: one status read per original transaction id."""

    channel = "apple"

    def __init__(self, api: AppStoreApi, verifier: AppleVerifier, *, history_days: float = 30):
        self.api = api
        self.verifier = verifier
        self.decoder = AppleProcessor(verifier)
        self.history_days = history_days

    def fetch(
        self, target: Target, now: datetime, calls: AbstractContextManager[object]
    ) -> Fetched:
        try:
            statuses = self.api.subscription_statuses(target.environment, target.store_id,
                                                      slot=calls)
        except AppleApiError as error:
            if error.status == 404 and not error.transient:
                return Fetched(target, unknown=True)
            return Fetched(target, error=str(error))
        items = [
            item
            for group in statuses.data or []
            for item in group.lastTransactions or []
            if item.originalTransactionId == target.store_id
        ]
        if not items:
            return Fetched(target, unknown=True)
        try:
            message = self.message(target.environment, items[0])
            return Fetched(target, outcome=normalise(message))
        except (AppleRejected, AppleUnavailable, MalformedPayload) as error:
            # An answer we cannot trust is a fault to report, not a fact about the subscription.
            return Fetched(target, error=f"status answer not accepted: {error}")

    def message(self, environment: str, item: LastTransactionsItem) -> AppleMessage:
        """A status read as the normaliser's input, stamped with Apple's signedDate."""
        if not item.signedTransactionInfo:
            raise MalformedPayload("status item without signedTransactionInfo")
        transaction = self.verifier.transaction(environment, item.signedTransactionInfo)
        renewal = None
        if item.signedRenewalInfo:
            renewal = self.verifier.renewal_info(environment, item.signedRenewalInfo)
        signed = [d for d in (transaction.signedDate, renewal and renewal.signedDate) if d]
        if not signed:
            raise MalformedPayload("status answer without signedDate")
        return AppleMessage(
            notification_type="STATUS",
            subtype=None,
            notification_id=f"status:{transaction.transactionId}",
            # The older of the two signatures: never claim to know more recently than we do.
            signed_at=millis(min(signed)) or datetime.fromtimestamp(0, UTC),
            environment=environment,
            status=item.rawStatus,
            transaction=transaction,
            renewal=renewal,
        )

    def sweeps(self) -> Sequence[Sweep]:
        return [
            AppleHistory(self, environment)
            for environment in self.api.environments
            if environment in self.verifier.environments
        ]


@dataclass(frozen=True)
class HistoryItem:
    notification: VerifiedNotification
    original_transaction_id: str | None


class AppleHistory:
    """Notification history since the last complete read, fed into the webhook inbox."""

    def __init__(self, truth: AppleTruth, environment: str) -> None:
        self.truth = truth
        self.environment = environment
        self.name = f"apple:history:{environment}"

    def window(self, session: Session, filters: Filters, now: datetime) -> dict[str, Any] | None:
        if filters.account_id:
            return None  # history cannot be narrowed to an account
        since = read_cursor(session, self.name)
        start = (
            datetime.fromisoformat(since) - HISTORY_OVERLAP
            if since
            else now - timedelta(days=self.truth.history_days)
        )
        start = max(start, now - HISTORY_RETENTION + timedelta(hours=1))
        return {
            "start": _ms(start),
            "end": _ms(now),
            "transaction_id": filters.store_id,
            # Only a read of everything moves the mark; a narrowed one proves nothing else.
            "advance": not filters.narrowed,
        }

    def fetch(self, window: Mapping[str, Any], token: str | None) -> SweepPage:
        request = NotificationHistoryRequest(
            startDate=window["start"], endDate=window["end"],
            transactionId=window.get("transaction_id"),
        )
        try:
            response = self.truth.api.notification_history(self.environment, request, token)
        except AppleApiError as error:
            raise StoreFault(str(error)) from error
        items: list[HistoryItem] = []
        errors: list[str] = []
        for entry in response.notificationHistory or []:
            try:
                verified = self.truth.verifier.verify(entry.signedPayload or "")
                message = self.truth.decoder.decode(Envelope.of(verified))
            except (AppleRejected, AppleUnavailable) as error:
                errors.append(f"history entry not accepted: {error}")
                continue
            if verified.environment != self.environment:
                continue  # one base URL override serves both environments: not ours to read
            original = message.transaction.originalTransactionId if message.transaction else None
            items.append(HistoryItem(verified, original))
        return SweepPage(items, response.paginationToken if response.hasMore else None, errors)

    def settle(
        self, session: Session, item: HistoryItem, *, dry_run: bool, now: datetime
    ) -> Finding | None:
        notification = item.notification
        incoming = notification.incoming(subject=item.original_transaction_id)
        new = not is_known(session, incoming) if dry_run else insert_entry(session, incoming, now)
        if not new:
            return None
        original = item.original_transaction_id
        subscription = find_subscription(session, "apple", original) if original else None
        signed = notification.signed_at
        return Finding(
            kind="missing_here",
            channel="apple",
            store_id=original or notification.notification_uuid,
            subscription_id=subscription.id if subscription else None,
            here=None,
            store=(f"{notification.kind} notification {notification.notification_uuid}"
                   f" signed {signed.strftime('%Y-%m-%dT%H:%M:%SZ') if signed else '?'}"),
        )

    def complete(self, session: Session, window: Mapping[str, Any], now: datetime) -> None:
        if window.get("advance"):
            end = datetime.fromtimestamp(window["end"] / 1000, UTC)
            write_cursor(session, self.name, end.isoformat(), now)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)
