"""Google Play's truth for reconciliation: subscriptionsv2.get, and the voided purchases list.

A read becomes an outcome through the same `google_normalise.subscription` as a notification's
read, stamped with the time of the read (Google's answers carry no time of their own). Voided
purchases since the last complete read (at most 30 days back: all Google keeps) are refunds;
one we never heard of is recorded through `ingest` like a voided-purchase notification.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reconcile.catalog.file import Catalog
from reconcile.chains import find_subscription
from reconcile.channels import google_normalise as gn
from reconcile.channels.google_pending import GooglePending
from reconcile.channels.google_play import PlayClient, PlayPermanentError, PlayUnavailable
from reconcile.ingest import ingest
from reconcile.models import Refund
from reconcile.outcomes import Normalised
from reconcile.reconciliation.sources import (
    Fetched,
    Filters,
    Finding,
    StoreFault,
    Sweep,
    SweepPage,
    Target,
    read_cursor,
    write_cursor,
)
from reconcile.state import Stamp
from reconcile.store_records import NO_CATALOG
from webhooks.google import DeveloperNotification

READ_LABEL = "SUBSCRIPTION_STATUS_READ"
VOIDED_LABEL = "VOIDED_PURCHASE"
VOIDED_RETENTION = timedelta(days=30)
VOIDED_OVERLAP = timedelta(hours=1)


class GoogleTruth:
    """`TruthSource` for Google Play: one subscriptionsv2 read per subscription's newest token."""

    channel = "google"

    def __init__(
        self, play: PlayClient, package_name: str, catalog: Catalog = NO_CATALOG,
        consumables: Collection[str] = (),
    ) -> None:
        self.play = play
        self.package_name = package_name
        self.catalog = catalog
        self.consumables = frozenset(consumables)

    def fetch(
        self, target: Target, now: datetime, calls: AbstractContextManager[object]
    ) -> Fetched:
        try:
            with calls:
                purchase = self.play.get_subscription(target.store_id)
        except PlayPermanentError as error:
            # 410: expired more than 60 days ago; 404/400: not a purchase of this app.
            return Fetched(target, unknown=True, gone=error.status == 410, note=str(error))
        except PlayUnavailable as error:
            return Fetched(target, error=str(error))
        if "replacementCancellation" in (purchase.get("canceledStateContext") or {}):
            # Replaced by an upgrade, downgrade or resubscribe whose notification never came:
            # its EXPIRED must not end a subscription that goes on under a token we don't know.
            return Fetched(target, missing=f"replaced by a newer purchase; state of this one: "
                                           f"{purchase.get('subscriptionState')}")
        notification = DeveloperNotification(
            package_name=self.package_name, event_time=now, kind="subscription",
            label=READ_LABEL, purchase_token=target.store_id,
        )
        try:
            outcome = gn.subscription(notification, purchase, target.store_id,
                                      Stamp(now, "reconcile"))
        except gn.MalformedPurchase as error:
            return Fetched(target, error=f"purchase not usable: {error}")
        return Fetched(target, outcome=outcome)

    def sweeps(self) -> Sequence[Sweep]:
        return [GoogleVoided(self), GooglePending(self)]


@dataclass(frozen=True)
class VoidedItem:
    token: str
    order_id: str
    voided_at: datetime
    outcome: Normalised


class GoogleVoided:
    """voidedpurchases.list since the last complete read: refunds Google made (or reversed
    charges) that we may never have been told about."""

    name = "google:voided"

    def __init__(self, truth: GoogleTruth) -> None:
        self.truth = truth

    def window(self, session: Session, filters: Filters, now: datetime) -> dict[str, Any] | None:
        if filters.narrowed:
            return None  # the list cannot be narrowed to an account or a token
        floor = now - VOIDED_RETENTION + timedelta(minutes=5)
        since = read_cursor(session, self.name)
        start = max(datetime.fromisoformat(since) - VOIDED_OVERLAP, floor) if since else floor
        return {"start": _ms(start), "end": _ms(now)}

    def fetch(self, window: Mapping[str, Any], token: str | None) -> SweepPage:
        start, end = _at(window["start"]), _at(window["end"])
        try:
            page = self.truth.play.list_voided(start, end, token)
        except (PlayUnavailable, PlayPermanentError) as error:
            raise StoreFault(str(error)) from error
        items: list[VoidedItem] = []
        errors: list[str] = []
        for voided in page.get("voidedPurchases") or []:
            try:
                items.append(self._item(voided, end))
            except (PlayUnavailable, gn.MalformedPurchase, KeyError, ValueError) as error:
                errors.append(f"voided purchase not usable: {error}")
        next_token = (page.get("tokenPagination") or {}).get("nextPageToken")
        return SweepPage(items, next_token or None, errors)

    def _item(self, voided: Mapping[str, Any], read_at: datetime) -> VoidedItem:
        """The voided purchase as the same normaliser sees a voided-purchase notification."""
        token = str(voided["purchaseToken"])
        order_id = str(voided.get("orderId") or "")
        voided_at = gn.millis(voided.get("voidedTimeMillis")) or read_at
        notification = DeveloperNotification(
            package_name=self.truth.package_name, event_time=voided_at, kind="voided",
            label=VOIDED_LABEL, purchase_token=token, order_id=order_id or None,
            refund_type=voided.get("refundType"),
        )
        stamp = Stamp(read_at, f"voided:{order_id}")
        try:
            purchase: dict[str, Any] | None = self.truth.play.get_subscription(token)
        except PlayPermanentError:
            purchase = None  # a one-time product (the list does not say which it is)
        if purchase is None:
            quantity = voided.get("voidedQuantity")
            outcome = gn.voided_one_time(
                notification, token, stamp,
                int(quantity) if isinstance(quantity, int | str) and str(quantity).isdigit()
                else None)
        else:
            outcome = gn.subscription(notification, purchase, token, stamp,
                                      revoked=gn.revokes(notification, purchase))
        return VoidedItem(token, order_id, voided_at, outcome)

    def settle(
        self, session: Session, item: VoidedItem, *, dry_run: bool, now: datetime
    ) -> Finding | None:
        refund = item.outcome.refund
        if refund is None:
            return None
        known = session.scalars(
            select(Refund).where(Refund.channel == "google",
                                 Refund.refund_key == refund.refund_key)
        ).first()
        if known is not None:
            if known.partial and known.quantity is None and refund.quantity:
                # The notification of a partial refund said not how many units: now we know,
                # and the credits of those units are clawed back.
                if not dry_run:
                    ingest(session, item.outcome, source="reconciliation", now=now,
                           catalog=self.truth.catalog)
                return Finding(kind="credits", channel="google", store_id=item.token,
                               subscription_id=None, here="partial refund, quantity unknown",
                               store=f"{refund.quantity} refunded (order {item.order_id or '?'})")
            return None
        subscription = find_subscription(session, "google", item.token)
        if not dry_run:
            ingest(session, item.outcome, source="reconciliation", now=now,
                   catalog=self.truth.catalog)
        return Finding(
            kind="refund_not_known", channel="google", store_id=item.token,
            subscription_id=subscription.id if subscription else None, here=None,
            store=f"voided {item.voided_at.strftime('%Y-%m-%dT%H:%M:%SZ')} "
                  f"(order {item.order_id or '?'})",
        )

    def complete(self, session: Session, window: Mapping[str, Any], now: datetime) -> None:
        write_cursor(session, self.name, _at(window["end"]).isoformat(), now)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _at(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)
