"""App Store notifications (and App Store Server API answers) to `Normalised` outcomes.

Pure: no database, no network, no clock. The table it follows is reference/apple.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from appstoreserverlibrary.models.JWSRenewalInfoDecodedPayload import (
    JWSRenewalInfoDecodedPayload,
)
from appstoreserverlibrary.models.JWSTransactionDecodedPayload import (
    JWSTransactionDecodedPayload,
)

from reconcile.outcomes import (
    ConsumptionRequested,
    Normalised,
    PurchaseSeen,
    RefundDeclined,
    RefundSeen,
)
from reconcile.state import Channel, Observation, Stamp, Status

AUTO_RENEWABLE = "Auto-Renewable Subscription"
ONE_TIME_KINDS = {
    "Consumable": "consumable",
    "Non-Consumable": "non_consumable",
    "Non-Renewing Subscription": "non_renewing",
}
# data.status: the subscription's status as of signedDate.
APPLE_STATUS = {
    1: Status.ACTIVE,
    2: Status.EXPIRED,
    3: Status.BILLING_RETRY,
    4: Status.GRACE_PERIOD,
    5: Status.REVOKED,
}
# Used only when a notification carries no data.status.
FALLBACK_STATUS = {
    "SUBSCRIBED": Status.ACTIVE,
    "DID_RENEW": Status.ACTIVE,
    "OFFER_REDEEMED": Status.ACTIVE,
    "RENEWAL_EXTENDED": Status.ACTIVE,
    "EXPIRED": Status.EXPIRED,
    "GRACE_PERIOD_EXPIRED": Status.BILLING_RETRY,
    "REVOKE": Status.REVOKED,
}
# The transaction in these is the one the customer disputes, possibly an old one: it says
# nothing about the current period's product or expiry.
ABOUT_ONE_TRANSACTION = {"REFUND", "REFUND_REVERSED", "REFUND_DECLINED", "CONSUMPTION_REQUEST"}
NO_STATE_CHANGE = {
    "REFUND_DECLINED", "CONSUMPTION_REQUEST", "PRICE_INCREASE", "RENEWAL_EXTENSION", "TEST",
    "EXTERNAL_PURCHASE_TOKEN", "METADATA_UPDATE", "MIGRATION", "PRICE_CHANGE",
    "RESCIND_CONSENT",
}
SUBSCRIPTION_TYPES = {
    "SUBSCRIBED", "DID_RENEW", "DID_CHANGE_RENEWAL_STATUS", "DID_CHANGE_RENEWAL_PREF",
    "DID_FAIL_TO_RENEW", "EXPIRED", "GRACE_PERIOD_EXPIRED", "REFUND", "REFUND_REVERSED",
    "REVOKE", "RENEWAL_EXTENDED", "OFFER_REDEEMED", "ONE_TIME_CHARGE", "STATUS",
}


@dataclass(frozen=True)
class AppleMessage:
    """One notification's decoded content, or one status read from the App Store Server API."""

    notification_type: str | None
    subtype: str | None
    notification_id: str
    signed_at: datetime
    environment: str
    status: int | None
    transaction: JWSTransactionDecodedPayload | None
    renewal: JWSRenewalInfoDecodedPayload | None
    consumption_reason: str | None = None

    @property
    def kind(self) -> str:
        kind = self.notification_type or "UNKNOWN"
        return f"{kind}/{self.subtype}" if self.subtype else kind


def millis(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def price(milliunits: int | None) -> str | None:
    """Apple prices are milliunits of the currency: 9990 is 9.99."""
    if milliunits is None:
        return None
    return str((Decimal(milliunits) / 1000).quantize(Decimal("0.001")).normalize())


def normalise(message: AppleMessage) -> Normalised:
    """What `message` means for our state, per the table in reference/apple.md."""
    kind = message.kind
    ntype = message.notification_type or "UNKNOWN"
    tx = message.transaction
    stamp = Stamp(message.signed_at, message.notification_id)
    if ntype not in SUBSCRIPTION_TYPES and ntype not in NO_STATE_CHANGE:
        return Normalised(kind=kind, note="unknown notification type: recorded only")
    if tx is None:
        return Normalised(kind=kind, note="no transaction: recorded only")

    tx_kind = tx.rawType or AUTO_RENEWABLE
    if tx_kind in ONE_TIME_KINDS:
        return _one_time(message, tx, ONE_TIME_KINDS[tx_kind], stamp)

    if ntype == "CONSUMPTION_REQUEST":
        return Normalised(kind=kind, consumption_request=_consumption(message, tx))
    if ntype == "REFUND_DECLINED":
        return _declined(message, tx)
    if ntype in NO_STATE_CHANGE:
        return Normalised(kind=kind, note="recorded; no subscription change")

    fields = _status_fields(message, ntype)
    if ntype not in ABOUT_ONE_TRANSACTION:
        fields.update(_transaction_fields(tx))
    if message.renewal is not None:
        fields.update(_renewal_fields(message.renewal, fields.get("status")))
    observation = Observation(
        channel=Channel.APPLE,
        store_id=_required(tx.originalTransactionId, "originalTransactionId"),
        stamp=stamp,
        kind=kind,
        environment=message.environment,
        fields=fields,
        detail={"transaction_id": tx.transactionId},
    )
    refund = None
    if ntype in ("REFUND", "REFUND_REVERSED"):
        refund = _refund(message, tx, stamp, reversed_=ntype == "REFUND_REVERSED")
    elif ntype == "STATUS" and tx.revocationDate and tx.rawInAppOwnershipType != "FAMILY_SHARED":
        # A status read showing a refunded current transaction: the refund itself, in case its
        # REFUND notification never arrived. (Family sharing ending also revokes; no refund.)
        refund = _refund(message, tx, stamp, reversed_=False)
    return Normalised(kind=kind, subscription=observation, refund=refund)


def _status_fields(message: AppleMessage, ntype: str) -> dict[str, Any]:
    status = APPLE_STATUS.get(message.status or 0) or FALLBACK_STATUS.get(ntype)
    return {} if status is None else {"status": status.value}


def _transaction_fields(tx: JWSTransactionDecodedPayload) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "product_id": tx.productId,
        "expires_at": millis(tx.expiresDate),
        "prepaid": False,
    }
    if tx.appAccountToken:
        fields["account_id"] = tx.appAccountToken
    return fields


def _renewal_fields(renewal: JWSRenewalInfoDecodedPayload, status: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if renewal.rawAutoRenewStatus is not None:
        fields["auto_renew"] = renewal.rawAutoRenewStatus == 1
    if renewal.autoRenewProductId:
        fields["renewal_product_id"] = renewal.autoRenewProductId
    if status is not None:
        in_grace = status == Status.GRACE_PERIOD.value
        fields["grace_expires_at"] = millis(renewal.gracePeriodExpiresDate) if in_grace else None
    return fields


def _one_time(
    message: AppleMessage, tx: JWSTransactionDecodedPayload, kind: str, stamp: Stamp
) -> Normalised:
    store_id = _required(tx.transactionId, "transactionId")
    ntype = message.notification_type
    if ntype == "CONSUMPTION_REQUEST":
        return Normalised(kind=message.kind, consumption_request=_consumption(message, tx))
    if ntype == "REFUND_DECLINED":
        return _declined(message, tx)
    if ntype in ("REFUND", "REFUND_REVERSED"):
        refund = _refund(message, tx, stamp, reversed_=ntype == "REFUND_REVERSED")
        return Normalised(kind=message.kind, refund=refund)
    if ntype in NO_STATE_CHANGE:
        return Normalised(kind=message.kind, note="recorded; no purchase change")
    purchase = PurchaseSeen(
        channel=Channel.APPLE,
        store_id=store_id,
        environment=message.environment,
        product_id=_required(tx.productId, "productId"),
        kind=kind,
        stamp=stamp,
        account_id=tx.appAccountToken,
        quantity=tx.quantity or 1,
        amount=price(tx.price),
        currency=tx.currency,
        purchased_at=millis(tx.purchaseDate),
        state="revoked" if tx.revocationDate else "purchased",
    )
    return Normalised(kind=message.kind, purchase=purchase)


def _refund(
    message: AppleMessage, tx: JWSTransactionDecodedPayload, stamp: Stamp, *, reversed_: bool
) -> RefundSeen:
    transaction_id = _required(tx.transactionId, "transactionId")
    one_time = (tx.rawType or AUTO_RENEWABLE) in ONE_TIME_KINDS
    return RefundSeen(
        channel=Channel.APPLE,
        refund_key=transaction_id,
        store_id=transaction_id,
        refunded_at=millis(tx.revocationDate) or message.signed_at,
        stamp=stamp,
        account_id=tx.appAccountToken,
        product_id=tx.productId,
        amount=price(tx.price),
        currency=tx.currency,
        subscription_store_id=None if one_time else tx.originalTransactionId,
        purchase_store_id=transaction_id if one_time else None,
        reversed=reversed_,
    )


def _consumption(message: AppleMessage, tx: JWSTransactionDecodedPayload) -> ConsumptionRequested:
    return ConsumptionRequested(
        transaction_id=_required(tx.transactionId, "transactionId"),
        original_transaction_id=tx.originalTransactionId,
        account_id=tx.appAccountToken,
        product_id=tx.productId,
        product_type=tx.rawType,
        reason=message.consumption_reason,
        requested_at=message.signed_at,
        environment=message.environment,
        notification_id=message.notification_id,
    )


def _declined(message: AppleMessage, tx: JWSTransactionDecodedPayload) -> Normalised:
    """No state changes; the refund request's outcome is recorded."""
    declined = RefundDeclined(_required(tx.transactionId, "transactionId"), message.signed_at)
    return Normalised(kind=message.kind, refund_declined=declined)


class MalformedPayload(ValueError):
    """A verified payload lacks a field the store always sends: it can never be processed."""


def _required(value: str | None, name: str) -> str:
    if not value:
        raise MalformedPayload(f"transaction has no {name}")
    return value
