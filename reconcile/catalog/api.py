"""The business's questions about access: entitlements of an account, and the catalog itself."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select, union
from starlette.concurrency import run_in_threadpool

from reconcile.api.deps import ServicesDep, SessionDep
from reconcile.catalog.service import Grant, entitlements
from reconcile.models import Purchase, Subscription
from reconcile.services import Services

router = APIRouter(tags=["entitlements"])
admin_router = APIRouter(tags=["catalog"])

EnvironmentFilter = Annotated[Literal["production", "sandbox"] | None, Query()]


@router.get("/v1/accounts/{account_id}/entitlements")
async def account_entitlements(
    account_id: str, services: ServicesDep, environment: EnvironmentFilter = None
) -> JSONResponse:
    """Every entitlement the account holds or held; an account we never saw has none."""
    # The business's hot path: one thread hop for the read, and the answer handed over as it
    # is (FastAPI would otherwise walk it again to serialise it).
    grants = await run_in_threadpool(_read, services, account_id, environment)
    return JSONResponse({"account_id": account_id, "items": [grant.json() for grant in grants]})


def _read(services: Services, account_id: str, environment: str | None) -> list[Grant]:
    with (services.reader or services.engine).connect() as connection:
        return entitlements(connection, services.catalog, account_id, services.clock(),
                            environment=environment)


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
