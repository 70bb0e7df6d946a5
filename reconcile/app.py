"""The FastAPI application: webhooks, admin API, health; the worker runs beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from reconcile.api import (
    account_actions,
    accounts,
    acknowledgements,
    actions,
    health,
    portal,
    reconciliations,
    refunds,
    subscriptions,
)
from reconcile.api.deps import require_admin, require_app
from reconcile.catalog import api as catalog_api
from reconcile.errors import DomainError
from reconcile.notify import api as notify_api
from reconcile.services import Services
from webhooks.routes import OPENAPI_PATHS, WebhookLane


def create_app(services: Services, *, run_worker: bool = True) -> FastAPI:
    """An app over `services`; with `run_worker` the background worker lives with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = services.worker() if run_worker else None
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(title="Store reconciliation", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    # POST /webhooks/apple and /webhooks/google, answered before FastAPI's routing.
    app.add_middleware(WebhookLane)
    admin = [Depends(require_admin)]
    # The endpoints marked "app" in the contract: the business's backend, or an admin.
    app_token = [Depends(require_app)]
    app.include_router(health.router)
    app.include_router(subscriptions.router, dependencies=admin)
    app.include_router(accounts.router, dependencies=app_token)
    app.include_router(catalog_api.router, dependencies=app_token)
    app.include_router(catalog_api.admin_router, dependencies=admin)
    app.include_router(refunds.router, dependencies=admin)
    app.include_router(refunds.requests_router, dependencies=admin)
    app.include_router(actions.router, dependencies=admin)
    app.include_router(account_actions.router, dependencies=admin)
    app.include_router(portal.router, dependencies=admin)
    app.include_router(reconciliations.router, dependencies=admin)
    app.include_router(acknowledgements.router, dependencies=admin)
    app.include_router(notify_api.feed_router, dependencies=app_token)
    app.include_router(notify_api.router, dependencies=admin)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema["paths"] = {**OPENAPI_PATHS, **schema["paths"]}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, error: DomainError) -> JSONResponse:
        return JSONResponse(
            {"error": error.code, "message": error.message, **error.identifiers},
            status_code=error.status_code,
        )

    return app
