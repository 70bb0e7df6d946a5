"""Cancellations and plan changes go back to the channel of purchase; nothing is refunded.

Every request is recorded first as an outbox entry (kind `cancel` or `change_plan`), then each
channel's `Canceller` decides what carrying it out means: the portal changes its own truth at
once (through `reconcile.ingest`, the one writer of state), Apple can only be asked of the
customer, and Google is called later by `reconcile.outbox.GoogleCancelJob`. Access always runs
on to `expires_at`: no call here refunds, revokes or shortens anything. Functions take the
caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reconcile.channels import portal
from reconcile.errors import Conflict, UnknownSubscription
from reconcile.ingest import OPEN_STATES
from reconcile.models import OutboxEntry, Subscription
from reconcile.notify.service import track_subscription
from reconcile.state import Status

Reason = Literal["customer_request", "policy_block", "port_out", "admin"]
REASONS: tuple[Reason, ...] = ("customer_request", "policy_block", "port_out", "admin")

APPLE_MANAGE_URL = "https://apps.apple.com/account/subscriptions"
GOOGLE_MANAGE_URL = "https://play.google.com/store/account/subscriptions"
# Relaying the customer's own wish is restorable by them; the company's decisions are not.
GOOGLE_CANCELLATION_TYPES: Mapping[str, str] = {
    "customer_request": "USER_REQUESTED_STOP_RENEWALS",
    "policy_block": "DEVELOPER_REQUESTED_STOP_PAYMENTS",
    "port_out": "DEVELOPER_REQUESTED_STOP_PAYMENTS",
    "admin": "DEVELOPER_REQUESTED_STOP_PAYMENTS",
}
PREPAID_REASON = (
    "prepaid plan: Google Play cannot cancel it and it does not renew; access ends at expires_at"
)
ENDED = {Status.EXPIRED.value, Status.REVOKED.value}


class NotRenewing(Conflict):
    """The subscription has ended or renews no more: a cancellation would change nothing."""

    code = "not_renewing"

    def __init__(self, subscription_id: str, why: str) -> None:
        super().__init__(f"subscription {subscription_id} {why}; nothing was changed",
                         subscription_id=subscription_id)


class Canceller(Protocol):
    """What stopping renewal (or changing the renewing plan) means on one channel.

    Called inside the request's transaction with the new outbox entry already added; it sets
    the entry's state and may record state through `reconcile.ingest`, never a store call.
    """

    def cancel(self, session: Session, row: Subscription, entry: OutboxEntry,
               now: datetime) -> None: ...

    def change_plan(self, session: Session, row: Subscription, entry: OutboxEntry,
                    now: datetime) -> None: ...


class AppleCanceller:
    """No App Store API cancels an ordinary subscription: the customer has to, in Settings."""

    def cancel(self, session: Session, row: Subscription, entry: OutboxEntry,
               now: datetime) -> None:
        entry.state = "customer_action_required"
        entry.payload = {**entry.payload, "manage_url": APPLE_MANAGE_URL}

    def change_plan(self, session: Session, row: Subscription, entry: OutboxEntry,
                    now: datetime) -> None:
        self.cancel(session, row, entry, now)


class PortalCanceller:
    """The portal's truth is this service: renewal stops (or the plan changes) at once."""

    def cancel(self, session: Session, row: Subscription, entry: OutboxEntry,
               now: datetime) -> None:
        session.flush()
        # Turning auto-renew off confirms the pending entry (reconcile.ingest does that).
        portal.record(session, row, {"auto_renew": False}, "PORTAL_CANCEL", now)
        entry.state = "confirmed"
        entry.confirmed_at = entry.confirmed_at or now

    def change_plan(self, session: Session, row: Subscription, entry: OutboxEntry,
                    now: datetime) -> None:
        session.flush()
        portal.record(session, row, {"renewal_product_id": entry.payload["product_id"]},
                      "PORTAL_PLAN_CHANGE", now)
        entry.state = "confirmed"
        entry.confirmed_at = now


class GoogleCanceller:
    """Queues `subscriptionsv2.cancel` for the worker; plan changes are the customer's to make."""

    def __init__(self, package_name: str | None) -> None:
        self.package_name = package_name

    def cancel(self, session: Session, row: Subscription, entry: OutboxEntry,
               now: datetime) -> None:
        if row.prepaid:
            entry.state = "failed"
            entry.error = PREPAID_REASON
            return
        entry.state = "pending"
        # Fixed now, so that a retry after a crash repeats exactly the same call.
        entry.payload = {
            **entry.payload,
            "token": row.store_id,
            "cancellation_type": GOOGLE_CANCELLATION_TYPES[entry.reason or "admin"],
        }

    def change_plan(self, session: Session, row: Subscription, entry: OutboxEntry,
                    now: datetime) -> None:
        url = GOOGLE_MANAGE_URL
        if self.package_name and row.product_id:
            url = f"{url}?sku={row.product_id}&package={self.package_name}"
        entry.state = "customer_action_required"
        entry.payload = {**entry.payload, "manage_url": url}


def default_cancellers(google_package_name: str | None) -> dict[str, Canceller]:
    return {
        "apple": AppleCanceller(),
        "google": GoogleCanceller(google_package_name),
        "portal": PortalCanceller(),
    }


def load_for_update(session: Session, subscription_id: str) -> Subscription:
    """The subscription, locked for this transaction (two cancels of one row serialise)."""
    row = session.get(Subscription, subscription_id, with_for_update=True)
    if row is None:
        raise UnknownSubscription(subscription_id)
    return row


def latest(session: Session, kind: str, subscription_id: str) -> OutboxEntry | None:
    return session.scalars(
        select(OutboxEntry)
        .where(OutboxEntry.kind == kind, OutboxEntry.subscription_id == subscription_id)
        .order_by(OutboxEntry.id.desc())
        .limit(1)
    ).first()


def has_ended(row: Subscription, now: datetime) -> bool:
    if row.status in ENDED:
        return True
    # A portal period that ran out without a renewal is over even before the expiry job runs.
    return row.channel == "portal" and portal.status_at(row.expires_at, now) is Status.EXPIRED


def cancel(
    session: Session,
    row: Subscription,
    reason: Reason,
    note: str | None,
    now: datetime,
    cancellers: Mapping[str, Canceller],
) -> OutboxEntry:
    """Stop `row` renewing on its channel; a repeat of a standing request changes nothing.

    Raises `NotRenewing` when the subscription has ended or already renews no more.
    """
    track_subscription(session, row, now)
    current = latest(session, "cancel", row.id)
    if current is not None and _stands(current, row):
        return current
    if has_ended(row, now):
        raise NotRenewing(row.id, f"has ended ({_ended_status(row, now)})")
    # A prepaid plan never renews, but the request is recorded: the channel says why it fails.
    if not row.auto_renew and not row.prepaid:
        raise NotRenewing(row.id, "is already cancelled (auto_renew is off)")
    entry = _new_entry(session, row, "cancel", now, reason=reason, note=note, payload={})
    cancellers[row.channel].cancel(session, row, entry, now)
    return entry


def change_plan(
    session: Session,
    row: Subscription,
    product_id: str,
    now: datetime,
    cancellers: Mapping[str, Canceller],
) -> OutboxEntry | None:
    """Make `product_id` what renews next. Asking again for the same product answers the
    standing request; None when it renews already without any request (nothing changes)."""
    track_subscription(session, row, now)
    if has_ended(row, now):
        raise NotRenewing(row.id, f"has ended ({_ended_status(row, now)})")
    renews = (row.renewal_product_id or row.product_id) == product_id
    current = latest(session, "change_plan", row.id)
    if current is not None and current.payload.get("product_id") == product_id and (
        current.state in OPEN_STATES or renews
    ):
        return current
    if renews:
        return None
    entry = _new_entry(session, row, "change_plan", now, reason="admin", note=None,
                       payload={"product_id": product_id, "from_product_id": row.product_id})
    cancellers[row.channel].change_plan(session, row, entry, now)
    return entry


def cancel_all(
    session: Session,
    rows: Iterable[Subscription],
    reason: Reason,
    note: str | None,
    now: datetime,
    cancellers: Mapping[str, Canceller],
) -> None:
    """Stop renewal of every subscription given; ended or non-renewing ones are left alone."""
    for row in rows:
        try:
            cancel(session, row, reason, note, now, cancellers)
        except NotRenewing:
            continue


def _stands(entry: OutboxEntry, row: Subscription) -> bool:
    """Whether an earlier cancellation still answers a new request (a repeat changes nothing)."""
    if entry.state in OPEN_STATES:
        return True
    if entry.state == "failed":
        return row.prepaid  # a refused call may work when asked again; a prepaid plan never will
    return not row.auto_renew  # confirmed, and renewal is still off


def _ended_status(row: Subscription, now: datetime) -> str:
    return Status.EXPIRED.value if row.status not in ENDED and has_ended(row, now) else row.status


def _new_entry(
    session: Session,
    row: Subscription,
    kind: str,
    now: datetime,
    *,
    reason: str,
    note: str | None,
    payload: dict[str, object],
) -> OutboxEntry:
    # One entry per request: the sequence number makes a second, later request a new entry
    # while the unique (kind, dedupe_key) refuses a concurrent duplicate of the same one.
    sequence = session.scalar(
        select(func.count()).select_from(OutboxEntry)
        .where(OutboxEntry.kind == kind, OutboxEntry.subscription_id == row.id)
    ) or 0
    entry = OutboxEntry(
        channel=row.channel, kind=kind, dedupe_key=f"{row.id}:{sequence + 1}",
        subscription_id=row.id, account_id=row.account_id, store_id=row.store_id,
        payload=payload, state="pending", reason=reason, note=note, attempts=0,
        created_at=now, next_attempt_at=now,
    )
    session.add(entry)
    return entry
