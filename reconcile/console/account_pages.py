"""Search, the account page, a subscription page, notifications, and the actions on them."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.console import actions
from reconcile.console.account_view import (
    refund_requests_of,
    refunds_of,
    timeline,
    waiting_plan_changes,
)
from reconcile.console.auth import Forbidden, ReaderDep, ReadSessionDep, actor
from reconcile.console.payloads import decode_payload
from reconcile.console.render import page
from reconcile.console.search import search
from reconcile.console.service import Signed
from reconcile.console.users import may
from reconcile.credits.service import entries as credit_entries
from reconcile.credits.service import entry_json
from reconcile.errors import DomainError
from reconcile.models import InboxEntry, Subscription
from reconcile.views import account_document, present

router = APIRouter(prefix="/console", include_in_schema=False)
ViewerPost = Annotated[Signed, Depends(actor("viewer"))]


@router.get("/search")
def search_page(request: Request, signed: ReaderDep, session: ReadSessionDep, now: NowDep,
                q: str = "") -> Response:
    """One exact match opens it; several are listed; none says so plainly."""
    hits = search(session, q) if q.strip() else []
    if len(hits) == 1:
        hit = hits[0]
        if hit.account_id:
            anchor = f"#{hit.subscription_id}" if hit.subscription_id else ""
            return RedirectResponse(f"/console/accounts/{quote(hit.account_id, safe='')}"
                                    f"{anchor}", status_code=303)
        if hit.subscription_id:
            return RedirectResponse(f"/console/subscriptions/{hit.subscription_id}",
                                    status_code=303)
    ids = [h.subscription_id for h in hits if h.subscription_id]
    rows = (list(session.scalars(select(Subscription).where(Subscription.id.in_(ids))))
            if ids else [])
    subs = {s["id"]: s for s in present(session, rows, now)} if rows else {}
    return page(request, "search.html", {"signed": signed, "q": q.strip(), "hits": hits,
                                         "subs": subs, "section": "search"})


@router.get("/accounts/{account_id}")
def account_page(request: Request, account_id: str, signed: ReaderDep, session: ReadSessionDep,
                 services: ServicesDep, now: NowDep, done: str | None = None) -> Response:
    document = account_document(session, account_id, now, services.catalog)
    if document is None:
        return page(request, "message.html", {
            "signed": signed, "heading": "Nothing found", "error": True,
            "message": f"The service knows nothing of an account {account_id}."},
            status_code=404)
    return page(request, "account.html", {
        "signed": signed, **_account_context(session, document, account_id),
        "catalog_missing": not services.catalog.products,
        "notice": actions.DONE.get(done or ""), "section": "account"})


@router.get("/subscriptions/{subscription_id}")
def subscription_page(request: Request, subscription_id: str, signed: ReaderDep,
                      session: ReadSessionDep, now: NowDep, done: str | None = None) -> Response:
    """A subscription linked to no account (its store never named one): shown on its own."""
    row = session.get(Subscription, subscription_id)
    if row is None:
        return page(request, "message.html", {
            "signed": signed, "heading": "Nothing found", "error": True,
            "message": f"There is no subscription {subscription_id}."}, status_code=404)
    if row.account_id:
        suffix = f"?done={quote(done)}" if done else ""
        return RedirectResponse(f"/console/accounts/{quote(row.account_id, safe='')}{suffix}"
                                f"#{row.id}", status_code=303)
    document = {"account_id": None, "entitled": False, "blocked": None,
                "consumption_data_consent": False, "subscriptions": present(session, [row], now),
                "purchases": []}
    return page(request, "account.html", {
        "signed": signed, **_account_context(session, document, None),
        "notice": actions.DONE.get(done or ""), "section": "account"})


def _account_context(session: Session, document: dict[str, Any],
                     account_id: str | None) -> dict[str, Any]:
    subs = document["subscriptions"]
    ids = [s["id"] for s in subs]
    refunds = refunds_of(session, account_id, ids) if account_id else []
    ledger = credit_entries(session, account_id, before=None, limit=50) if account_id else []
    return {
        "doc": document,
        "ledger": [entry_json(entry) for entry in ledger],
        "account_id": account_id,
        "refunds": refunds,
        "refund_requests": refund_requests_of(session, account_id) if account_id else [],
        "timeline": timeline(session, account_id or "", ids, refunds,
                             {s["id"]: s["product_id"] for s in subs}),
        "actions": actions.ACTIONS,
        "plan_changes": waiting_plan_changes(session, ids),
    }


@router.get("/notifications/{inbox_id}")
def notification(request: Request, inbox_id: int, signed: ReaderDep,
                 session: ReadSessionDep) -> Response:
    """A recorded store notification, decoded (its signatures were checked at intake)."""
    entry = session.get(InboxEntry, inbox_id)
    if entry is None:
        return page(request, "message.html", {"signed": signed, "heading": "Nothing found",
                                              "message": f"No notification #{inbox_id}."},
                    status_code=404)
    decoded = json.dumps(decode_payload(entry.channel, entry.payload), indent=2, sort_keys=True)
    template = "payload.html" if request.headers.get("hx-request") else "notification.html"
    return page(request, template, {"signed": signed, "entry": entry, "decoded": decoded})


@router.get("/subscriptions/{subscription_id}/confirm/{action}")
@router.get("/accounts/{account_id}/confirm/{action}")
def confirm(request: Request, action: str, signed: ReaderDep, session: ReadSessionDep,
            now: NowDep, subscription_id: str | None = None,
            account_id: str | None = None) -> Response:
    """The confirmation: the consequence in the policy's words, a Reason, and Confirm."""
    return _confirm_page(request, signed, session, now, action, subscription_id, account_id)


def _confirm_page(
    request: Request, signed: Signed, session: Session, now: NowDep, action: str,
    subscription_id: str | None, account_id: str | None, error: str | None = None,
    values: dict[str, str] | None = None, status_code: int = 200,
) -> Response:
    spec = actions.ACTIONS.get(action)
    scope = "subscription" if subscription_id else "account"
    if spec is None or spec.scope != scope:
        return page(request, "message.html", {"signed": signed, "heading": "Nothing found",
                                              "message": f"No action {action} here."},
                    status_code=404)
    subscription = document = None
    if subscription_id:
        row = session.get(Subscription, subscription_id)
        if row is None:
            return page(request, "message.html", {
                "signed": signed, "heading": "Nothing found",
                "message": f"There is no subscription {subscription_id}."}, status_code=404)
        subscription = present(session, [row], now)[0]
        account_id = row.account_id
        post_to = f"/console/subscriptions/{subscription_id}/{action}"
    else:
        post_to = f"/console/accounts/{quote(account_id or '', safe='')}/{action}"
    if account_id:
        document = account_document(session, account_id, now)
    back = (f"/console/accounts/{quote(account_id, safe='')}" if account_id
            else f"/console/subscriptions/{subscription_id}")
    products: list[str] = []
    if action == "change-plan" and subscription is not None:
        products = sorted(p for p in session.scalars(
            select(Subscription.product_id).where(Subscription.channel == subscription["channel"])
            .distinct().limit(50)) if p)
    template = "confirm_form.html" if request.headers.get("hx-request") else "confirm.html"
    return page(request, template, {
        "signed": signed, "spec": spec, "subscription": subscription, "doc": document,
        "account_id": account_id, "post_to": post_to, "back": back, "error": error,
        "values": values or {}, "products": products, "allowed": may(signed.user.role, spec.role),
        "lines": actions.consequence(action, subscription, document),
    }, status_code=status_code)


@router.post("/subscriptions/{subscription_id}/{action}")
def subscription_action(
    request: Request, subscription_id: str, action: str, signed: ViewerPost, session: SessionDep,
    services: ServicesDep, now: NowDep, reason: Annotated[str, Form()] = "",
    requested_by: Annotated[str, Form()] = "customer",
    product_id: Annotated[str, Form()] = "",
) -> Response:
    spec = _permitted(signed, action, "subscription")
    row = session.get(Subscription, subscription_id, with_for_update=True)
    if row is None:
        return page(request, "message.html", {
            "signed": signed, "heading": "Nothing found",
            "message": f"There is no subscription {subscription_id}."}, status_code=404)
    try:
        why = actions.clean_reason(reason)
        with session.begin_nested():
            if spec.name == "cancel":
                actions.cancel_subscription(session, row, actor=signed.user.name, reason=why,
                                            requested_by=requested_by, now=now,
                                            cancellers=services.cancellers)
            else:
                actions.change_plan(session, row, actor=signed.user.name, reason=why,
                                    product_id=product_id, now=now,
                                    cancellers=services.cancellers)
    except DomainError as error:
        return _confirm_page(request, signed, session, now, action, subscription_id, None,
                             error=error.message, status_code=error.status_code,
                             values={"reason": reason, "product_id": product_id})
    return RedirectResponse(f"/console/subscriptions/{subscription_id}?done={action}",
                            status_code=303)


@router.post("/accounts/{account_id}/{action}")
def account_action(
    request: Request, account_id: str, action: str, signed: ViewerPost, session: SessionDep,
    services: ServicesDep, now: NowDep, reason: Annotated[str, Form()] = "",
    consent: Annotated[str, Form()] = "",
    amount: Annotated[str, Form()] = "",
) -> Response:
    spec = _permitted(signed, action, "account")
    try:
        why = actions.clean_reason(reason)
        with session.begin_nested():
            actions.account_action(session, spec.name, account_id, actor=signed.user.name,
                                   reason=why, consented=consent == "yes", now=now,
                                   cancellers=services.cancellers, amount=amount)
    except DomainError as error:
        return _confirm_page(request, signed, session, now, action, None, account_id,
                             error=error.message, status_code=error.status_code,
                             values={"reason": reason, "amount": amount})
    return RedirectResponse(f"/console/accounts/{quote(account_id, safe='')}?done={action}",
                            status_code=303)


def _permitted(signed: Signed, action: str, scope: str) -> actions.Action:
    spec = actions.ACTIONS.get(action)
    if spec is None or spec.scope != scope:
        raise Forbidden(f"There is no action {action!r} here.")
    if not may(signed.user.role, spec.role):
        raise Forbidden(f"{spec.button} needs the {spec.role} role; you are "
                        f"{signed.user.role}.")
    return spec
