"""Request dependencies: the service parts, a unit-of-work session, the admin bearer check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

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
                    description="RECONCILE_ADMIN_TOKEN, sent as `Authorization: Bearer <token>`")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_admin(services: ServicesDep, credentials: BearerDep) -> None:
    """Bearer token in constant time; with no token configured every request is refused."""
    configured = services.settings.admin_token
    if configured is None or not configured.get_secret_value():
        raise HTTPException(401, "admin API disabled: RECONCILE_ADMIN_TOKEN is not set",
                            headers={"WWW-Authenticate": "Bearer"})
    given = credentials.credentials.strip() if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), configured.get_secret_value().encode()):
        raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})
