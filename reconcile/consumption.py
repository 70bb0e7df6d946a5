"""Answering Apple's CONSUMPTION_REQUEST: asking Apple to decline the refund, with consent only.

`reconcile.ingest` queues one outbox entry (kind `consumption`) per request with its deadline
(12 hours after the notification). `ConsumptionJob` answers the most urgent first. Without the
account's consent to share consumption data it sends nothing (Apple refuses anything but
`customerConsented` true) and records why as state `skipped`. The answer is the same every
time: delivered, no free sample, refund preference DECLINE, and a consumption percentage only
where real usage is known: a credit pack, from the credits ledger (`reconcile.credits.usage`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from appstoreserverlibrary.models.ConsumptionRequest import ConsumptionRequest
from appstoreserverlibrary.models.DeliveryStatus import DeliveryStatus
from appstoreserverlibrary.models.RefundPreference import RefundPreference
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from reconcile.channels.apple_api import AppleApiError, AppStoreApi
from reconcile.credits.usage import used_share
from reconcile.db import transaction
from reconcile.models import Account, OutboxEntry, Purchase, Refund
from reconcile.outbox import claim, retry_or_fail, settle

log = logging.getLogger(__name__)

CONSUMABLE = "Consumable"
NO_CONSENT = "the account has not consented to sharing consumption data; nothing was sent"
NO_ACCOUNT = "the transaction names no account (appAccountToken), so no consent is known"
NO_API = "no App Store Server API key is configured (RECONCILE_APPLE_KEY_ID and friends)"
TOO_LATE = "the 12-hour answer deadline passed before an answer could be sent"


def consumption_percentage(session: Session, transaction_id: str,
                           product_type: str | None) -> int | None:
    """Milliunits of the purchase consumed, only where it is really known: a credit pack's
    credits already used, first in first out, from the ledger."""
    if product_type != CONSUMABLE:
        return None
    purchase = session.scalars(
        select(Purchase).where(Purchase.channel == "apple", Purchase.store_id == transaction_id)
    ).first()
    return None if purchase is None else used_share(session, purchase)


def answer_body(percentage: int | None) -> dict[str, Any]:
    """The one answer the policy gives, as the JSON Apple receives."""
    body: dict[str, Any] = {
        "customerConsented": True,
        "sampleContentProvided": False,
        "deliveryStatus": DeliveryStatus.DELIVERED.value,
        "refundPreference": RefundPreference.DECLINE.value,
    }
    if percentage is not None:
        body["consumptionPercentage"] = percentage
    return body


def _request(body: dict[str, Any]) -> ConsumptionRequest:
    return ConsumptionRequest(
        customerConsented=body["customerConsented"],
        sampleContentProvided=body["sampleContentProvided"],
        deliveryStatus=DeliveryStatus(body["deliveryStatus"]),
        refundPreference=RefundPreference(body["refundPreference"]),
        consumptionPercentage=body.get("consumptionPercentage"),
    )


@dataclass
class ConsumptionJob:
    """Sends due consumption answers, earliest deadline first, retrying transient faults."""

    sessions: sessionmaker[Session]
    api: AppStoreApi | None
    owner: str
    max_attempts: int = 12
    lease: timedelta = timedelta(seconds=120)
    batch_size: int = 20
    name: str = "apple-consumption"

    def run_once(self, now: datetime) -> int:
        with transaction(self.sessions) as session:
            claimed = claim(session, kind="consumption", channel="apple", owner=self.owner,
                            now=now, lease=self.lease, limit=self.batch_size,
                            order_by=[OutboxEntry.deadline_at])
            due = [(row.id, row.payload["environment"], row.store_id or "", answer)
                   for row in claimed if (answer := self._prepare(session, row, now))]
        for entry_id, environment, transaction_id, body in due:
            assert self.api is not None
            try:
                self.api.send_consumption(environment, transaction_id, _request(body))
            except AppleApiError as error:
                self._failed(entry_id, error, now)
            else:
                self._sent(entry_id, transaction_id, now)
        return len(claimed)

    def _prepare(self, session: Session, row: OutboxEntry, now: datetime) -> dict[str, Any] | None:
        """The answer to send, or None after recording why none is sent."""
        account = session.get(Account, row.account_id) if row.account_id else None
        why = None
        if row.outcome is not None:
            why = f"Apple already decided ({row.outcome}) before an answer was sent"
        elif row.account_id is None:
            why = NO_ACCOUNT
        elif account is None or not account.consumption_consent:
            why = NO_CONSENT
        elif self.api is None:
            why = NO_API
        elif row.deadline_at is not None and now >= row.deadline_at:
            why = TOO_LATE
        if why is not None or account is None:
            settle(row, "skipped", now, why)
            return None
        body: dict[str, Any] = row.payload.get("answer") or answer_body(consumption_percentage(
            session, row.store_id or "", row.payload.get("product_type")))
        # Kept with the entry, so a retry sends exactly what the first attempt did.
        row.payload = {**row.payload, "answer": body}
        return body

    def _sent(self, entry_id: int, transaction_id: str, now: datetime) -> None:
        with transaction(self.sessions) as session:
            row = session.get(OutboxEntry, entry_id, with_for_update=True)
            if row is None or row.state != "pending":
                return
            settle(row, "sent", now)
            # A refund Apple made before this commit is listed as answered all the same.
            session.execute(
                update(Refund)
                .where(Refund.channel == "apple", Refund.store_id == transaction_id)
                .values(consumption_answer_sent=True)
            )

    def _failed(self, entry_id: int, error: AppleApiError, now: datetime) -> None:
        with transaction(self.sessions) as session:
            row = session.get(OutboxEntry, entry_id, with_for_update=True)
            if row is None or row.state != "pending":
                return
            if not error.transient:
                settle(row, "failed", now, f"Apple refused the answer: {error}")
                return
            log.warning("consumption answer %s failed, will retry: %s", entry_id, error)
            retry_or_fail(row, str(error), now, self.max_attempts, row.deadline_at)
