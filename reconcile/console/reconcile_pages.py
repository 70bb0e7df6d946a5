"""Reconciliation: the runs, starting one (dry run or repair; everything, a channel, an
account), its progress live, and its discrepancies by kind."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.audit.service import record
from reconcile.console.auth import ReaderDep, ReadSessionDep, actor
from reconcile.console.render import page
from reconcile.console.service import Signed
from reconcile.errors import DomainError
from reconcile.models import Discrepancy, ReconciliationRun
from reconcile.reconciliation.report import (
    discrepancy_counts,
    list_runs,
    load_run,
    run_json,
    summary,
)
from reconcile.reconciliation.sources import Filters
from reconcile.views import decode_cursor, encode_cursor

router = APIRouter(prefix="/console/reconciliations", include_in_schema=False)
AdminPost = Annotated[Signed, Depends(actor("admin"))]
PAGE = 100
CHANNELS = ("apple", "google", "portal")


@router.get("")
def runs(request: Request, signed: ReaderDep, session: ReadSessionDep) -> Response:
    rows = list_runs(session, status=None, after=None, limit=50)
    return page(request, "reconciliations.html", {
        "signed": signed, "runs": rows, "counts": discrepancy_counts(session, [r.id for r in rows]),
        "section": "reconciliations", "channels": CHANNELS})


@router.post("")
def start(
    request: Request, signed: AdminPost, session: SessionDep, services: ServicesDep,
    now: NowDep, mode: Annotated[str, Form()] = "dry_run",
    scope: Annotated[str, Form()] = "all", channel: Annotated[str, Form()] = "",
    account_id: Annotated[str, Form()] = "",
) -> Response:
    """Record the run; a worker carries it out while the run's page shows its progress."""
    filters = Filters(
        channel if scope == "channel" and channel in CHANNELS else None,
        account_id.strip() or None if scope == "account" else None, None)
    if scope == "account" and filters.account_id is None:
        return _start_error(request, signed, session, "Give the account id to reconcile.")
    try:
        with session.begin_nested():
            run = services.reconciler.start(session, filters, dry_run=mode != "repair", now=now)
    except DomainError as error:
        return _start_error(request, signed, session, error.message, error.status_code)
    record(session, actor=signed.user.name, action="reconciliation.start", target=run.id,
           note=_describe(run_json(run, None)), now=now)
    return RedirectResponse(f"/console/reconciliations/{run.id}", status_code=303)


@router.post("/{run_id}/repair")
def repair(request: Request, run_id: str, signed: AdminPost, session: SessionDep,
           services: ServicesDep, now: NowDep) -> Response:
    """A repair run over what a dry run covered."""
    dry = load_run(session, run_id)
    try:
        with session.begin_nested():
            run = services.reconciler.start(session, Filters.from_json(dry.filters),
                                            dry_run=False, now=now)
    except DomainError as error:
        return _start_error(request, signed, session, error.message, error.status_code)
    record(session, actor=signed.user.name, action="reconciliation.start", target=run.id,
           note=f"repair after dry run {run_id}; {_describe(run_json(run, None))}", now=now)
    return RedirectResponse(f"/console/reconciliations/{run.id}", status_code=303)


@router.get("/{run_id}")
def show(request: Request, run_id: str, signed: ReaderDep, session: ReadSessionDep,
         kind: str | None = None, cursor: str | None = None) -> Response:
    try:
        run = load_run(session, run_id)
    except DomainError as error:
        return page(request, "message.html", {"signed": signed, "heading": "Nothing found",
                                              "message": error.message}, status_code=404)
    query = select(Discrepancy).where(Discrepancy.run_id == run.id)
    if kind:
        query = query.where(Discrepancy.kind == kind)
    if cursor:
        try:
            query = query.where(Discrepancy.id > int(decode_cursor(cursor)))
        except ValueError:
            cursor = None
    rows = list(session.scalars(query.order_by(Discrepancy.id).limit(PAGE + 1)))
    more, rows = len(rows) > PAGE, rows[:PAGE]
    return page(request, "reconciliation.html", {
        "signed": signed, "run": run_json(run, None), "kinds": summary(session, run.id),
        "rows": rows, "kind": kind, "section": "reconciliations",
        "next_cursor": encode_cursor(str(rows[-1].id)) if more and rows else None})


@router.get("/{run_id}/progress")
def progress(request: Request, run_id: str, signed: ReaderDep, session: ReadSessionDep) -> Response:
    """The progress fragment htmx polls; once the run has ended it reloads the whole page."""
    run = session.get(ReconciliationRun, run_id)
    if run is None:
        return Response(status_code=404)
    body = run_json(run, None)
    headers = {"HX-Refresh": "true"} if body["status"] != "running" else None
    return page(request, "run_progress.html", {"signed": signed, "run": body},
                headers=headers)


def _start_error(request: Request, signed: Signed, session: SessionDep, message: str,
                 status_code: int = 422) -> Response:
    rows = list_runs(session, status=None, after=None, limit=50)
    return page(request, "reconciliations.html", {
        "signed": signed, "runs": rows, "counts": discrepancy_counts(session, [r.id for r in rows]),
        "section": "reconciliations", "channels": CHANNELS, "error": message},
        status_code=status_code)


def _describe(run: dict[str, Any]) -> str:
    filters = run["filters"] or {}
    scope = ", ".join(f"{k}={v}" for k, v in sorted(filters.items()) if v) or "everything"
    return f"{'dry run' if run['dry_run'] else 'repair'} of {scope}"
