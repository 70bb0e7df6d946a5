"""Request dependencies: the service parts, a unit-of-work session, the bearer-token checks."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
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


def _presented(request: Request) -> bytes | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip().encode() if scheme.lower() == "bearer" and given.strip() else None


def _matches(given: bytes | None, configured: SecretStr | None) -> bool:
    """Constant time whatever the outcome: every configured token is compared."""
    if configured is None or not configured.get_secret_value():
        return False
    return hmac.compare_digest(given or b"", configured.get_secret_value().encode())


def token_role(request: Request, settings: Settings) -> str | None:
    """"admin", "app" or None for the request's bearer token. Both comparisons always run,
    so the answer time does not tell which token a guess came close to."""
    given = _presented(request)
    admin = _matches(given, settings.admin_token)
    app = _matches(given, settings.app_token)
    if given is None:
        return None
    return "admin" if admin else "app" if app else None


def _unauthorized() -> HTTPException:
    return HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})


async def require_admin(request: Request, services: ServicesDep) -> None:
    """The admin token; the app token is known but not allowed here (403)."""
    role = token_role(request, services.settings)
    if role == "app":
        raise HTTPException(403, "the app token may call only the app endpoints")
    if role != "admin":
        raise _unauthorized()


async def require_app(request: Request, services: ServicesDep) -> None:
    """The endpoints the business's backend calls: the app token or the admin token."""
    if token_role(request, services.settings) is None:
        raise _unauthorized()
