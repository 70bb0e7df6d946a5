"""Entitlements: what an account may use now, computed from the one normalised state.

Nothing is stored: an entitlement is a view over the account's subscriptions and one-time
purchases through the catalog, so it can never disagree with the state it is derived from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reconcile.catalog.file import Catalog
from reconcile.models import Account, Purchase, Subscription
from reconcile.state import Status, entitled

# One-time purchases that grant their entitlements for good (until refunded or revoked).
LASTING_KINDS = frozenset({"non_consumable"})
NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Grant:
    """One subscription or purchase granting one entitlement, active or not."""

    entitlement: str
    active: bool
    expires_at: datetime | None
    channel: str
    product_id: str
    subscription_id: str | None = None
    purchase_id: str | None = None

    def rank(self) -> tuple[bool, bool, datetime]:
        """Active beats inactive; then the grant that runs longest (no end runs longest)."""
        return (self.active, self.active and self.expires_at is None,
                self.expires_at or NEVER)

    def json(self) -> dict[str, Any]:
        return {
            "entitlement": self.entitlement,
            "active": self.active,
            "expires_at": None if self.expires_at is None
            else self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "channel": self.channel,
            "product_id": self.product_id,
            "subscription_id": self.subscription_id,
            "purchase_id": self.purchase_id,
        }


def subscription_grants(
    catalog: Catalog, row: Subscription, *, blocked: bool, now: datetime
) -> list[Grant]:
    """What `row` grants through its current product."""
    status = Status(row.status)
    active = entitled(status, row.expires_at, row.grace_expires_at, now, blocked)
    until = (row.grace_expires_at or row.expires_at) if status is Status.GRACE_PERIOD \
        else row.expires_at
    return [
        Grant(name, active, until, row.channel, row.product_id or "", subscription_id=row.id)
        for name in catalog.grants(row.product_id)
    ]


def purchase_grants(catalog: Catalog, row: Purchase, *, blocked: bool) -> list[Grant]:
    """What a one-time purchase grants: a non-consumable for good, until refunded or revoked."""
    if row.kind not in LASTING_KINDS:
        return []
    active = row.state == "purchased" and not blocked
    return [
        Grant(name, active, None, row.channel, row.product_id, purchase_id=row.id)
        for name in catalog.grants(row.product_id)
    ]


def best_grants(grants: Iterable[Grant]) -> list[Grant]:
    """One grant per entitlement: the one that runs longest, active ones first."""
    chosen: dict[str, Grant] = {}
    for grant in grants:
        held = chosen.get(grant.entitlement)
        if held is None or grant.rank() > held.rank():
            chosen[grant.entitlement] = grant
    return [chosen[name] for name in sorted(chosen)]


def grants_of(
    catalog: Catalog,
    subscriptions: Sequence[Subscription],
    purchases: Sequence[Purchase],
    *,
    blocked: bool,
    now: datetime,
) -> list[Grant]:
    """The account's entitlements from rows already loaded (the account view has them)."""
    every: list[Grant] = []
    for sub in subscriptions:
        every.extend(subscription_grants(catalog, sub, blocked=blocked, now=now))
    for purchase in purchases:
        every.extend(purchase_grants(catalog, purchase, blocked=blocked))
    return best_grants(every)


def entitlements(
    session: Session,
    catalog: Catalog,
    account_id: str,
    now: datetime,
    *,
    environment: str | None = None,
) -> list[Grant]:
    """Every entitlement `account_id` holds or held, as of `now`."""
    if not catalog.products:
        return []
    subs = select(Subscription).where(Subscription.account_id == account_id)
    purchases = select(Purchase).where(Purchase.account_id == account_id)
    if environment:
        subs = subs.where(Subscription.environment == environment)
        purchases = purchases.where(Purchase.environment == environment)
    blocked = session.scalar(
        select(Account.blocked_at.is_not(None)).where(Account.account_id == account_id)
    )
    return grants_of(catalog, list(session.scalars(subs)), list(session.scalars(purchases)),
                     blocked=bool(blocked), now=now)
