"""Every event type of the contract; webhook endpoint filters are checked against this list."""

from __future__ import annotations

SUBSCRIPTION_TYPES = (
    "subscription.started",
    "subscription.renewed",
    "subscription.renewal_disabled",
    "subscription.renewal_enabled",
    "subscription.product_changed",
    "subscription.renewal_product_changed",
    "subscription.billing_issue",
    "subscription.recovered",
    "subscription.paused",
    "subscription.expired",
    "subscription.revoked",
    "subscription.transferred",
    "subscription.cancellation_updated",
)
PURCHASE_TYPES = ("purchase.completed", "purchase.revoked", "purchase.transferred")
OTHER_TYPES = (
    "refund.recorded",
    "entitlement.granted",
    "entitlement.revoked",
    "account.blocked",
    "account.unblocked",
    "account.ported_out",
    "credits.granted",
    "credits.debited",
    "credits.adjusted",
    "credits.clawed_back",
)
EVENT_TYPES: tuple[str, ...] = (*SUBSCRIPTION_TYPES, *PURCHASE_TYPES, *OTHER_TYPES)
KNOWN = frozenset(EVENT_TYPES)
