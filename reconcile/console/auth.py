"""Who is asking: the signed session cookie, the CSRF token of each form, the role checks.

A page without a live session redirects to the sign-in page; a form post without one, with a
wrong CSRF token, or above the user's role answers 403 before anything is read or changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.console.service import Signed, csrf_matches, signed_in, signing_key
from reconcile.console.users import Role, may

COOKIE = "console_session"
LOGIN_COOKIE = "console_login"


class SignInRequired(Exception):
    """No live session: pages redirect to the sign-in page."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Forbidden(Exception):
    """A forged, stale or unpermitted form post: 403, nothing changed."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def serializer(request: Request, salt: str) -> URLSafeSerializer:
    state = request.app.state
    key: str | None = getattr(state, "console_key", None)
    if key is None:
        # Read before the request's own session touches the database: on SQLite that session
        # holds this process's write lock from its first statement on.
        services = state.services
        key = signing_key(services.sessions, services.clock())
        state.console_key = key
    return URLSafeSerializer(key, salt=salt)


def session_id(request: Request) -> str | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        value = serializer(request, "console-session").loads(raw)
    except BadSignature:
        return None
    return value if isinstance(value, str) else None


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


def read_session(services: ServicesDep) -> Iterator[Session]:
    """The unit of work of a page: reads only, on the read engine, so that on SQLite a page
    reads a snapshot instead of queueing behind this process's writers for the write lock."""
    with Session(services.reader or services.engine, expire_on_commit=False) as session, \
            session.begin():
        yield session


ReadSessionDep = Annotated[Session, Depends(read_session, scope="function")]


def _signed(request: Request, session: Session, now: datetime) -> Signed | None:
    sid = session_id(request)
    return None if sid is None else signed_in(session, sid, now)


def reader(request: Request, session: ReadSessionDep, now: NowDep) -> Signed:
    """Any signed-in user (pages)."""
    signed = _signed(request, session, now)
    if signed is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(quote(target, safe="/?=&"))
    return signed


def reader_as(role: Role) -> Callable[..., Signed]:
    """A dependency for pages only `role` (or above) may see."""

    def check(request: Request, session: ReadSessionDep, now: NowDep) -> Signed:
        signed = reader(request, session, now)
        if not may(signed.user.role, role):
            raise Forbidden(f"This page needs the {role} role; you are {signed.user.role}.")
        return signed

    return check


async def posted(request: Request) -> FormData:
    return await request.form()


def actor(role: Role) -> Callable[..., Signed]:
    """A dependency for form posts: a live session, its CSRF token, and at least `role`."""

    def check(request: Request, session: SessionDep, now: NowDep,
              form: Annotated[FormData, Depends(posted)]) -> Signed:
        signed = _signed(request, session, now)
        if signed is None:
            raise Forbidden("You are not signed in (or your session has ended).")
        token = form.get("csrf_token")
        if not csrf_matches(signed, token if isinstance(token, str) else None):
            raise Forbidden("This form is out of date or did not come from the console. "
                            "Reload the page and try again.")
        if not may(signed.user.role, role):
            raise Forbidden(f"This needs the {role} role; you are {signed.user.role}.")
        return signed

    return check


ReaderDep = Annotated[Signed, Depends(reader)]
AgentDep = Annotated[Signed, Depends(actor("agent"))]
AdminDep = Annotated[Signed, Depends(actor("admin"))]
AdminReaderDep = Annotated[Signed, Depends(reader_as("admin"))]
