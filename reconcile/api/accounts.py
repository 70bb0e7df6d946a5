"""GET /v1/accounts/{account_id}: an account's entitlement, subscriptions and purchases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from reconcile.api.deps import NowDep, SessionDep
from reconcile.api.responses import answers
from reconcile.errors import UnknownAccount
from reconcile.views import account_document

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.get("/{account_id}", responses=answers(404))
def account(account_id: str, session: SessionDep, now: NowDep) -> dict[str, Any]:
    document = account_document(session, account_id, now)
    if document is None:
        raise UnknownAccount(account_id)
    return document
