"""The business's questions about access: entitlements of an account, and the catalog itself."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select, union

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.catalog.service import entitlements
from reconcile.models import Purchase, Subscription

router = APIRouter(tags=["entitlements"])
admin_router = APIRouter(tags=["catalog"])

EnvironmentFilter = Annotated[Literal["production", "sandbox"] | None, Query()]


@router.get("/v1/accounts/{account_id}/entitlements")
def account_entitlements(
    account_id: str,
    session: SessionDep,
    services: ServicesDep,
    now: NowDep,
    environment: EnvironmentFilter = None,
) -> dict[str, Any]:
    """Every entitlement the account holds or held; an account we never saw has none."""
    grants = entitlements(session, services.catalog, account_id, now, environment=environment)
    return {"account_id": account_id, "items": [grant.json() for grant in grants]}


@admin_router.get("/v1/catalog")
def catalog(session: SessionDep, services: ServicesDep) -> dict[str, Any]:
    """The loaded catalog, and the stored products it does not name (they grant nothing)."""
    known = services.catalog
    stored: list[str | None] = list(session.scalars(
        union(select(Subscription.product_id), select(Purchase.product_id))
    ))
    return {
        "entitlements": [
            {"entitlement": name, "description": description}
            for name, description in sorted(known.entitlements.items())
        ],
        "products": [
            {"id": p.id, "entitlements": list(p.entitlements), "credits": p.credits,
             "description": p.description}
            for p in known.products.values()
        ],
        "unknown_products": sorted(p for p in stored if p and not known.knows(p)),
    }
