"""Reconciliation of the ledger against the stored store transactions (discrepancy `credits`).

Every stored purchase of a credit pack that is confirmed and belongs to an account has exactly
one grant; every refund of a granted pack has exactly one clawback, given back once the store
reverses the refund. A page of purchases is read
in `fetch` (our own database: this check has no store to ask), and each is compared and, in a
real run, brought up to date in `settle` through the same ledger functions the writer uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.catalog.file import Catalog
from reconcile.credits.grants import (
    clawback_key,
    grant_key,
    grant_purchase,
    held,
    refunds_of,
    reinstate_key,
    settle_refund,
    source_of,
)
from reconcile.credits.models import CreditEntry
from reconcile.models import Purchase
from reconcile.reconciliation.sources import Filters, Finding, SweepPage

PAGE = 200


class LedgerCheck:
    """A `Sweep` over stored credit-pack purchases, comparing each with its ledger entries."""

    name = "credits:ledger"

    def __init__(self, sessions: sessionmaker[Session], catalog: Catalog) -> None:
        self.sessions = sessions
        self.catalog = catalog

    def window(self, session: Session, filters: Filters, now: datetime) -> dict[str, Any] | None:
        if not self.catalog.credit_products:
            return None
        return {"channel": filters.channel, "account_id": filters.account_id,
                "store_id": filters.store_id}

    def fetch(self, window: Mapping[str, Any], token: str | None) -> SweepPage:
        query = select(Purchase.id).where(
            Purchase.product_id.in_(sorted(self.catalog.credit_products)))
        for column, value in ((Purchase.channel, window.get("channel")),
                              (Purchase.account_id, window.get("account_id")),
                              (Purchase.store_id, window.get("store_id"))):
            if value:
                query = query.where(column == value)
        if token:
            query = query.where(Purchase.id > token)
        with self.sessions() as session:
            ids = list(session.scalars(query.order_by(Purchase.id).limit(PAGE)))
        return SweepPage(ids, ids[-1] if len(ids) == PAGE else None)

    def settle(
        self, session: Session, item: str, *, dry_run: bool, now: datetime
    ) -> Finding | None:
        purchase = session.get(Purchase, item, with_for_update=not dry_run)
        if purchase is None:
            return None
        problems = self._problems(session, purchase)
        if not problems:
            return None
        if not dry_run:
            grant_purchase(session, purchase, self.catalog, now)
            for refund in refunds_of(session, purchase):
                settle_refund(session, refund, purchase, self.catalog, now)
        here = "; ".join(here for here, _ in problems)
        store = "; ".join(store for _, store in problems)
        return Finding(kind="credits", channel=purchase.channel, store_id=purchase.store_id,
                       subscription_id=None, here=here, store=store)

    def complete(self, session: Session, window: Mapping[str, Any], now: datetime) -> None:
        """Nothing to remember: every run checks every credit purchase again."""

    def _problems(self, session: Session, purchase: Purchase) -> list[tuple[str, str]]:
        """(what the ledger holds, what the store transactions call for) per mismatch."""
        per_unit = self.catalog.credits(purchase.product_id) or 0
        grants = _count(session, purchase, grant_key(purchase))
        problems: list[tuple[str, str]] = []
        owed = purchase.account_id is not None and purchase.state == "purchased"
        if grants == 0 and owed:
            problems.append(("no grant", f"purchased: {per_unit * max(1, purchase.quantity)} "
                                         f"credits for {purchase.account_id}"))
        elif grants > 1:
            problems.append((f"{grants} grants", "one grant per store transaction"))
        if grants == 0 and not owed:
            return problems
        holding = sum(amount for amount in held(session, purchase).values() if amount > 0)
        for refund in refunds_of(session, purchase):
            if refund.reversed_at is not None:
                if (_count(session, purchase, clawback_key(refund))
                        > _count(session, purchase, reinstate_key(refund))):
                    problems.append(("clawback not reinstated", f"refund reversed "
                                     f"{refund.reversed_at:%Y-%m-%dT%H:%M:%SZ}"))
                continue
            if refund.partial and not refund.quantity:
                continue
            clawed = _count(session, purchase, clawback_key(refund))
            if clawed == 0 and (holding > 0 or grants == 0):
                what = f"{refund.quantity} refunded" if refund.partial else "refunded"
                problems.append(("no clawback", f"{what} {refund.refunded_at:%Y-%m-%dT%H:%M:%SZ}"))
        return problems


def _count(session: Session, purchase: Purchase, key: str) -> int:
    """Entries of the purchase's transaction made under `key`."""
    return session.scalar(
        select(func.count()).select_from(CreditEntry).where(
            CreditEntry.source == source_of(purchase), CreditEntry.idempotency_key == key)
    ) or 0
