"""Google Play purchases (as the Play Developer API returns them) to `Normalised` outcomes.

Pure: no database, no network, no clock. A notification only says "something changed"; the
state comes from the SubscriptionPurchaseV2 or ProductPurchase read after it, stamped with the
time of that read. The table it follows is reference/google.md.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

from reconcile.outcomes import AcknowledgementDue, Normalised, PurchaseSeen, RefundSeen
from reconcile.state import Channel, Observation, Stamp, Status
from webhooks.google import REVOKED, DeveloperNotification

Json = Mapping[str, Any]

GOOGLE_STATUS = {
    "SUBSCRIPTION_STATE_PENDING": Status.PENDING,
    "SUBSCRIPTION_STATE_ACTIVE": Status.ACTIVE,
    # Renewal off, not expired: access continues until the line item's expiryTime.
    "SUBSCRIPTION_STATE_CANCELED": Status.ACTIVE,
    "SUBSCRIPTION_STATE_IN_GRACE_PERIOD": Status.GRACE_PERIOD,
    "SUBSCRIPTION_STATE_ON_HOLD": Status.BILLING_RETRY,
    "SUBSCRIPTION_STATE_PAUSED": Status.PAUSED,
    "SUBSCRIPTION_STATE_EXPIRED": Status.EXPIRED,
}
PENDING = "SUBSCRIPTION_STATE_PENDING"
PENDING_PURCHASE_CANCELED = "SUBSCRIPTION_STATE_PENDING_PURCHASE_CANCELED"
ACKNOWLEDGEABLE = {"SUBSCRIPTION_STATE_ACTIVE", "SUBSCRIPTION_STATE_IN_GRACE_PERIOD"}
ACK_PENDING = "ACKNOWLEDGEMENT_STATE_PENDING"
PRODUCT_STATES = {0: "purchased", 1: "canceled", 2: "pending"}


class MalformedPurchase(ValueError):
    """The Play API answered a purchase without a field it always sends."""


def rfc3339(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise MalformedPurchase(f"not an RFC 3339 time: {value[:40]!r}") from error
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def millis(value: object) -> datetime | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    return None


def main_item(purchase: Json) -> Json:
    """The line item that decides access: the one that runs longest."""
    items = [item for item in purchase.get("lineItems") or [] if isinstance(item, dict)]
    if not items or not all(isinstance(item.get("productId"), str) for item in items):
        raise MalformedPurchase("subscription without line items")
    return max(items, key=lambda item: str(item.get("expiryTime") or ""))


def _latest_order(purchase: Json) -> str | None:
    orders = [item.get("latestSuccessfulOrderId") for item in purchase.get("lineItems") or []
              if isinstance(item, dict)]
    found = [order for order in orders if isinstance(order, str) and order]
    return found[-1] if found else None


def environment(purchase: Json) -> str:
    test = "testPurchase" in purchase or purchase.get("purchaseType") == 0
    return "sandbox" if test else "production"


def revokes(notification: DeveloperNotification, purchase: Json | None) -> bool:
    """Whether `notification` takes away the subscription's current period.

    SUBSCRIPTION_REVOKED does; a voided purchase does when it names the current order (an
    older renewal's refund leaves the running period alone).
    """
    if notification.kind == "subscription":
        return notification.notification_type == REVOKED
    if notification.kind != "voided" or purchase is None:
        return False
    if not notification.order_id:
        return True
    orders = {item.get("latestSuccessfulOrderId") for item in purchase.get("lineItems") or []
              if isinstance(item, dict)}
    return notification.order_id in orders


def subscription_fields(purchase: Json, *, revoked: bool = False) -> dict[str, Any]:
    """The contract's state fields from a SubscriptionPurchaseV2."""
    state = purchase.get("subscriptionState")
    item = main_item(purchase)
    product = item["productId"]
    renewing = item.get("autoRenewingPlan")
    prepaid = "prepaidPlan" in item
    expires_at = rfc3339(item.get("expiryTime"))
    deferred = item.get("deferredItemReplacement") or {}
    fields: dict[str, Any] = {
        "product_id": product,
        "renewal_product_id": deferred.get("productId") or product,
        "auto_renew": bool(isinstance(renewing, dict) and renewing.get("autoRenewEnabled")),
        "expires_at": expires_at,
        # Google extends the line item's expiryTime to the end of the grace period.
        "grace_expires_at": expires_at if state == "SUBSCRIPTION_STATE_IN_GRACE_PERIOD" else None,
        "prepaid": prepaid,
    }
    status = GOOGLE_STATUS.get(str(state))
    if revoked:
        status = Status.REVOKED
        fields["auto_renew"] = False
    if status is not None:
        fields["status"] = status.value
    account = (purchase.get("externalAccountIdentifiers") or {}).get("obfuscatedExternalAccountId")
    if isinstance(account, str) and account:
        fields["account_id"] = account
    return fields


def subscription(
    notification: DeveloperNotification,
    purchase: Json | None,
    token: str,
    stamp: Stamp,
    *,
    revoked: bool = False,
) -> Normalised:
    """What one subscription (or voided subscription) notification means, given the read."""
    kind = notification.label
    refund = None
    if notification.kind == "voided":
        refund = _voided_subscription(notification, purchase, token, stamp)
    if purchase is None:
        return Normalised(kind=kind, refund=refund, note="purchase not readable: refund only")
    state = purchase.get("subscriptionState")
    linked = purchase.get("linkedPurchaseToken")
    linked_ids = (linked,) if isinstance(linked, str) and linked and linked != token else ()
    if linked_ids and state in (PENDING, PENDING_PURCHASE_CANCELED):
        # A plan change waiting for payment (or abandoned): the subscription it would replace
        # keeps running as it is, so nothing is attached to it.
        return Normalised(kind=kind, refund=refund,
                          note="pending plan change: the current subscription applies")
    if state == PENDING_PURCHASE_CANCELED:
        fields: dict[str, Any] = {"status": Status.EXPIRED.value, "auto_renew": False}
    else:
        fields = subscription_fields(purchase, revoked=revoked)
    observation = Observation(
        channel=Channel.GOOGLE,
        store_id=token,
        stamp=stamp,
        kind=kind,
        environment=environment(purchase),
        fields=fields,
        linked_store_ids=linked_ids,
        detail={"subscription_state": state, "linked_purchase_token": linked or None,
                # The support console finds a subscription by the order id a customer quotes.
                "order_id": _latest_order(purchase)},
    )
    acknowledgement = None
    if purchase.get("acknowledgementState") == ACK_PENDING and state in ACKNOWLEDGEABLE:
        # Google wants the subscription id of the first line item.
        first = (purchase.get("lineItems") or [{}])[0]
        acknowledgement = AcknowledgementDue(token, str(first.get("productId")), "subscription")
    return Normalised(kind=kind, subscription=observation, refund=refund,
                      acknowledgement=acknowledgement)


def _voided_subscription(
    notification: DeveloperNotification, purchase: Json | None, token: str, stamp: Stamp
) -> RefundSeen:
    account = None
    product = None
    if purchase is not None:
        identifiers = purchase.get("externalAccountIdentifiers") or {}
        account = identifiers.get("obfuscatedExternalAccountId")
        product = main_item(purchase).get("productId")
    return RefundSeen(
        channel=Channel.GOOGLE,
        refund_key=f"{token}:{notification.order_id or ''}",
        store_id=token,
        refunded_at=notification.event_time,
        stamp=stamp,
        account_id=account,
        product_id=product,
        subscription_store_id=token,
    )


def voided_one_time(
    notification: DeveloperNotification, token: str, stamp: Stamp,
    voided_quantity: int | None = None,
) -> Normalised:
    """A refunded or charged-back one-time purchase: the purchase is revoked, the refund kept.

    A quantity-based partial refund leaves the rest of the purchase standing; only the voided
    purchases list says how many units it was (`voidedQuantity`), the notification does not.
    """
    partial = notification.refund_type == 2 or voided_quantity is not None
    refund = RefundSeen(
        channel=Channel.GOOGLE,
        refund_key=f"{token}:{notification.order_id or ''}",
        store_id=token,
        refunded_at=notification.event_time,
        stamp=stamp,
        purchase_store_id=token,
        partial=partial,
        quantity=voided_quantity if partial else None,
    )
    return Normalised(kind=notification.label, refund=refund,
                      note="partial refund" if partial else None)


def one_time(
    notification: DeveloperNotification,
    product: Json,
    token: str,
    stamp: Stamp,
    consumables: Collection[str],
) -> Normalised:
    """A one-time purchase (credits, add-on) from its ProductPurchase."""
    product_id = notification.sku or product.get("productId")
    if not isinstance(product_id, str) or not product_id:
        raise MalformedPurchase("one-time purchase without product id")
    consumable = product_id in consumables
    state = PRODUCT_STATES.get(product.get("purchaseState", 0), "pending")
    if consumable:
        due = state == "purchased" and product.get("consumptionState", 0) == 0
    else:
        due = state == "purchased" and product.get("acknowledgementState", 0) == 0
    account = product.get("obfuscatedExternalAccountId")
    quantity = product.get("quantity")
    seen = PurchaseSeen(
        channel=Channel.GOOGLE,
        store_id=token,
        environment=environment(product),
        product_id=product_id,
        kind="consumable" if consumable else "non_consumable",
        stamp=stamp,
        account_id=account if isinstance(account, str) and account else None,
        quantity=quantity if isinstance(quantity, int) and quantity > 0 else 1,
        purchased_at=millis(product.get("purchaseTimeMillis")),
        state=state,
        needs_acknowledgement=due,
    )
    return Normalised(kind=notification.label, purchase=seen)
