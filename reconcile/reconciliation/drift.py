"""Where our state differs from the store's, computed with `apply` on a copy: pure.

The store's truth is an observation stamped with the store's own time, so comparing means asking
what `apply` would make of it. A field we hold with a newer stamp is not drift (a webhook
overtook the read); it is also exactly the field `apply` would refuse to roll back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from reconcile.state import STATE_FIELDS, Observation, SubscriptionState, apply

KINDS = (
    "status", "expires_at", "auto_renew", "product", "missing_here", "unknown_at_store",
    "unacknowledged", "refund_not_known", "credits",
)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry(state: SubscriptionState) -> str | None:
    text = _iso(state.expires_at)
    if state.grace_expires_at is not None:
        text = f"{text} (grace until {_iso(state.grace_expires_at)})"
    return text


def _product(state: SubscriptionState) -> str | None:
    renewal = state.renewal_product_id
    if renewal and renewal != state.product_id:
        return f"{state.product_id} (renews as {renewal})"
    return state.product_id


RENDER: dict[str, Callable[[SubscriptionState], str | None]] = {
    "status": lambda s: s.status.value,
    "expires_at": _expiry,
    "auto_renew": lambda s: "on" if s.auto_renew else "off",
    "product": _product,
}


def describe(state: SubscriptionState) -> str:
    """A one-line picture of a state, for findings about the subscription as a whole."""
    return f"{state.status.value}, expires {_iso(state.expires_at)}"


def drift(here: SubscriptionState, truth: Observation) -> list[tuple[str, str | None, str | None]]:
    """(kind, ours, the store's) for every reported aspect that `apply(here, truth)` changes."""
    after = apply(here, truth)
    found = []
    for kind, render in RENDER.items():
        ours, theirs = render(here), render(after)
        if ours != theirs:
            found.append((kind, ours, theirs))
    return found


def changes(here: SubscriptionState, truth: Observation) -> bool:
    """Whether applying `truth` changes any state value (stamps alone don't count)."""
    after = apply(here, truth)
    return any(getattr(here, name) != getattr(after, name) for name in STATE_FIELDS)
