"""POST /v1/subscriptions/{id}/cancel and /change-plan: back to the channel of purchase.

Each answers the Subscription, plus `request`: the cancellation or plan change this call
concerns, in full (who must act and where, Google's cancellation type, why it failed).
`GET /v1/subscriptions/{id}/requests` lists every one of them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from reconcile import cancellation
from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.api.responses import answers
from reconcile.api.schemas import CancelBody, ChangePlanBody
from reconcile.audit.service import API_ACTOR, record
from reconcile.errors import UnknownSubscription
from reconcile.models import OutboxEntry, Subscription
from reconcile.views import present, request_json

router = APIRouter(prefix="/v1/subscriptions", tags=["policy"])


@router.post("/{subscription_id}/cancel", responses=answers(404, 409))
def cancel(
    subscription_id: str, body: CancelBody, session: SessionDep, services: ServicesDep,
    now: NowDep,
) -> dict[str, Any]:
    """Stop renewal; access lasts until expires_at. A repeat answers the same, unchanged."""
    row = cancellation.load_for_update(session, subscription_id)
    try:
        entry = cancellation.cancel(session, row, body.reason, body.note, now,
                                    services.cancellers)
    except cancellation.NotRenewing as error:
        error.identifiers["subscription"] = present(session, [row], now)[0]
        raise
    record(session, actor=API_ACTOR, action="subscription.cancel", target=subscription_id,
           reason=body.reason, note=body.note, now=now)
    session.flush()
    return {**present(session, [row], now)[0], "request": request_json(entry)}


@router.post("/{subscription_id}/change-plan", responses=answers(404, 409))
def change_plan(
    subscription_id: str, body: ChangePlanBody, session: SessionDep, services: ServicesDep,
    now: NowDep,
) -> dict[str, Any]:
    """Make `product_id` what renews at the period end (the customer acts for Apple/Google)."""
    row = cancellation.load_for_update(session, subscription_id)
    try:
        entry = cancellation.change_plan(session, row, body.product_id, now,
                                         services.cancellers)
    except cancellation.NotRenewing as error:
        error.identifiers["subscription"] = present(session, [row], now)[0]
        raise
    record(session, actor=API_ACTOR, action="subscription.change_plan", target=subscription_id,
           note=f"product_id={body.product_id}", now=now)
    session.flush()
    return {**present(session, [row], now)[0],
            "request": None if entry is None else request_json(entry)}


@router.get("/{subscription_id}/requests", responses=answers(404))
def requests(subscription_id: str, session: SessionDep) -> dict[str, Any]:
    """Every cancellation and plan change asked for this subscription, oldest first."""
    if session.get(Subscription, subscription_id) is None:
        raise UnknownSubscription(subscription_id)
    rows = session.scalars(
        select(OutboxEntry)
        .where(OutboxEntry.subscription_id == subscription_id,
               OutboxEntry.kind.in_(("cancel", "change_plan")))
        .order_by(OutboxEntry.id)
    )
    return {"items": [request_json(row) for row in rows], "next_cursor": None}
