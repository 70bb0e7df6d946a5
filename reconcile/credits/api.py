"""The credits endpoints: balance and entries, debits (app); adjustments, portal purchases (admin).

Refusals answer the contract's `{"detail", ...}` shape rather than the admin API's domain-error
shape, because the business's backend reads `balance` from a refused debit.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from reconcile.accounts import known_account
from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.audit.service import API_ACTOR, record
from reconcile.credits import grants, service
from reconcile.db import is_conflict
from reconcile.errors import Invalid
from reconcile.models import Purchase
from reconcile.outcomes import PurchaseSeen
from reconcile.state import Channel, Stamp
from reconcile.store_records import record_purchase
from reconcile.views import decode_cursor, encode_cursor, is_blocked, purchase_json

router = APIRouter(prefix="/v1/accounts", tags=["credits"])
admin_router = APIRouter(tags=["credits"])

class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DebitBody(Strict):
    amount: StrictInt = Field(ge=1, le=1_000_000_000)
    idempotency_key: str = Field(min_length=1, max_length=500)
    note: str | None = Field(default=None, max_length=2000)


class AdjustmentBody(Strict):
    amount: StrictInt = Field(ge=-1_000_000_000, le=1_000_000_000)
    note: str = Field(min_length=1, max_length=2000)


class PortalPurchaseBody(Strict):
    account_id: str = Field(min_length=1, max_length=128)
    product_id: str = Field(min_length=1, max_length=256)
    reference: str = Field(min_length=1, max_length=500)
    quantity: StrictInt = Field(default=1, ge=1, le=10_000)
    amount: str | None = Field(default=None, max_length=32, pattern=r"^\d+(\.\d+)?$")
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    purchased_at: AwareDatetime | None = None
    environment: Literal["production", "sandbox"] = "production"


def refused(error: service.CreditsRefused) -> JSONResponse:
    return JSONResponse({"detail": error.message, "balance": error.balance}, status_code=409)


@router.get("/{account_id}/credits")
def credits(account_id: str, session: SessionDep) -> dict[str, Any]:
    """The balance and its parts; an account with no entries has zeros."""
    return service.totals(session, account_id).json()


@router.get("/{account_id}/credits/entries")
def entries(
    account_id: str,
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The account's ledger, newest first."""
    before = None
    if cursor:
        try:
            before = int(decode_cursor(cursor))
        except ValueError as error:
            raise Invalid("malformed cursor", cursor=cursor) from error
    rows = service.entries(session, account_id, before=before, limit=limit + 1)
    page = rows[:limit]
    return {
        "items": [service.entry_json(row) for row in page],
        "next_cursor": encode_cursor(str(page[-1].id)) if len(rows) > limit else None,
    }


@router.post("/{account_id}/credits/debits", status_code=201, response_model=None)
def debit(account_id: str, body: DebitBody, session: SessionDep,
          now: NowDep) -> dict[str, Any] | JSONResponse:
    """Use credits: 201 and the entry; the same key again 200 and the same entry; 409 with the
    balance when it is too low or the account is blocked (nothing debited)."""
    try:
        entry, created = service.debit(session, account_id, body.amount, body.idempotency_key,
                                       body.note, now)
    except service.CreditsRefused as error:
        return refused(error)
    if not created:
        return JSONResponse(service.entry_json(entry), status_code=200)
    return service.entry_json(entry)


@admin_router.post("/v1/accounts/{account_id}/credits/adjustments", status_code=201)
def adjustment(account_id: str, body: AdjustmentBody, session: SessionDep,
               now: NowDep) -> dict[str, Any]:
    """An admin's signed correction with a required note; 404 for an account never seen."""
    known_account(session, account_id, now)
    actor, note = API_ACTOR, body.note
    entry = service.adjust(session, account_id, body.amount, note, actor, now)
    record(session, actor=actor, action="credits.adjust", target=account_id,
           note=f"{body.amount:+d} credits: {note}", now=now)
    return service.entry_json(entry)


@admin_router.post("/v1/portal/purchases", status_code=201, response_model=None)
def portal_purchase(body: PortalPurchaseBody, session: SessionDep, services: ServicesDep,
                    now: NowDep) -> dict[str, Any] | JSONResponse:
    """A one-time purchase made on the web portal; a credit pack grants its credits once.
    The same `reference` again answers 200 and changes nothing; with other details, 409."""
    existing = _portal_purchase(session, body.reference)
    if existing is not None:
        return _again(session, existing, body)
    purchased_at = (body.purchased_at or now).astimezone(UTC)
    seen = PurchaseSeen(
        channel=Channel.PORTAL, store_id=body.reference, environment=body.environment,
        product_id=body.product_id, kind="consumable",
        stamp=Stamp(purchased_at, body.reference), account_id=body.account_id,
        quantity=body.quantity, amount=body.amount, currency=body.currency,
        purchased_at=purchased_at,
    )
    try:
        with session.begin_nested():
            row = record_purchase(session, seen, now, services.catalog)
    except IntegrityError as error:
        # The same reference recorded by a concurrent request (a retry, another process)
        # that committed first: answered as the repeat it is.
        raced = _portal_purchase(session, body.reference) if is_conflict(error) else None
        if raced is None:
            raise
        return _again(session, raced, body)
    record(session, actor=API_ACTOR, action="portal.purchase", target=body.reference,
           note=f"{body.quantity} x {body.product_id} for {body.account_id}", now=now)
    return _answer(session, row)


def _portal_purchase(session: SessionDep, reference: str) -> Purchase | None:
    return session.scalars(
        select(Purchase).where(Purchase.channel == "portal", Purchase.store_id == reference)
    ).first()


def _again(session: SessionDep, existing: Purchase, body: PortalPurchaseBody) -> JSONResponse:
    """A reference already recorded: 200 with it when the details match, else 409."""
    same = (existing.account_id, existing.product_id, existing.quantity) == (
        body.account_id, body.product_id, body.quantity)
    if not same:
        return JSONResponse(
            {"detail": f"portal purchase {body.reference} was recorded with other details",
             "purchase": purchase_json(existing, is_blocked(session, existing.account_id))},
            status_code=409)
    return JSONResponse(_answer(session, existing), status_code=200)


def _answer(session: SessionDep, row: Purchase) -> dict[str, Any]:
    return {**purchase_json(row, is_blocked(session, row.account_id)),
            "credits_granted": grants.granted_for(session, row)}
