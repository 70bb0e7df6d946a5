"""One-time purchases, refunds, and what we owe the stores (consumption answers, acknowledgements).

Called by `reconcile.ingest` for the parts of a `Normalised` outcome that are not subscription
state. Functions take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Boolean, Table, bindparam, select, text
from sqlalchemy.orm import Session

from reconcile.catalog.file import Catalog
from reconcile.chains import find_subscription
from reconcile.credits.grants import move_grant, settle_purchase, settle_refund
from reconcile.ids import new_id
from reconcile.models import Account, Acknowledgement, OutboxEntry, Purchase, Refund, Subscription
from reconcile.notify.service import emit, touch, track_purchase
from reconcile.outcomes import (
    AcknowledgementDue,
    ConsumptionRequested,
    PurchaseSeen,
    RefundDeclined,
    RefundSeen,
)
from reconcile.state import Stamp
from reconcile.views import refund_json

# Apple wants a consumption answer within 12 hours of the request.
CONSUMPTION_DEADLINE = timedelta(hours=12)
NO_CATALOG = Catalog()
_ACCOUNTS = cast(Table, Account.__table__)
# Text, compiled once (SQLAlchemy 2.0 cannot cache a compiled `on_conflict_do_nothing`);
# SQLite and PostgreSQL both read it. A concurrent creator's row wins: with PostgreSQL the
# INSERT waits for that transaction and then does nothing.
_CREATE_ACCOUNTS = text(
    "INSERT INTO accounts (account_id, consumption_consent, credits_purchased, credits_used,"
    " updated_at) VALUES (:account_id, :consent, 0, 0, :updated_at)"
    " ON CONFLICT (account_id) DO NOTHING"
).bindparams(bindparam("consent", type_=Boolean()),
             bindparam("updated_at", type_=_ACCOUNTS.c.updated_at.type))


def ensure_account(session: Session, account_id: str, now: datetime) -> Account:
    """The account's row, created when missing."""
    account = session.get(Account, account_id)
    if account is None:
        create_accounts(session, [account_id], now)
        account = session.get(Account, account_id)
        assert account is not None, account_id
    return account


def create_accounts(session: Session, account_ids: Iterable[str], now: datetime) -> None:
    """A row for each of these accounts not yet known, in id order (so two writers creating
    the same accounts never deadlock); one another process creates meanwhile is kept."""
    rows = [{"account_id": a, "consent": False, "updated_at": now} for a in sorted(account_ids)]
    if rows:
        session.execute(_CREATE_ACCOUNTS, rows)


def record_purchase(
    session: Session, seen: PurchaseSeen, now: datetime, catalog: Catalog = NO_CATALOG
) -> Purchase:
    """Store or update a one-time purchase; a credit pack's credits are granted here, in the
    same transaction, once it is confirmed and its account known."""
    row = session.scalars(
        select(Purchase).where(Purchase.channel == seen.channel.value,
                               Purchase.store_id == seen.store_id)
    ).first()
    track_purchase(session, row, now)
    if row is None:
        row = Purchase(
            id=new_id("pur"), channel=seen.channel.value, environment=seen.environment,
            store_id=seen.store_id, product_id=seen.product_id, kind=seen.kind,
            account_id=seen.account_id, quantity=seen.quantity, amount=seen.amount,
            currency=seen.currency, purchased_at=seen.purchased_at, state=seen.state,
            revoked_at=seen.stamp.time if seen.state == "revoked" else None,
            consumed=False, clock={"state": seen.stamp.encode()}, created_at=now, updated_at=now,
        )
        session.add(row)
        track_purchase(session, None, now, purchase_id=row.id)
    else:
        held = row.clock.get("state")
        if held is None or Stamp.decode(held) < seen.stamp:
            row.state = seen.state
            row.clock = {**row.clock, "state": seen.stamp.encode()}
        row.account_id = row.account_id or seen.account_id
        row.amount = row.amount or seen.amount
        row.currency = row.currency or seen.currency
        row.updated_at = now
    if seen.account_id:
        ensure_account(session, seen.account_id, now)
    if seen.needs_acknowledgement:
        kind = "consumable" if seen.kind == "consumable" else "product"
        require_acknowledgement(session, AcknowledgementDue(seen.store_id, seen.product_id, kind),
                                now)
    session.flush()
    settle_purchase(session, row, catalog, now)
    return row


def record_refund(
    session: Session,
    seen: RefundSeen,
    now: datetime,
    subscription_id: str | None,
    catalog: Catalog = NO_CATALOG,
) -> Refund:
    """Store a refund the store made; a refunded credit pack's credits are clawed back here."""
    row = session.scalars(
        select(Refund).where(Refund.channel == seen.channel.value,
                             Refund.refund_key == seen.refund_key)
    ).first()
    if subscription_id is None and seen.subscription_store_id:
        sub = find_subscription(session, seen.channel.value, seen.subscription_store_id)
        subscription_id = sub.id if sub else None
    purchase = None
    if seen.purchase_store_id:
        purchase = session.scalars(
            select(Purchase).where(Purchase.channel == seen.channel.value,
                                   Purchase.store_id == seen.purchase_store_id)
        ).first()
    if row is None:
        # Google's voided-purchase notice names only the token: the rest comes from our records.
        known: Purchase | Subscription | None = purchase or (
            session.get(Subscription, subscription_id) if subscription_id else None)
        row = Refund(
            channel=seen.channel.value, refund_key=seen.refund_key, store_id=seen.store_id,
            subscription_id=subscription_id, purchase_id=purchase.id if purchase else None,
            account_id=seen.account_id or (known.account_id if known else None),
            product_id=seen.product_id or (known.product_id if known else None),
            amount=seen.amount,
            currency=seen.currency, refunded_at=seen.refunded_at, recorded_at=now,
            consumption_answer_sent=_consumption_answered(session, seen.store_id),
            partial=seen.partial, quantity=seen.quantity,
        )
        session.add(row)
        emit(session, type="refund.recorded", account_id=row.account_id,
             data={"refund": refund_json(row)}, now=now, subscription_id=subscription_id)
        touch(session, row.account_id, now)
    elif row.partial and row.quantity is None and seen.quantity:
        # Google's notification of a partial refund has no quantity; the voided list has it.
        row.quantity = seen.quantity
    if seen.reversed:
        row.reversed_at = row.reversed_at or seen.stamp.time
    if purchase is not None:
        track_purchase(session, purchase, now)
    if purchase is not None and not seen.partial:
        held = purchase.clock.get("state")
        if held is None or Stamp.decode(held) < seen.stamp:
            purchase.state = "purchased" if seen.reversed else "revoked"
            purchase.revoked_at = None if seen.reversed else seen.refunded_at
            purchase.clock = {**purchase.clock, "state": seen.stamp.encode()}
            purchase.updated_at = now
    _settle_consumption_requests(session, seen)
    session.flush()
    if purchase is not None:
        settle_refund(session, row, purchase, catalog, now)
    return row


def _consumption_answered(session: Session, transaction_id: str) -> bool:
    return session.scalars(
        select(OutboxEntry.id).where(OutboxEntry.kind == "consumption",
                                     OutboxEntry.store_id == transaction_id,
                                     OutboxEntry.state == "sent")
    ).first() is not None


def _settle_consumption_requests(session: Session, seen: RefundSeen) -> None:
    """Track how a refund request ended: Apple refunded (or reversed that)."""
    for entry in session.scalars(
        select(OutboxEntry).where(OutboxEntry.kind == "consumption",
                                  OutboxEntry.store_id == seen.store_id)
    ):
        entry.outcome = "refund_reversed" if seen.reversed else "refunded"


def record_refund_declined(session: Session, seen: RefundDeclined) -> None:
    """Track how a refund request ended: Apple declined it."""
    for entry in session.scalars(
        select(OutboxEntry).where(OutboxEntry.kind == "consumption",
                                  OutboxEntry.store_id == seen.transaction_id)
    ):
        entry.outcome = "declined"


def queue_consumption_answer(session: Session, seen: ConsumptionRequested, now: datetime) -> None:
    key = f"{seen.transaction_id}:{seen.notification_id}"
    exists = session.scalars(
        select(OutboxEntry.id).where(OutboxEntry.kind == "consumption",
                                     OutboxEntry.dedupe_key == key)
    ).first()
    if exists is not None:
        return
    session.add(
        OutboxEntry(
            channel="apple", kind="consumption", dedupe_key=key,
            account_id=seen.account_id, store_id=seen.transaction_id,
            payload={"original_transaction_id": seen.original_transaction_id,
                     "product_id": seen.product_id, "product_type": seen.product_type,
                     "reason": seen.reason, "environment": seen.environment,
                     "requested_at": seen.requested_at.isoformat()},
            state="pending", attempts=0, created_at=now, next_attempt_at=now,
            deadline_at=seen.requested_at + CONSUMPTION_DEADLINE,
        )
    )


def require_acknowledgement(session: Session, due: AcknowledgementDue, now: datetime) -> None:
    row = session.get(Acknowledgement, ("google", due.store_id))
    if row is None:
        session.add(Acknowledgement(channel="google", store_id=due.store_id,
                                    product_id=due.product_id, kind=due.kind, first_seen_at=now,
                                    attempts=0, next_attempt_at=now))


def link_purchase(
    session: Session, row: Purchase, account_id: str, now: datetime,
    catalog: Catalog = NO_CATALOG,
) -> bool:
    """The business says the one-time purchase `row` is `account_id`'s; True when it moved.
    What it granted moves with it: credits held by the previous account go to the new one."""
    previous = row.account_id
    if previous == account_id:
        return False
    track_purchase(session, row, now)  # purchase.transferred, to both accounts
    row.account_id = account_id
    row.updated_at = now
    ensure_account(session, account_id, now)
    session.flush()
    if previous:
        move_grant(session, purchase_id_or_reference=row.id, from_account=previous,
                   to_account=account_id, now=now)
    else:
        settle_purchase(session, row, catalog, now)  # a grant that waited for its account
    return True
