"""GET /v1/audit: every admin action, from the console or the API, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from reconcile.api.deps import SessionDep
from reconcile.audit.service import audit_json, page
from reconcile.errors import DomainError

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("")
def audit(
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """`{"items": [{"at", "actor", "action", "target", "reason", "note"}], "next_cursor"}`."""
    try:
        rows, next_cursor = page(session, cursor, limit)
    except ValueError as error:
        raise DomainError("malformed cursor", cursor=cursor) from error
    return {"items": [audit_json(row) for row in rows], "next_cursor": next_cursor}
