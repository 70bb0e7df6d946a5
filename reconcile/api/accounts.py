"""GET /v1/accounts/{account_id}: an account's entitlements, subscriptions and purchases."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.api.responses import answers
from reconcile.errors import UnknownAccount
from reconcile.views import account_document

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.get("/{account_id}", responses=answers(404))
def account(
    account_id: str,
    session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    environment: Annotated[Literal["production", "sandbox"] | None, Query()] = None,
) -> dict[str, Any]:
    """The account view; `environment` keeps only production (or only sandbox) purchases."""
    document = account_document(session, account_id, now, services.catalog,
                                environment=environment)
    if document is None:
        raise UnknownAccount(account_id)
    return document
