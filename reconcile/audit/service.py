"""Writing and reading the audit log. `record` joins the caller's transaction and never
commits, so an action and its audit row are kept or rolled back together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from reconcile.audit.models import AuditRecord
from reconcile.views import decode_cursor, encode_cursor, iso

API_ACTOR = "api"


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str,
    reason: str | None = None,
    note: str | None = None,
    now: datetime,
) -> AuditRecord:
    """Append one audit row for an action taken in this transaction."""
    if not actor or not action or not target:
        raise ValueError("an audit record needs an actor, an action and a target")
    row = AuditRecord(at=now, actor=actor, action=action, target=target,
                      reason=reason or None, note=note or None)
    session.add(row)
    return row


def page(
    session: Session, cursor: str | None, limit: int, *, targets: Sequence[str] | None = None
) -> tuple[list[AuditRecord], str | None]:
    """Newest first, keyset-paged on the id; `targets` keeps only rows about those."""
    query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit + 1)
    if cursor:
        try:
            before = int(decode_cursor(cursor))
        except ValueError as error:
            raise ValueError("malformed cursor") from error
        query = query.where(AuditRecord.id < before)
    if targets is not None:
        query = query.where(AuditRecord.target.in_(list(targets)))
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(str(rows[-1].id)) if more and rows else None


def audit_json(row: AuditRecord) -> dict[str, Any]:
    return {"at": iso(row.at), "actor": row.actor, "action": row.action, "target": row.target,
            "reason": row.reason, "note": row.note}
