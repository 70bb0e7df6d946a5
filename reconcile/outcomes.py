"""What a normaliser hands to `reconcile.ingest`: small immutable facts, one kind per class."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconcile.state import Channel, Observation, Stamp


@dataclass(frozen=True)
class PurchaseSeen:
    """A one-time purchase (credits, add-on, port fee) as the store reports it."""

    channel: Channel
    store_id: str
    environment: str
    product_id: str
    kind: str  # consumable | non_consumable | non_renewing
    stamp: Stamp
    account_id: str | None = None
    quantity: int = 1
    amount: str | None = None
    currency: str | None = None
    purchased_at: datetime | None = None
    state: str = "purchased"  # purchased | pending | canceled
    needs_acknowledgement: bool = False


@dataclass(frozen=True)
class RefundSeen:
    """The store refunded or revoked a transaction (or reversed such a refund)."""

    channel: Channel
    refund_key: str
    store_id: str
    refunded_at: datetime
    stamp: Stamp
    account_id: str | None = None
    product_id: str | None = None
    amount: str | None = None
    currency: str | None = None
    # The subscription (by store id) or purchase (by store id) the refund hit, if known.
    subscription_store_id: str | None = None
    purchase_store_id: str | None = None
    reversed: bool = False
    # A quantity-based partial refund (Google): the purchase stands, `quantity` units refunded
    # (None when the report does not say how many).
    partial: bool = False
    quantity: int | None = None


@dataclass(frozen=True)
class ConsumptionRequested:
    """Apple asks for consumption data because a customer asked it for a refund."""

    transaction_id: str
    original_transaction_id: str | None
    account_id: str | None
    product_id: str | None
    product_type: str | None
    reason: str | None
    requested_at: datetime
    environment: str
    notification_id: str


@dataclass(frozen=True)
class RefundDeclined:
    """Apple declined a customer's refund request (the outcome of a CONSUMPTION_REQUEST)."""

    transaction_id: str
    declined_at: datetime


@dataclass(frozen=True)
class AcknowledgementDue:
    """A Google purchase that must be acknowledged (or consumed) or Google will refund it."""

    store_id: str
    product_id: str
    kind: str  # subscription | product | consumable


@dataclass(frozen=True)
class FreshRead:
    """The outcome was read from the store's truth about `subject` at `at`.

    Waiting notifications of `kinds` about the same subject that arrived before `at` only
    said "something changed": this read already holds their news, so they are done too.
    """

    subject: str
    at: datetime
    kinds: frozenset[str]


@dataclass(frozen=True)
class Normalised:
    """Everything one notification (or one read of store truth) means for our state."""

    kind: str
    subscription: Observation | None = None
    purchase: PurchaseSeen | None = None
    refund: RefundSeen | None = None
    consumption_request: ConsumptionRequested | None = None
    refund_declined: RefundDeclined | None = None
    acknowledgement: AcknowledgementDue | None = None
    # A subscription observation aimed at an older transaction: only revokes it in history.
    note: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    fresh_read: FreshRead | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-able picture of this outcome (fixtures compare against it)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.subscription is not None:
            out["subscription"] = {
                "store_id": self.subscription.store_id,
                **{k: _jsonable(v) for k, v in sorted(self.subscription.fields.items())},
            }
            if self.subscription.linked_store_ids:
                out["subscription"]["linked_store_ids"] = list(self.subscription.linked_store_ids)
        if self.purchase is not None:
            p = self.purchase
            out["purchase"] = {
                "store_id": p.store_id, "product_id": p.product_id, "kind": p.kind,
                "account_id": p.account_id, "amount": p.amount, "currency": p.currency,
                "state": p.state,
            }
        if self.refund is not None:
            r = self.refund
            out["refund"] = {
                "store_id": r.store_id, "product_id": r.product_id, "amount": r.amount,
                "currency": r.currency, "reversed": r.reversed,
            }
        if self.consumption_request is not None:
            out["consumption_request"] = {
                "transaction_id": self.consumption_request.transaction_id,
                "reason": self.consumption_request.reason,
            }
        if self.refund_declined is not None:
            out["refund_declined"] = {"transaction_id": self.refund_declined.transaction_id}
        if self.acknowledgement is not None:
            out["acknowledgement"] = {
                "store_id": self.acknowledgement.store_id,
                "kind": self.acknowledgement.kind,
            }
        if self.note:
            out["note"] = self.note
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.value if hasattr(value, "value") else value
