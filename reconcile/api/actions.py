"""POST /v1/subscriptions/{id}/cancel and /change-plan: back to the channel of purchase."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from reconcile import cancellation
from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.api.schemas import CancelBody, ChangePlanBody
from reconcile.views import present

router = APIRouter(prefix="/v1/subscriptions", tags=["policy"])


@router.post("/{subscription_id}/cancel")
def cancel(
    subscription_id: str, body: CancelBody, session: SessionDep, services: ServicesDep,
    now: NowDep,
) -> dict[str, Any]:
    """Stop renewal; access lasts until expires_at. A repeat answers the same, unchanged."""
    row = cancellation.load_for_update(session, subscription_id)
    try:
        cancellation.cancel(session, row, body.reason, body.note, now, services.cancellers)
    except cancellation.NotRenewing as error:
        error.identifiers["subscription"] = present(session, [row], now)[0]
        raise
    session.flush()
    return present(session, [row], now)[0]


@router.post("/{subscription_id}/change-plan")
def change_plan(
    subscription_id: str, body: ChangePlanBody, session: SessionDep, services: ServicesDep,
    now: NowDep,
) -> dict[str, Any]:
    """Make `product_id` what renews at the period end (the customer acts for Apple/Google)."""
    row = cancellation.load_for_update(session, subscription_id)
    try:
        cancellation.change_plan(session, row, body.product_id, now, services.cancellers)
    except cancellation.NotRenewing as error:
        error.identifiers["subscription"] = present(session, [row], now)[0]
        raise
    session.flush()
    return present(session, [row], now)[0]
