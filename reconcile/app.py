"""The FastAPI application: webhooks, admin API, health; the worker runs beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp

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
from reconcile.api.input_checks import storable_input, unstorable, validation_error
from reconcile.api.responses import document_admin_refusals
from reconcile.audit import api as audit_api
from reconcile.catalog import api as catalog_api
from reconcile.catalog.lane import EntitlementLane
from reconcile.console import api as console
from reconcile.credits import api as credits_api
from reconcile.errors import DomainError
from reconcile.notify import api as notify_api
from reconcile.outage import is_unavailable
from reconcile.purchases import api as purchases_api
from reconcile.services import Services
from webhooks.routes import OPENAPI_PATHS, WebhookLane

# What a 503 for an unreachable database tells clients to wait before trying again.
RETRY_AFTER_SECONDS = 5


class _ServiceApp(FastAPI):
    """FastAPI with the two hot lanes in front of its whole middleware stack: POST
    /webhooks/apple and /webhooks/google, and GET /v1/accounts/{id}/entitlements with an
    allowed token, are answered before FastAPI's error, telemetry and body-limit wrappers and
    its routing (each lane catches what it expects and passes everything else on). An error
    a lane does not expect is answered 500 by the server, as those wrappers would have."""

    def build_middleware_stack(self) -> ASGIApp:
        return EntitlementLane(WebhookLane(super().build_middleware_stack()))


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

    app = _ServiceApp(title="Store reconciliation", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    admin = [Depends(require_admin), Depends(storable_input)]
    # The endpoints marked "app" in the contract: the business's backend, or an admin.
    app_token = [Depends(require_app), Depends(storable_input)]
    app.include_router(health.router)
    app.include_router(subscriptions.router, dependencies=admin)
    app.include_router(accounts.router, dependencies=app_token)
    app.include_router(catalog_api.router, dependencies=app_token)
    app.include_router(catalog_api.admin_router, dependencies=admin)
    app.include_router(purchases_api.router, dependencies=app_token)
    app.include_router(refunds.router, dependencies=admin)
    app.include_router(refunds.requests_router, dependencies=admin)
    app.include_router(actions.router, dependencies=admin)
    app.include_router(account_actions.router, dependencies=admin)
    app.include_router(portal.router, dependencies=admin)
    app.include_router(reconciliations.router, dependencies=admin)
    app.include_router(acknowledgements.router, dependencies=admin)
    app.include_router(credits_api.router, dependencies=app_token)
    app.include_router(credits_api.admin_router, dependencies=admin)
    app.include_router(audit_api.router, dependencies=admin)
    console.install(app)
    app.include_router(notify_api.feed_router, dependencies=app_token)
    app.include_router(notify_api.router, dependencies=admin)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema["paths"] = {**OPENAPI_PATHS, **schema["paths"]}
            document_admin_refusals(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(DataError, unstorable)
    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def database_error(_request: Request, error: Exception) -> JSONResponse:
        # Every route that reads or writes: the database being away is a 503 to retry, not a
        # 500 with a traceback; anything else from the driver is still a bug (500).
        if not is_unavailable(error):
            raise error
        services.database.failed(error)
        return JSONResponse({"detail": "database unavailable"}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, error: DomainError) -> JSONResponse:
        return JSONResponse(
            {"error": error.code, "message": error.message, **error.identifiers},
            status_code=error.status_code,
        )

    return app
