"""GET /v1/subscriptions, /v1/subscriptions/{id}, /v1/subscriptions/{id}/events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from reconcile.api.deps import NowDep, SessionDep
from reconcile.api.pages import keyset_page
from reconcile.api.responses import answers
from reconcile.api.schemas import Environment
from reconcile.errors import UnknownSubscription
from reconcile.models import Subscription, SubscriptionEvent
from reconcile.state import Channel, Status
from reconcile.views import iso, present, subscriptions_query

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])


@router.get("", responses=answers(400))
def subscriptions(
    session: SessionDep,
    now: NowDep,
    channel: Channel | None = None,
    store_id: str | None = None,
    account_id: str | None = None,
    status: Status | None = None,
    environment: Environment | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    query = subscriptions_query(channel=channel, store_id=store_id, account_id=account_id,
                                status=status, environment=environment)
    page, next_cursor = keyset_page(session, query, Subscription.id, cursor, limit)
    return {"items": present(session, page, now), "next_cursor": next_cursor}


@router.get("/{subscription_id}", responses=answers(404))
def subscription(subscription_id: str, session: SessionDep, now: NowDep) -> dict[str, Any]:
    return present(session, [load(session, subscription_id)], now)[0]


@router.get("/{subscription_id}/events", responses=answers(400, 404))
def events(
    subscription_id: str,
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> dict[str, Any]:
    load(session, subscription_id)
    query = select(SubscriptionEvent).where(SubscriptionEvent.subscription_id == subscription_id)
    page, next_cursor = keyset_page(session, query, SubscriptionEvent.id, cursor, limit, int)
    return {
        "items": [
            {
                "id": e.id, "source": e.source, "kind": e.kind, "store_time": iso(e.store_time),
                "recorded_at": iso(e.recorded_at), "applied": e.applied, "detail": e.detail,
            }
            for e in page
        ],
        "next_cursor": next_cursor,
    }


def load(session: SessionDep, subscription_id: str) -> Subscription:
    row = session.get(Subscription, subscription_id)
    if row is None:
        raise UnknownSubscription(subscription_id)
    return row
