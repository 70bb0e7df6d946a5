"""Account-wide writes: cancel, block, unblock, port-out, consent.

Each answers `{"account_id", "items": [Subscription, ...]}` plus the account's block, consent
and credit balance, as `GET /v1/accounts/{id}` shows them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from reconcile import accounts
from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.api.responses import answers
from reconcile.api.schemas import BlockBody, CancelBody, ConsentBody, PortOutBody
from reconcile.audit.service import API_ACTOR, record
from reconcile.errors import UnknownAccount
from reconcile.views import account_document

router = APIRouter(prefix="/v1/accounts", tags=["policy"], responses=answers(404))


def answer(session: Session, account_id: str, now: datetime) -> dict[str, Any]:
    session.flush()
    document = account_document(session, account_id, now)
    if document is None:
        raise UnknownAccount(account_id)
    items = document.pop("subscriptions")
    return {"account_id": account_id, "items": items, **document}


@router.post("/{account_id}/cancel")
def cancel(account_id: str, body: CancelBody, session: SessionDep, services: ServicesDep,
           now: NowDep) -> dict[str, Any]:
    """Stop renewal of every subscription of the account, each on its own channel."""
    accounts.cancel_account(session, account_id, body.reason, body.note, now,
                            services.cancellers)
    record(session, actor=API_ACTOR, action="account.cancel", target=account_id,
           reason=body.reason, note=body.note, now=now)
    return answer(session, account_id, now)


@router.post("/{account_id}/block")
def block(account_id: str, body: BlockBody, session: SessionDep, services: ServicesDep,
          now: NowDep) -> dict[str, Any]:
    """Acceptable-use block: no access from now, renewals cancelled, no refund."""
    accounts.block(session, account_id, body.reason, now, services.cancellers)
    record(session, actor=API_ACTOR, action="account.block", target=account_id,
           reason=body.reason, now=now)
    return answer(session, account_id, now)


@router.post("/{account_id}/unblock")
def unblock(account_id: str, session: SessionDep, now: NowDep) -> dict[str, Any]:
    """Access returns for any paid period still running; renewals stay cancelled."""
    accounts.unblock(session, account_id, now)
    record(session, actor=API_ACTOR, action="account.unblock", target=account_id, now=now)
    return answer(session, account_id, now)


@router.post("/{account_id}/port-out")
def port_out(
    account_id: str, session: SessionDep, services: ServicesDep, now: NowDep,
    body: Annotated[PortOutBody | None, Body()] = None,
) -> dict[str, Any]:
    """The number left: billing stops after the current period, no partial refund."""
    note = body.note if body is not None else None
    accounts.port_out(session, account_id, note, now, services.cancellers)
    record(session, actor=API_ACTOR, action="account.port_out", target=account_id, note=note,
           now=now)
    return answer(session, account_id, now)


@router.put("/{account_id}/consent")
def consent(account_id: str, body: ConsentBody, session: SessionDep,
            now: NowDep) -> dict[str, Any]:
    """Whether consumption data may be shared with Apple when a refund is requested."""
    accounts.set_consent(session, account_id, body.consumption_data, now)
    record(session, actor=API_ACTOR, action="account.consent", target=account_id,
           note=f"consumption_data={str(body.consumption_data).lower()}", now=now)
    return answer(session, account_id, now)


@router.put("/{account_id}/usage", status_code=410, response_model=None)
def usage(account_id: str) -> JSONResponse:
    """Removed: the credits ledger replaced the usage counters (see docs/policy.md)."""
    return JSONResponse({"detail": "the usage counters are gone: credits are a ledger now "
                                   "(POST /v1/accounts/{id}/credits/debits, GET .../credits)",
                         "account_id": account_id}, status_code=410)
