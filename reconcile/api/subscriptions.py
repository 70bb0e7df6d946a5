"""GET /v1/subscriptions, /v1/subscriptions/{id}, /v1/subscriptions/{id}/events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from reconcile.api.deps import NowDep, SessionDep
from reconcile.errors import DomainError, UnknownSubscription
from reconcile.models import Subscription, SubscriptionEvent
from reconcile.views import decode_cursor, encode_cursor, iso, list_subscriptions, present

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


@router.get("")
def subscriptions(
    session: SessionDep,
    now: NowDep,
    channel: str | None = None,
    store_id: str | None = None,
    account_id: str | None = None,
    status: str | None = None,
    environment: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as error:
        raise DomainError(str(error), cursor=cursor) from error
    rows = list_subscriptions(
        session, channel=channel, store_id=store_id, account_id=account_id, status=status,
        environment=environment, after=after, limit=limit + 1,
    )
    page, more = rows[:limit], len(rows) > limit
    return {
        "items": present(session, page, now),
        "next_cursor": encode_cursor(page[-1].id) if more else None,
    }


@router.get("/{subscription_id}")
def subscription(subscription_id: str, session: SessionDep, now: NowDep) -> dict[str, Any]:
    return present(session, [load(session, subscription_id)], now)[0]


@router.get("/{subscription_id}/events")
def events(
    subscription_id: str,
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> dict[str, Any]:
    load(session, subscription_id)
    query = (
        select(SubscriptionEvent)
        .where(SubscriptionEvent.subscription_id == subscription_id)
        .order_by(SubscriptionEvent.id)
        .limit(limit + 1)
    )
    if cursor:
        try:
            query = query.where(SubscriptionEvent.id > int(decode_cursor(cursor)))
        except ValueError as error:
            raise DomainError("malformed cursor", cursor=cursor) from error
    rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    return {
        "items": [
            {
                "id": e.id, "source": e.source, "kind": e.kind, "store_time": iso(e.store_time),
                "recorded_at": iso(e.recorded_at), "applied": e.applied, "detail": e.detail,
            }
            for e in page
        ],
        "next_cursor": encode_cursor(str(page[-1].id)) if more else None,
    }


def load(session: SessionDep, subscription_id: str) -> Subscription:
    row = session.get(Subscription, subscription_id)
    if row is None:
        raise UnknownSubscription(subscription_id)
    return row
