"""ASGI middleware: GET /v1/accounts/{id}/entitlements answered before FastAPI's routing.

The business may ask on every request its app makes, and FastAPI's routing and dependency
solving cost several times the read itself. Only the plain case is answered here: an allowed
token, an account id and an `environment` filter that the route would accept as they are.
Everything else (no or a wrong token, odd input, a failed read) goes on to the route, which
answers it as it always has, so the two can never answer differently.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import ASGIApp, Receive, Scope, Send

from reconcile.api.deps import token_role
from webhooks.body import check_text

if TYPE_CHECKING:
    from reconcile.services import Services

PREFIX = "/v1/accounts/"
SUFFIX = "/entitlements"
FILTERS = {b"": None, b"environment=production": "production",
           b"environment=sandbox": "sandbox"}


class EntitlementLane:
    """Answers the plain entitlement reads; passes every other request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        account_id = _plain_read(scope)
        services: Services | None = scope["app"].state.services if account_id else None
        if account_id is None or services is None or not _allowed(scope, services):
            await self.app(scope, receive, send)
            return
        environment = FILTERS[scope["query_string"]]
        try:
            grants = await services.entitlement_reads.read(account_id, environment)
        except Exception:
            # The route reads again and answers a database outage (503) the usual way.
            await self.app(scope, receive, send)
            return
        body = json.dumps({"account_id": account_id, "items": [g.json() for g in grants]},
                          ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        payload = body.encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(payload)).encode()),
            (b"content-type", b"application/json"),
        ]})
        await send({"type": "http.response.body", "body": payload})


def _plain_read(scope: Scope) -> str | None:
    """The account id of a GET the route would accept as it is, else None."""
    if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    account_id = path[len(PREFIX):-len(SUFFIX)]
    if not account_id or "/" in account_id or scope["query_string"] not in FILTERS:
        return None
    try:
        check_text(account_id)
    except ValueError:
        return None
    return account_id


def _allowed(scope: Scope, services: Services) -> bool:
    """The bearer token is the app or the admin token (`require_app`'s own test)."""
    authorization = next((value for name, value in scope["headers"]
                          if name == b"authorization"), None)
    if authorization is None:
        return False
    scheme, credentials = get_authorization_scheme_param(authorization.decode("latin-1"))
    if scheme.lower() != "bearer" or not credentials:
        return False
    given = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)
    return token_role(given, services.settings) is not None
