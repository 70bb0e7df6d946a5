"""Entitlements: what an account may use now, computed from the one normalised state.

Nothing is stored: an entitlement is a view over the account's subscriptions and one-time
purchases through the catalog, so it can never disagree with the state it is derived from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import String, TextualSelect, text
from sqlalchemy.engine import Connection

from reconcile.catalog.file import Catalog
from reconcile.models import UTCDateTime
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


class SubscriptionFacts(Protocol):
    """What a grant needs of a subscription: an ORM row or a plain result row."""

    @property
    def id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def product_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def grace_expires_at(self) -> datetime | None: ...


class PurchaseFacts(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def product_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...


def subscription_grants(
    catalog: Catalog, row: SubscriptionFacts, *, blocked: bool, now: datetime
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


def purchase_grants(catalog: Catalog, row: PurchaseFacts, *, blocked: bool) -> list[Grant]:
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
    subscriptions: Sequence[SubscriptionFacts],
    purchases: Sequence[PurchaseFacts],
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


@dataclass(frozen=True)
class _Held:
    """One subscription or purchase of the account, as the entitlement read returns it."""

    id: str
    channel: str
    product_id: str
    status: str
    expires_at: datetime | None
    grace_expires_at: datetime | None
    kind: str

    @property
    def state(self) -> str:
        return self.status


def _read_statement(environment: bool) -> TextualSelect:
    """Everything an entitlement answer needs in one round trip: the account's subscriptions,
    its purchases, and whether it is blocked. Built once; SQLAlchemy then caches it."""
    where_env = " AND environment = :environment" if environment else ""
    return text(f"""
        SELECT 's' AS source, id, channel, product_id, status, expires_at, grace_expires_at,
               '' AS kind
          FROM subscriptions WHERE account_id = :account{where_env}
        UNION ALL
        SELECT 'p', id, channel, product_id, state, NULL, NULL, kind
          FROM purchases WHERE account_id = :account{where_env}
        UNION ALL
        SELECT 'b', account_id, '', '', '', blocked_at, NULL, ''
          FROM accounts WHERE account_id = :account AND blocked_at IS NOT NULL
    """).columns(source=String(), id=String(), channel=String(), product_id=String(),  # noqa: S608
                 status=String(), expires_at=UTCDateTime(), grace_expires_at=UTCDateTime(),
                 kind=String())


_READ = {False: _read_statement(False), True: _read_statement(True)}


def entitlements(
    connection: Connection,
    catalog: Catalog,
    account_id: str,
    now: datetime,
    *,
    environment: str | None = None,
) -> list[Grant]:
    """Every entitlement `account_id` holds or held, as of `now`.

    The business may ask on every request its app makes: one indexed read of the columns a
    grant needs, no ORM objects.
    """
    if not catalog.products:
        return []
    params = {"account": account_id, "environment": environment}
    subscriptions: list[_Held] = []
    purchases: list[_Held] = []
    blocked = False
    for row in connection.execute(_READ[environment is not None], params):
        held = _Held(row.id, row.channel, row.product_id or "", row.status, row.expires_at,
                     row.grace_expires_at, row.kind)
        if row.source == "s":
            subscriptions.append(held)
        elif row.source == "p":
            purchases.append(held)
        else:
            blocked = True
    return grants_of(catalog, subscriptions, purchases, blocked=blocked, now=now)
