"""POST /v1/reconciliations (start a run; a worker carries it out), GET one, GET the list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.audit.service import API_ACTOR, record
from reconcile.errors import DomainError
from reconcile.reconciliation.report import (
    discrepancies_of,
    discrepancy_counts,
    list_runs,
    load_run,
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


@router.post("", status_code=202)
def start(
    body: StartRun, services: ServicesDep, session: SessionDep, now: NowDep
) -> dict[str, Any]:
    """Record the run and answer at once; the worker (or a `reconcile run`) carries it out."""
    filters = Filters(body.channel, body.account_id, body.store_id)
    run = services.reconciler.start(session, filters, dry_run=body.dry_run, now=now)
    record(session, actor=API_ACTOR, action="reconciliation.start", target=run.id,
           note=" ".join(f"{k}={v}" for k, v in sorted(body.model_dump().items())), now=now)
    return run_json(run, [])


@router.get("/{run_id}")
def show(run_id: str, session: SessionDep) -> dict[str, Any]:
    run = load_run(session, run_id)
    return run_json(run, discrepancies_of(session, run.id))


@router.get("")
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
