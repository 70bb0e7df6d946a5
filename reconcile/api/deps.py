"""Request dependencies: the service parts, a unit-of-work session, the bearer-token checks."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from sqlalchemy.orm import Session

from reconcile.config import Settings
from reconcile.services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI would otherwise hop to a worker thread just to read an attribute.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with services.sessions() as session, session.begin():
        yield session


# scope="function": the commit happens before the answer is sent, so a client that saw 2xx
# sees the write in its next request (FastAPI's default runs this after the response).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_now(services: ServicesDep) -> datetime:
    return services.clock()


NowDep = Annotated[datetime, Depends(get_now)]


# Named in the OpenAPI document, so that Swagger UI (/docs) can send the token.
bearer = HTTPBearer(auto_error=False, scheme_name="admin token",
                    description="RECONCILE_ADMIN_TOKEN (or, for the endpoints marked app, "
                                "RECONCILE_APP_TOKEN), sent as `Authorization: Bearer <token>`")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _matches(given: bytes, configured: SecretStr | None) -> bool:
    """Constant time whatever the outcome: every configured token is compared."""
    if configured is None or not configured.get_secret_value():
        return False
    return hmac.compare_digest(given, configured.get_secret_value().encode())


def token_role(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> str | None:
    """"admin", "app" or None for the request's bearer token. Both comparisons always run,
    so the answer time does not tell which token a guess came close to."""
    given = credentials.credentials.strip().encode() if credentials is not None else b""
    admin = _matches(given, settings.admin_token)
    app = _matches(given, settings.app_token)
    if not given:
        return None
    return "admin" if admin else "app" if app else None


def _configured(token: SecretStr | None) -> bool:
    return token is not None and bool(token.get_secret_value())


# async: no I/O here, and a sync dependency would cost each request a thread hop.
async def require_admin(services: ServicesDep, credentials: BearerDep) -> None:
    """The admin token; the app token is known but not allowed here (403)."""
    settings = services.settings
    role = token_role(credentials, settings)
    if role == "app":
        raise HTTPException(403, "the app token may call only the app endpoints")
    if role == "admin":
        return
    if not _configured(settings.admin_token):
        raise HTTPException(401, "admin API disabled: RECONCILE_ADMIN_TOKEN is not set",
                            headers={"WWW-Authenticate": "Bearer"})
    raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})


async def require_app(services: ServicesDep, credentials: BearerDep) -> None:
    """The endpoints the business's backend calls: the app token or the admin token."""
    settings = services.settings
    if token_role(credentials, settings) is not None:
        return
    if not (_configured(settings.admin_token) or _configured(settings.app_token)):
        raise HTTPException(401, "API disabled: neither RECONCILE_APP_TOKEN nor "
                                 "RECONCILE_ADMIN_TOKEN is set",
                            headers={"WWW-Authenticate": "Bearer"})
    raise HTTPException(401, "app or admin token required",
                        headers={"WWW-Authenticate": "Bearer"})
