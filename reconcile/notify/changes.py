"""Which events a change implies: pure functions from the resource before and after.

Both writers of subscription state (`reconcile.ingest` and its bulk path) and every other
writer hand their before/after views to these functions, so one place decides the events.
A view is the contract's JSON (`reconcile.views.subscription_json`, `purchase_json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

View = Mapping[str, Any]

TROUBLE = ("grace_period", "billing_retry")
# Bookkeeping that moves with every write: a change of only these is no change.
UNTRACKED = frozenset({"updated_at", "last_event_at"})


def previous(before: View | None, after: View) -> dict[str, Any]:
    """The changed fields' values before the change (nothing for a new resource)."""
    if before is None:
        return {}
    return {name: before.get(name) for name, value in after.items()
            if name not in UNTRACKED and before.get(name) != value}


def subscription_changes(before: View | None, after: View, *, started: bool) -> list[str]:
    """The `subscription.*` types from `before` (None: new here) to `after`, in a fixed order.

    `started` says whether this subscription was already entitled once (it has a
    `subscription.started` event): `started` means the first time only.
    """
    types: list[str] = []
    if not started and after["entitled"] and (before is None or not before["entitled"]):
        types.append("subscription.started")
    if before is None:
        return types
    old, new = before["status"], after["status"]
    if (before["account_id"] is not None and after["account_id"] is not None
            and before["account_id"] != after["account_id"]):
        types.append("subscription.transferred")
    if (started or before["entitled"]) and _later(before["expires_at"], after["expires_at"]) \
            and new in ("active", *TROUBLE):
        types.append("subscription.renewed")
    if new in TROUBLE and old not in TROUBLE:
        types.append("subscription.billing_issue")
    if new == "active" and old in (*TROUBLE, "paused"):
        types.append("subscription.recovered")
    for status in ("paused", "expired", "revoked"):
        if new == status and old != status:
            types.append(f"subscription.{status}")
    if before["auto_renew"] and not after["auto_renew"]:
        types.append("subscription.renewal_disabled")
    if not before["auto_renew"] and after["auto_renew"]:
        types.append("subscription.renewal_enabled")
    product_moved = before["product_id"] is not None and before["product_id"] != after["product_id"]
    if product_moved:
        types.append("subscription.product_changed")
    renewal_moved = before["renewal_product_id"] != after["renewal_product_id"]
    # A product change carries the renewing product with it: that is one change, not two.
    if renewal_moved and not (product_moved and after["renewal_product_id"] == after["product_id"]
                              and before["renewal_product_id"] == before["product_id"]):
        types.append("subscription.renewal_product_changed")
    if _cancellation_state(before) != _cancellation_state(after):
        types.append("subscription.cancellation_updated")
    return types


def purchase_changes(before: View | None, after: View) -> list[str]:
    """The `purchase.*` types from `before` (None: new here) to `after`."""
    types: list[str] = []
    old = None if before is None else before["state"]
    if after["state"] == "purchased" and old != "purchased":
        types.append("purchase.completed")
    if after["state"] == "revoked" and old != "revoked":
        types.append("purchase.revoked")
    if (before is not None and before["account_id"] is not None
            and after["account_id"] is not None and before["account_id"] != after["account_id"]):
        types.append("purchase.transferred")
    return types


def _later(before: str | None, after: str | None) -> bool:
    # ISO 8601 UTC with a fixed format: string order is time order.
    return before is not None and after is not None and after > before


def _cancellation_state(view: View) -> str | None:
    cancellation = view.get("cancellation")
    return None if cancellation is None else str(cancellation.get("state"))
