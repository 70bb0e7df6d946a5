"""Request dependencies: the service parts, a unit-of-work session, the admin bearer check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
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


def require_admin(request: Request, services: ServicesDep) -> None:
    """Bearer token in constant time; with no token configured every request is refused."""
    configured = services.settings.admin_token
    if configured is None or not configured.get_secret_value():
        raise HTTPException(401, "admin API disabled: RECONCILE_ADMIN_TOKEN is not set",
                            headers={"WWW-Authenticate": "Bearer"})
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if (
        scheme.lower() != "bearer"
        or not hmac.compare_digest(given.strip().encode(), configured.get_secret_value().encode())
    ):
        raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})
