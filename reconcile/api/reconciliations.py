"""POST /v1/reconciliations (start a run; a worker carries it out), GET one, its discrepancies,
GET the list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.api.responses import answers
from reconcile.audit.service import API_ACTOR, record
from reconcile.errors import DomainError
from reconcile.reconciliation.report import (
    FIRST_PAGE,
    discrepancy_counts,
    discrepancy_json,
    discrepancy_page,
    list_runs,
    load_run,
    page_cursor,
    read_page_cursor,
    run_document,
    run_json,
)
from reconcile.reconciliation.sources import Filters
from reconcile.views import decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/reconciliations", tags=["reconciliations"])


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["apple", "google", "portal"] | None = None
    account_id: str | None = None
    store_id: str | None = None
    dry_run: bool = False


@router.post("", status_code=202, responses=answers(409))
def start(
    body: StartRun, services: ServicesDep, session: SessionDep, now: NowDep
) -> dict[str, Any]:
    """Record the run and answer at once; the worker (or a `reconcile run`) carries it out."""
    filters = Filters(body.channel, body.account_id, body.store_id)
    run = services.reconciler.start(session, filters, dry_run=body.dry_run, now=now)
    record(session, actor=API_ACTOR, action="reconciliation.start", target=run.id,
           note=" ".join(f"{k}={v}" for k, v in sorted(body.model_dump().items())), now=now)
    return {**run_json(run, []), "counts": {}, "discrepancies_next_cursor": None}


@router.get("/{run_id}", responses=answers(404))
def show(run_id: str, session: SessionDep) -> dict[str, Any]:
    """The run, its `counts` by kind and its first discrepancies (the rest: the list below)."""
    return run_document(session, load_run(session, run_id))


DiscrepancyKind = Literal["status", "expires_at", "auto_renew", "product", "missing_here",
                          "unknown_at_store", "unacknowledged", "refund_not_known", "credits"]


@router.get("/{run_id}/discrepancies")
def discrepancies(
    run_id: str,
    session: SessionDep,
    kind: DiscrepancyKind | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = FIRST_PAGE,
) -> dict[str, Any]:
    """Every discrepancy of a run (or of one kind), in the order found, page by page."""
    run = load_run(session, run_id)
    after = None
    if cursor:
        try:
            after = read_page_cursor(cursor)
        except ValueError as error:
            raise DomainError("malformed cursor", cursor=cursor) from error
    page, more = discrepancy_page(session, run.id, kind=kind, after=after, limit=limit)
    return {"items": [discrepancy_json(d) for d in page],
            "next_cursor": None if more is None else page_cursor(more)}


@router.get("", responses=answers(400))
def runs(
    session: SessionDep,
    status: Literal["running", "done", "failed"] | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    after = None
    if cursor:
        try:
            started, _, run_id = decode_cursor(cursor).partition("|")
            after = (datetime.fromisoformat(started), run_id)
        except ValueError as error:
            raise DomainError("malformed cursor", cursor=cursor) from error
    rows = list_runs(session, status=status, after=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    counts = discrepancy_counts(session, [r.id for r in page])
    last = page[-1] if page else None
    return {
        "items": [{**run_json(r, None), "discrepancy_count": counts.get(r.id, 0)} for r in page],
        "next_cursor": (
            encode_cursor(f"{last.started_at.isoformat()}|{last.id}") if more and last else None
        ),
    }
