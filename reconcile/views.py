"""Read side: the contract's Subscription resource and the queries behind the admin API."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from reconcile.catalog.file import Catalog
from reconcile.catalog.service import grants_of
from reconcile.credits.service import totals
from reconcile.models import Account, OutboxEntry, Purchase, Refund, StoreId, Subscription
from reconcile.state import Status, entitled

CANCELLATION_STATES = {"pending": "requested"}
EMPTY_CATALOG = Catalog()


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        value = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError("malformed cursor") from error
    if not value:
        raise ValueError("malformed cursor")
    return value


def is_blocked(session: Session, account_id: str | None) -> bool:
    if account_id is None:
        return False
    account = session.get(Account, account_id)
    return account is not None and account.blocked_at is not None


# The statements every write and read of subscriptions runs, built once (building one and
# its cache key cost more than SQLite's answer to it).
_STORE_IDS_OF = (
    select(StoreId.subscription_id, StoreId.store_id)
    .where(StoreId.subscription_id.in_(bindparam("ids", expanding=True)))
    .order_by(StoreId.created_at, StoreId.store_id)
)
_CANCELLATIONS_OF = (
    select(OutboxEntry)
    .where(OutboxEntry.subscription_id.in_(bindparam("ids", expanding=True)),
           OutboxEntry.kind == "cancel")
    .order_by(OutboxEntry.id)
)
_BLOCKED_OF = select(Account.account_id).where(
    Account.account_id.in_(bindparam("accounts", expanding=True)),
    Account.blocked_at.is_not(None),
)
_SUBSCRIPTIONS_OF = (
    select(Subscription).where(Subscription.account_id == bindparam("account_id"))
    .order_by(Subscription.created_at, Subscription.id)
)
_PURCHASES_OF = (
    select(Purchase).where(Purchase.account_id == bindparam("account_id"))
    .order_by(Purchase.created_at, Purchase.id)
)


def blocked_among(session: Session, accounts: Iterable[str]) -> set[str]:
    """Which of `accounts` are blocked."""
    wanted = list(accounts)
    if not wanted:
        return set()
    return set(session.scalars(_BLOCKED_OF, {"accounts": wanted}))


def present(session: Session, rows: Sequence[Subscription], now: datetime) -> list[dict[str, Any]]:
    """The contract's Subscription JSON for each row, with store ids and cancellation."""
    ids = [row.id for row in rows]
    if not ids:
        return []
    store_ids: dict[str, list[str]] = {i: [] for i in ids}
    for sub_id, store_id in session.execute(_STORE_IDS_OF, {"ids": ids}):
        store_ids[sub_id].append(store_id)
    cancellations: dict[str, OutboxEntry] = {}
    for entry in session.scalars(_CANCELLATIONS_OF, {"ids": ids}):
        cancellations[entry.subscription_id or ""] = entry
    blocked = blocked_among(session, {row.account_id for row in rows if row.account_id})
    return [
        subscription_json(row, store_ids[row.id], cancellations.get(row.id),
                          row.account_id in blocked, now)
        for row in rows
    ]


def subscription_json(
    row: Subscription,
    store_ids: list[str],
    cancellation: OutboxEntry | None,
    blocked: bool,
    now: datetime,
) -> dict[str, Any]:
    status = Status(row.status)
    if cancellation is not None and cancellation.state == "confirmed" and row.auto_renew:
        cancellation = None  # renewal was switched back on after the cancellation took effect
    return {
        "id": row.id,
        "channel": row.channel,
        "environment": row.environment,
        "store_id": row.store_id,
        "store_ids": store_ids or [row.store_id],
        "account_id": row.account_id,
        "product_id": row.product_id,
        "renewal_product_id": row.renewal_product_id or row.product_id,
        "status": status.value,
        "entitled": entitled(status, row.expires_at, row.grace_expires_at, now, blocked),
        "auto_renew": row.auto_renew,
        "expires_at": iso(row.expires_at),
        "grace_expires_at": iso(row.grace_expires_at),
        "cancellation": cancellation_json(cancellation),
        "last_event_at": iso(row.last_event_at),
        "updated_at": iso(row.updated_at),
    }


def cancellation_json(entry: OutboxEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "reason": entry.reason,
        "state": CANCELLATION_STATES.get(entry.state, entry.state),
        "requested_at": iso(entry.created_at),
        "manage_url": (entry.payload or {}).get("manage_url"),
    }


def request_json(entry: OutboxEntry) -> dict[str, Any]:
    """One cancellation or plan change asked of a channel, with everything known about it."""
    payload = entry.payload or {}
    return {
        "id": entry.id,
        "kind": entry.kind,
        "subscription_id": entry.subscription_id,
        "channel": entry.channel,
        "reason": entry.reason,
        "note": entry.note,
        "product_id": payload.get("product_id"),
        "state": CANCELLATION_STATES.get(entry.state, entry.state),
        "manage_url": payload.get("manage_url"),
        "cancellation_type": payload.get("cancellation_type"),
        "failure": entry.error if entry.state == "failed" else None,
        "attempts": entry.attempts,
        "requested_at": iso(entry.created_at),
        "sent_at": iso(entry.sent_at),
        "confirmed_at": iso(entry.confirmed_at),
    }


def subscriptions_query(
    *,
    channel: str | None = None,
    store_id: str | None = None,
    account_id: str | None = None,
    status: str | None = None,
    environment: str | None = None,
) -> Select[tuple[Subscription]]:
    """Subscriptions matching the admin API's filters; `store_id` matches any of their ids."""
    query = select(Subscription)
    if channel:
        query = query.where(Subscription.channel == channel)
    if store_id:
        query = query.where(
            Subscription.id.in_(select(StoreId.subscription_id).where(StoreId.store_id == store_id))
        )
    if account_id:
        query = query.where(Subscription.account_id == account_id)
    if status:
        query = query.where(Subscription.status == status)
    if environment:
        query = query.where(Subscription.environment == environment)
    return query


def purchase_json(row: Purchase, blocked: bool) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel": row.channel,
        "environment": row.environment,
        "store_id": row.store_id,
        "account_id": row.account_id,
        "product_id": row.product_id,
        "kind": row.kind,
        "quantity": row.quantity,
        "amount": row.amount,
        "currency": row.currency,
        "state": row.state,
        "entitled": row.state == "purchased" and not blocked,
        "consumed": row.consumed,
        "purchased_at": iso(row.purchased_at),
        "revoked_at": iso(row.revoked_at),
    }


def refund_json(row: Refund) -> dict[str, Any]:
    """A refund the store made, as `GET /v1/refunds` lists it."""
    return {
        "channel": row.channel,
        "store_id": row.store_id,
        "account_id": row.account_id,
        "product_id": row.product_id,
        "amount": row.amount,
        "currency": row.currency,
        "refunded_at": iso(row.refunded_at),
        "consumption_answer_sent": row.consumption_answer_sent,
        "subscription_id": row.subscription_id,
        "reversed_at": iso(row.reversed_at),
    }


def account_document(
    session: Session,
    account_id: str,
    now: datetime,
    catalog: Catalog = EMPTY_CATALOG,
    *,
    environment: str | None = None,
) -> dict[str, Any] | None:
    """An account's entitlements, block, consent, credits, subscriptions and purchases (only
    those of `environment` when given); None when the service knows nothing of it."""
    subs_query, purchases_query = _SUBSCRIPTIONS_OF, _PURCHASES_OF
    if environment:
        subs_query = subs_query.where(Subscription.environment == environment)
        purchases_query = purchases_query.where(Purchase.environment == environment)
    subs = list(session.scalars(subs_query, {"account_id": account_id}))
    purchases = list(session.scalars(purchases_query, {"account_id": account_id}))
    row = session.get(Account, account_id)
    if row is None and not subs and not purchases:
        return None
    blocked = row is not None and row.blocked_at is not None
    items = present(session, subs, now)
    purchase_items = [purchase_json(p, blocked) for p in purchases]
    return {
        "account_id": account_id,
        "entitled": any(s["entitled"] for s in items),
        "blocked": None if row is None or row.blocked_at is None
        else {"at": iso(row.blocked_at), "reason": row.block_reason},
        "consumption_data_consent": bool(row and row.consumption_consent),
        "subscriptions": items,
        "purchases": purchase_items,
        "entitlements": [
            grant.json()
            for grant in grants_of(catalog, subs, purchases, blocked=blocked, now=now)
        ],
        "credits": {"balance": totals(session, account_id).balance},
    }
