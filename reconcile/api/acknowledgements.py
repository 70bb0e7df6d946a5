"""GET /v1/acknowledgements: Google purchases we owe an acknowledgement, and the stale ones."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from reconcile.acknowledgements import counts, stale_filter
from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.api.pages import keyset_page
from reconcile.api.responses import answers
from reconcile.models import Acknowledgement
from reconcile.views import iso

router = APIRouter(prefix="/v1/acknowledgements", tags=["acknowledgements"])


@router.get("", responses=answers(400))
def acknowledgements(
    session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    state: Literal["pending", "stale", "acknowledged", "all"] = "pending",
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """`pending`: not yet acknowledged; `stale`: pending past the watchdog age."""
    age = timedelta(hours=services.settings.google_ack_watchdog_hours)
    query = select(Acknowledgement)
    if state == "pending":
        query = query.where(Acknowledgement.acknowledged_at.is_(None))
    elif state == "stale":
        query = query.where(*stale_filter(now, age))
    elif state == "acknowledged":
        query = query.where(Acknowledgement.acknowledged_at.is_not(None))
    page, next_cursor = keyset_page(session, query, Acknowledgement.store_id, cursor, limit)
    return {
        "items": [
            {
                "channel": row.channel,
                "store_id": row.store_id,
                "product_id": row.product_id,
                "kind": row.kind,
                "first_seen_at": iso(row.first_seen_at),
                "acknowledged_at": iso(row.acknowledged_at),
                "attempts": row.attempts,
                "next_attempt_at": iso(row.next_attempt_at) if row.acknowledged_at is None
                else None,
                "last_error": row.last_error,
                "stale": row.acknowledged_at is None and row.first_seen_at < now - age,
            }
            for row in page
        ],
        "next_cursor": next_cursor,
        "counts": counts(session, now, age),
    }
