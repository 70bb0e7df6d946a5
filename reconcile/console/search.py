"""Finding a customer from whatever id they or the store quote.

An account id, a subscription id, or any store id: Apple original transaction ids and
transaction ids, Google purchase tokens (every token of a linked chain) and order ids. Every
lookup is an exact match on an index; the history and refunds are read only when the first
ones find nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from reconcile.models import (
    Account,
    InboxEntry,
    OutboxEntry,
    Purchase,
    Refund,
    StoreId,
    Subscription,
    SubscriptionEvent,
)

MAX_QUERY = 600
CHANNELS = ("apple", "google", "portal")
MAX_HITS = 50
STORE_ID_WORDS = {"apple": "original transaction id", "google": "purchase token",
                  "portal": "portal id"}
PURCHASE_ID_WORDS = {"apple": "transaction id", "google": "purchase token",
                     "portal": "portal id"}


@dataclass(frozen=True)
class Hit:
    """One thing the query names: an account, or a subscription (and its account, if linked)."""

    account_id: str | None
    subscription_id: str | None
    matched: str  # what the query matched, in words
    notification_id: int | None = None


def search(session: Session, query: str) -> list[Hit]:
    """Everything `query` names exactly, deduplicated, at most MAX_HITS."""
    q = query.strip()
    if not q or len(q) > MAX_QUERY:
        return []
    hits = [*_accounts(session, q), *_subscriptions(session, q), *_purchases(session, q)]
    if not hits:
        hits = [*_history(session, q), *_refunds(session, q), *_requests(session, q)]
    if not hits:
        hits = _notifications(session, q)
    seen: set[tuple[str | None, str | None, int | None]] = set()
    unique = []
    for hit in hits:
        key = (hit.account_id, hit.subscription_id, hit.notification_id)
        if key not in seen:
            seen.add(key)
            unique.append(hit)
    return unique[:MAX_HITS]


def _accounts(session: Session, q: str) -> list[Hit]:
    known = (
        session.get(Account, q) is not None
        or session.scalars(select(Subscription.id).where(Subscription.account_id == q)
                           .limit(1)).first() is not None
        or session.scalars(select(Purchase.id).where(Purchase.account_id == q)
                           .limit(1)).first() is not None
    )
    return [Hit(q, None, "account id")] if known else []


def _subscriptions(session: Session, q: str) -> list[Hit]:
    """By subscription id, then by any store id (each query on an index)."""
    found = []
    row = session.get(Subscription, q)
    if row is not None:
        found.append(Hit(row.account_id, row.id, "subscription id"))
    rows = session.execute(
        select(Subscription.id, Subscription.account_id, Subscription.channel)
        .join(StoreId, StoreId.subscription_id == Subscription.id)
        .where(StoreId.channel.in_(CHANNELS), StoreId.store_id == q).limit(MAX_HITS)
    )
    found += [Hit(account, sub_id, STORE_ID_WORDS.get(channel, "store id"))
              for sub_id, account, channel in rows]
    return found


def _purchases(session: Session, q: str) -> list[Hit]:
    rows = session.execute(
        select(Purchase.account_id, Purchase.channel)
        .where(Purchase.channel.in_(CHANNELS), Purchase.store_id == q).limit(MAX_HITS)
    )
    found = [Hit(account, None, f"one-time purchase ({PURCHASE_ID_WORDS.get(channel, 'id')})")
             for account, channel in rows if account]
    purchase = session.get(Purchase, q)
    if purchase is not None and purchase.account_id:
        found.append(Hit(purchase.account_id, None, "purchase id"))
    return found


def _history(session: Session, q: str) -> list[Hit]:
    """Apple transaction ids of renewals, Google order ids, as the history recorded them
    (each event's `payment_id`, on an index), then checked against the detail exactly."""
    found: list[Hit] = []
    names = [("transaction_id", "transaction id")] if q.isdigit() else []
    if q.startswith("GPA."):
        names.append(("order_id", "order id"))
    if not names:
        return found
    candidates = list(session.execute(
        select(SubscriptionEvent.subscription_id, SubscriptionEvent.detail)
        .where(SubscriptionEvent.payment_id == q).limit(MAX_HITS)
    ))
    for name, words in names:
        ids = {sub_id for sub_id, detail in candidates if (detail or {}).get(name) == q}
        if ids:
            found += [Hit(account, sub_id, words) for sub_id, account in session.execute(
                select(Subscription.id, Subscription.account_id)
                .where(Subscription.id.in_(ids)))]
    return found


def _refunds(session: Session, q: str) -> list[Hit]:
    """By refund key (an Apple transaction id), store id, or a Google refund's order id."""
    rows = session.execute(
        select(Refund.account_id, Refund.subscription_id, Refund.order_id)
        .where(or_(and_(Refund.channel.in_(CHANNELS), Refund.refund_key == q),
                   Refund.store_id == q, Refund.order_id == q))
        .limit(MAX_HITS)
    )
    return [Hit(account, sub_id, "order id of a refund" if order_id == q
                else "transaction id of a refund")
            for account, sub_id, order_id in rows if account or sub_id]


def _requests(session: Session, q: str) -> list[Hit]:
    rows = session.execute(
        select(OutboxEntry.account_id, OutboxEntry.subscription_id)
        .where(OutboxEntry.store_id == q, OutboxEntry.kind == "consumption").limit(MAX_HITS)
    )
    return [Hit(account, sub_id, "transaction id of a refund request")
            for account, sub_id in rows if account or sub_id]


def _notifications(session: Session, q: str) -> list[Hit]:
    """A notification about `q` that made no subscription yet (still pending, or failed)."""
    row = session.scalars(select(InboxEntry.id).where(
        InboxEntry.channel.in_(CHANNELS), InboxEntry.subject == q).limit(1)).first()
    return [] if row is None else [Hit(None, None, "a notification not applied yet", row)]
