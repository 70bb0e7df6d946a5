"""GET /v1/accounts/{account_id}: an account's entitlement, subscriptions and purchases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from reconcile.api.deps import NowDep, SessionDep
from reconcile.errors import UnknownAccount
from reconcile.models import Account, Purchase, Subscription
from reconcile.views import is_blocked, iso, present, purchase_json

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])


@router.get("/{account_id}")
def account(account_id: str, session: SessionDep, now: NowDep) -> dict[str, Any]:
    subs = list(
        session.scalars(
            select(Subscription).where(Subscription.account_id == account_id)
            .order_by(Subscription.created_at, Subscription.id)
        )
    )
    purchases = list(
        session.scalars(
            select(Purchase).where(Purchase.account_id == account_id)
            .order_by(Purchase.created_at, Purchase.id)
        )
    )
    row = session.get(Account, account_id)
    if row is None and not subs and not purchases:
        raise UnknownAccount(account_id)
    blocked = is_blocked(session, account_id)
    items = present(session, subs, now)
    purchase_items = [purchase_json(p, blocked) for p in purchases]
    return {
        "account_id": account_id,
        "entitled": any(s["entitled"] for s in items),
        "blocked": None if row is None or row.blocked_at is None
        else {"at": iso(row.blocked_at), "reason": row.block_reason},
        "consumption_data_consent": bool(row and row.consumption_consent),
        "subscriptions": items,
        "purchases": purchase_items,
    }
