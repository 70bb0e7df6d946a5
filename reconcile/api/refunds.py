"""GET /v1/refunds: refunds the stores made anyway, which the business needs to see; and
GET /v1/refund-requests: the refund requests Apple asked us to answer, and their outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from reconcile.api.deps import SessionDep
from reconcile.api.pages import keyset_page
from reconcile.api.responses import answers
from reconcile.api.schemas import RequestState
from reconcile.models import OutboxEntry, Refund
from reconcile.state import Channel
from reconcile.views import iso, refund_json

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])


@router.get("", responses=answers(400))
def refunds(
    session: SessionDep,
    channel: Channel | None = None,
    account_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    query = select(Refund)
    if channel:
        query = query.where(Refund.channel == channel)
    if account_id:
        query = query.where(Refund.account_id == account_id)
    page, next_cursor = keyset_page(session, query, Refund.id, cursor, limit, int)
    return {
        "items": [
            refund_json(r)
            for r in page
        ],
        "next_cursor": next_cursor,
    }


requests_router = APIRouter(prefix="/v1/refund-requests", tags=["refunds"])


@requests_router.get("", responses=answers(400))
def refund_requests(
    session: SessionDep,
    account_id: str | None = None,
    state: RequestState | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Customers' refund requests Apple asked us about (CONSUMPTION_REQUEST): what we answered
    (`sent`, `skipped` with why, `failed`, or still `pending`) and how Apple decided."""
    query = select(OutboxEntry).where(OutboxEntry.kind == "consumption")
    if account_id:
        query = query.where(OutboxEntry.account_id == account_id)
    if state:
        query = query.where(OutboxEntry.state == state)
    page, next_cursor = keyset_page(session, query, OutboxEntry.id, cursor, limit, int)
    return {
        "items": [
            {
                "channel": e.channel,
                "transaction_id": e.store_id,
                "original_transaction_id": e.payload.get("original_transaction_id"),
                "account_id": e.account_id,
                "product_id": e.payload.get("product_id"),
                "product_type": e.payload.get("product_type"),
                "reason": e.payload.get("reason"),
                "requested_at": _iso_text(e.payload.get("requested_at")),
                "deadline_at": iso(e.deadline_at),
                "state": e.state,
                "why": e.error if e.state in ("skipped", "failed") else None,
                "attempts": e.attempts,
                "answer": e.payload.get("answer") if e.state == "sent" else None,
                "sent_at": iso(e.sent_at),
                "outcome": e.outcome,
            }
            for e in page
        ],
        "next_cursor": next_cursor,
    }


def _iso_text(value: str | None) -> str | None:
    return None if value is None else iso(datetime.fromisoformat(value))
