"""Store identifiers to subscriptions, and Google token chains.

`find_subscription` resolves any store identifier (Apple original transaction id, any token of
a Google chain). The chain rules are called only from `reconcile.ingest` (the one writer of
subscription state), inside its transaction. A new token continues a subscription through
`linkedPurchaseToken` (upgrade, downgrade, resubscribe before expiry) or, after expiry, through
the account id; tokens of one chain that arrived out of order are merged here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from reconcile.models import OutboxEntry, Refund, StoreId, Subscription, SubscriptionEvent
from reconcile.state import Channel, Observation, Status

# Statuses with which a new purchase token starts (or restarts) a subscription.
CONTINUING_STATUSES = {Status.PENDING.value, Status.ACTIVE.value, Status.GRACE_PERIOD.value}
# Built once: every write looks a subscription up by store id, and building the statement
# (and its cache key) cost more than SQLite's answer.
_BY_STORE_ID = (
    select(Subscription)
    .join(StoreId, StoreId.subscription_id == Subscription.id)
    .where(StoreId.channel == bindparam("channel"), StoreId.store_id == bindparam("store_id"))
)
_BY_STORE_ID_LOCKED = _BY_STORE_ID.with_for_update(of=Subscription)


def find_subscription(
    session: Session, channel: str, store_id: str, *, lock: bool = False
) -> Subscription | None:
    """The subscription any of whose store identifiers is `store_id`.

    With `lock`, the row is locked for this transaction (PostgreSQL: writers of one
    subscription take turns; the version column catches anything else).
    """
    query = _BY_STORE_ID_LOCKED if lock else _BY_STORE_ID
    return session.scalars(query, {"channel": channel, "store_id": store_id}).first()


def continued_by_account(session: Session, observation: Observation) -> Subscription | None:
    """A Google resubscribe after expiry: a new token with no link, same account.

    Google issues a fresh purchase token without `linkedPurchaseToken` when a customer buys
    again after the old subscription ended; `obfuscatedExternalAccountId` is what ties it to
    the account's subscription. Only an ended subscription is continued, so two subscriptions
    the customer holds at once stay two.
    """
    account = observation.fields.get("account_id")
    starts = observation.fields.get("status") in CONTINUING_STATUSES
    if observation.channel is not Channel.GOOGLE or not account or not starts:
        return None
    return session.scalars(
        select(Subscription)
        .where(Subscription.channel == observation.channel.value,
               Subscription.environment == observation.environment,
               Subscription.account_id == account,
               Subscription.status.in_((Status.EXPIRED.value, Status.REVOKED.value)))
        .order_by(Subscription.last_event_at.desc(), Subscription.id)
        .limit(1)
        .with_for_update()
    ).first()


def absorb(session: Session, survivor: Subscription, older: Subscription, now: datetime) -> None:
    """Fold a subscription built from an older link of the same chain into `survivor`.

    Notifications arrive unordered: C (linking B) can come before A, which then starts a
    subscription of its own, until B (linking A) shows they are one chain. The survivor holds
    the newest token, so its state stands; the older one's history moves over.
    """
    for model in (StoreId, SubscriptionEvent, Refund, OutboxEntry):
        session.execute(
            update(model).where(model.subscription_id == older.id)
            .values(subscription_id=survivor.id)
        )
    session.add(SubscriptionEvent(
        subscription_id=survivor.id, source="ingest", kind="merged", store_time=None,
        recorded_at=now, applied=False, inbox_id=None,
        detail={"merged_subscription_id": older.id, "store_id": older.store_id},
    ))
    session.flush()
    session.delete(older)
    session.flush()
