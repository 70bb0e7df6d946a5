"""The contract's reconciliation resource, and the queries behind the admin API and the CLI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from reconcile.errors import UnknownReconciliation
from reconcile.models import Discrepancy, ReconciliationRun
from reconcile.views import decode_cursor, encode_cursor, iso


def load_run(session: Session, run_id: str) -> ReconciliationRun:
    run = session.get(ReconciliationRun, run_id)
    if run is None:
        raise UnknownReconciliation(run_id)
    return run


def run_json(run: ReconciliationRun, discrepancies: Sequence[Discrepancy] | None) -> dict[str, Any]:
    """The run as the contract shows it (with discrepancies when given), plus progress detail."""
    checkpoint = run.checkpoint or {}
    phases: list[str] = checkpoint.get("phases", [])
    index: int = checkpoint.get("phase", 0)
    body: dict[str, Any] = {
        "id": run.id,
        "status": run.status,
        "dry_run": run.dry_run,
        "checked": run.checked,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "filters": run.filters,
        "total": checkpoint.get("total"),
        "phase": phases[index] if run.status == "running" and index < len(phases) else None,
        "errors": checkpoint.get("errors", 0),
        "failures": checkpoint.get("failures", []),
        "error": run.error,
    }
    if discrepancies is not None:
        body["discrepancies"] = [discrepancy_json(d) for d in discrepancies]
    return body


def run_document(session: Session, run: ReconciliationRun) -> dict[str, Any]:
    """The run with `counts` by kind and the first page of its discrepancies; a run with more
    names the cursor of `GET /v1/reconciliations/{id}/discrepancies` that continues it."""
    page, more = discrepancy_page(session, run.id, kind=None, after=None, limit=FIRST_PAGE)
    return {**run_json(run, page), "counts": counts_by_kind(session, run.id),
            "discrepancies_next_cursor": None if more is None else page_cursor(more)}


def page_cursor(after: int) -> str:
    return encode_cursor(str(after))


def read_page_cursor(cursor: str) -> int:
    """The id a cursor continues after; ValueError when it is not one of ours."""
    value = int(decode_cursor(cursor))
    if not 0 <= value < 2**63:  # a BIGINT id, or the database refuses the bind
        raise ValueError("malformed cursor")
    return value


def discrepancy_json(row: Discrepancy) -> dict[str, Any]:
    return {
        "channel": row.channel,
        "store_id": row.store_id,
        "subscription_id": row.subscription_id,
        "kind": row.kind,
        "here": row.here,
        "store": row.store,
        "repaired": row.repaired,
    }


# What `GET /v1/reconciliations/{id}` shows inline; the rest is paged (`discrepancy_page`).
FIRST_PAGE = 100


def discrepancies_of(
    session: Session, run_id: str, *, kind: str | None = None, after: int | None = None,
    limit: int | None = None,
) -> list[Discrepancy]:
    """A run's discrepancies in the order found, keyset-paged on id (ix_discrepancies_run*)."""
    query = select(Discrepancy).where(Discrepancy.run_id == run_id)
    if kind is not None:
        query = query.where(Discrepancy.kind == kind)
    if after is not None:
        query = query.where(Discrepancy.id > after)
    query = query.order_by(Discrepancy.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def discrepancy_page(
    session: Session, run_id: str, *, kind: str | None, after: int | None, limit: int
) -> tuple[list[Discrepancy], int | None]:
    """One page and the id to continue after (None on the last page)."""
    rows = discrepancies_of(session, run_id, kind=kind, after=after, limit=limit + 1)
    page = rows[:limit]
    return page, page[-1].id if len(rows) > limit else None


def counts_by_kind(session: Session, run_id: str) -> dict[str, int]:
    return {kind: found for kind, (found, _) in summary(session, run_id).items()}


def summary(session: Session, run_id: str) -> dict[str, tuple[int, int]]:
    """Per kind: (found, repaired)."""
    found: Counter[str] = Counter()
    repaired: Counter[str] = Counter()
    for kind, was_repaired, count in session.execute(
        select(Discrepancy.kind, Discrepancy.repaired, func.count())
        .where(Discrepancy.run_id == run_id)
        .group_by(Discrepancy.kind, Discrepancy.repaired)
    ):
        found[kind] += count
        if was_repaired:
            repaired[kind] += count
    return {kind: (found[kind], repaired[kind]) for kind in sorted(found)}


def list_runs(
    session: Session, *, status: str | None, after: tuple[datetime, str] | None, limit: int
) -> list[ReconciliationRun]:
    """Newest first, keyset-paged on (started_at, id)."""
    query = (
        select(ReconciliationRun)
        .order_by(ReconciliationRun.started_at.desc(), ReconciliationRun.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(ReconciliationRun.status == status)
    if after is not None:
        started, run_id = after
        query = query.where(or_(
            ReconciliationRun.started_at < started,
            and_(ReconciliationRun.started_at == started, ReconciliationRun.id < run_id),
        ))
    return list(session.scalars(query))


def discrepancy_counts(session: Session, run_ids: Sequence[str]) -> dict[str, int]:
    return dict(session.execute(
        select(Discrepancy.run_id, func.count())
        .where(Discrepancy.run_id.in_(run_ids))
        .group_by(Discrepancy.run_id)
    ).tuples().all())
