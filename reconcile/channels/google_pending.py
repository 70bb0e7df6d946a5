"""Google one-time purchases still pending here, read again during reconciliation.

A pending purchase (cash at a shop, a slow bank) becomes purchased later; Play sends a
notification then, and if it never reaches us this read finds it, through the same
`google_normalise.one_time` and `ingest` as the notification would (a credit pack grants its
credits then). Pending purchases are few, so the window lists them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reconcile.channels import google_normalise as gn
from reconcile.channels.google_play import PlayPermanentError, PlayUnavailable
from reconcile.ingest import ingest
from reconcile.models import Purchase
from reconcile.outcomes import Normalised
from reconcile.reconciliation.sources import Filters, Finding, StoreFault, SweepPage
from reconcile.state import Stamp
from webhooks.google import DeveloperNotification

if TYPE_CHECKING:
    from reconcile.channels.google_truth import GoogleTruth

PAGE = 50
MOST = 5000
READ_LABEL = "ONE_TIME_PRODUCT_READ"


@dataclass(frozen=True)
class PendingItem:
    token: str
    outcome: Normalised


class GooglePending:
    """`Sweep` over stored Google one-time purchases whose state is still `pending`."""

    name = "google:pending"

    def __init__(self, truth: GoogleTruth) -> None:
        self.truth = truth

    def window(self, session: Session, filters: Filters, now: datetime) -> dict[str, Any] | None:
        query = select(Purchase.store_id, Purchase.product_id).where(
            Purchase.channel == "google", Purchase.state == "pending")
        if filters.account_id:
            query = query.where(Purchase.account_id == filters.account_id)
        if filters.store_id:
            query = query.where(Purchase.store_id == filters.store_id)
        pending = [list(row) for row in session.execute(query.order_by(Purchase.id).limit(MOST))]
        return {"pending": pending, "read_at": now.isoformat()} if pending else None

    def fetch(self, window: Mapping[str, Any], token: str | None) -> SweepPage:
        offset = int(token or 0)
        read_at = datetime.fromisoformat(window["read_at"])
        items: list[PendingItem] = []
        errors: list[str] = []
        for store_id, product_id in window["pending"][offset:offset + PAGE]:
            try:
                product = self.truth.play.get_product(product_id, store_id)
            except PlayUnavailable as error:
                raise StoreFault(str(error)) from error
            except PlayPermanentError as error:
                errors.append(f"pending purchase {store_id[:24]}: {error}")
                continue
            notification = DeveloperNotification(
                package_name=self.truth.package_name, event_time=read_at, kind="one_time",
                label=READ_LABEL, purchase_token=store_id, sku=product_id)
            try:
                outcome = gn.one_time(notification, product, store_id,
                                      Stamp(read_at, "reconcile"), self.truth.consumables)
            except gn.MalformedPurchase as error:
                errors.append(f"pending purchase not usable: {error}")
                continue
            items.append(PendingItem(store_id, outcome))
        more = offset + PAGE < len(window["pending"])
        return SweepPage(items, str(offset + PAGE) if more else None, errors)

    def settle(
        self, session: Session, item: PendingItem, *, dry_run: bool, now: datetime
    ) -> Finding | None:
        seen = item.outcome.purchase
        if seen is None or seen.state == "pending":
            return None
        if not dry_run:
            ingest(session, item.outcome, source="reconciliation", now=now,
                   catalog=self.truth.catalog)
        return Finding(kind="status", channel="google", store_id=item.token,
                       subscription_id=None, here="pending", store=seen.state)

    def complete(self, session: Session, window: Mapping[str, Any], now: datetime) -> None:
        """Nothing to remember: whatever is still pending is read again next time."""
