"""GET /v1/refunds: refunds the stores made anyway, which the business needs to see."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from reconcile.api.deps import SessionDep
from reconcile.errors import DomainError
from reconcile.models import Refund
from reconcile.views import decode_cursor, encode_cursor, iso

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])


@router.get("")
def refunds(
    session: SessionDep,
    channel: str | None = None,
    account_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    query = select(Refund).order_by(Refund.id).limit(limit + 1)
    if channel:
        query = query.where(Refund.channel == channel)
    if account_id:
        query = query.where(Refund.account_id == account_id)
    if cursor:
        try:
            query = query.where(Refund.id > int(decode_cursor(cursor)))
        except ValueError as error:
            raise DomainError("malformed cursor", cursor=cursor) from error
    rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    return {
        "items": [
            {
                "channel": r.channel,
                "store_id": r.store_id,
                "account_id": r.account_id,
                "product_id": r.product_id,
                "amount": r.amount,
                "currency": r.currency,
                "refunded_at": iso(r.refunded_at),
                "consumption_answer_sent": r.consumption_answer_sent,
                "subscription_id": r.subscription_id,
                "reversed_at": iso(r.reversed_at),
            }
            for r in page
        ],
        "next_cursor": encode_cursor(str(page[-1].id)) if more else None,
    }
