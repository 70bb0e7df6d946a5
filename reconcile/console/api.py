"""The console's front door: sign-in, sign-out, the overview, the audit log; and `install`,
which mounts every console page, the static files and the error pages on the app."""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from itsdangerous import BadSignature

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.audit.service import page as audit_page
from reconcile.console import account_pages, reconcile_pages
from reconcile.console.auth import (
    COOKIE,
    LOGIN_COOKIE,
    AdminReaderDep,
    Forbidden,
    ReaderDep,
    ReadSessionDep,
    SignInRequired,
    secure,
    serializer,
    session_id,
)
from reconcile.console.charts import Bar, bar_chart
from reconcile.console.overview import CHANNELS, STATUSES, overview
from reconcile.console.render import STATIC, compile_templates, page
from reconcile.console.service import csrf_matches, sign_in, sign_out, signed_in

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("")
def home(request: Request, signed: ReaderDep, session: ReadSessionDep, now: NowDep) -> Response:
    figures = overview(session, now)
    hourly = bar_chart("hourly", "Notifications received per hour, last 48 hours", [
        Bar(f"{h:%H}h" if h.hour % 6 == 0 else "", n, f"{h:%Y-%m-%d %H}:00 UTC: {n}")
        for h, n in figures.per_hour])
    weekly = bar_chart("weekly", "Refunds the stores made per week, last 12 weeks", [
        Bar(f"{w:%d %b}" if i % 2 == 0 else "", n, f"week of {w:%Y-%m-%d}: {n}")
        for i, (w, n) in enumerate(figures.refunds_per_week)], colour="#8a2432")
    return page(request, "overview.html", {"signed": signed, "o": figures, "hourly": hourly,
                                           "weekly": weekly, "section": "overview",
                                           "CHANNELS": CHANNELS, "STATUSES": STATUSES})


@router.get("/login")
def login_form(request: Request, next: str = "/console") -> Response:
    return _login_page(request, next)


def _login_page(request: Request, next_path: str, error: str | None = None,
                username: str = "", status_code: int = 200,
                headers: dict[str, str] | None = None) -> Response:
    """The form, with a fresh double-submit token in a cookie (no session exists yet)."""
    token = secrets.token_urlsafe(24)
    response = page(request, "login.html", {
        "login_token": token, "next": _safe_next(next_path), "error": error,
        "username": username}, status_code=status_code, headers=headers)
    response.set_cookie(LOGIN_COOKIE, serializer(request, "console-login").dumps(token),
                        httponly=True, samesite="lax", secure=secure(request),
                        path="/console/login", max_age=3600)
    return response


@router.post("/login")
def login(
    request: Request, session: SessionDep, services: ServicesDep, now: NowDep,
    username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/console",
) -> Response:
    """A session cookie on success; a wrong password or a backoff says so and changes nothing
    but the failure count."""
    if not _login_token_matches(request, csrf_token):
        raise Forbidden("The sign-in form is out of date. Reload the page and try again.")
    client = request.client.host if request.client else "unknown"
    result = sign_in(session, username.strip(), password, client, now,
                     services.settings.console_session_hours)
    if result.retry_after is not None:
        log.warning("console sign-in refused during backoff: user=%r client=%s",
                    username[:64], client)
        return _login_page(request, next, f"Too many failed sign-ins. Try again in "
                           f"{result.retry_after} seconds.", username, status_code=429,
                           headers={"Retry-After": str(result.retry_after)})
    if result.session is None:
        log.warning("console sign-in failed: user=%r client=%s", username[:64], client)
        return _login_page(request, next, "Wrong username or password.", username,
                           status_code=401)
    log.info("console sign-in: user=%r client=%s", result.session.user_name, client)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, serializer(request, "console-session").dumps(result.session.id),
                        httponly=True, samesite="lax", secure=secure(request), path="/console")
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, now: NowDep,
           csrf_token: Annotated[str, Form()] = "") -> Response:
    """Ends the session on the server too; a live session needs its form's CSRF token (one
    that has expired is simply forgotten)."""
    sid = session_id(request)
    live = signed_in(session, sid, now) if sid is not None else None
    if live is not None:
        if not csrf_matches(live, csrf_token):
            raise Forbidden("This form is out of date. Reload the page and try again.")
        sign_out(session, live.session.id)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/audit")
def audit(request: Request, signed: AdminReaderDep, session: ReadSessionDep,
          cursor: str | None = None) -> Response:
    try:
        rows, next_cursor = audit_page(session, cursor, 100)
    except ValueError:
        rows, next_cursor = audit_page(session, None, 100)
    return page(request, "audit.html", {"signed": signed, "rows": rows,
                                        "next_cursor": next_cursor, "section": "audit"})


def _login_token_matches(request: Request, given: str) -> bool:
    raw = request.cookies.get(LOGIN_COOKIE)
    if not raw or not given:
        return False
    try:
        expected = serializer(request, "console-login").loads(raw)
    except BadSignature:
        return False
    return isinstance(expected, str) and hmac.compare_digest(expected.encode(), given.encode())


def _safe_next(path: str) -> str:
    """Only a console path: never an open redirect to another site."""
    if path.startswith("/console") and not path.startswith("//") and "\\" not in path:
        return path
    return "/console"


def install(app: FastAPI) -> None:
    """Mount the console on `app`."""
    compile_templates()
    app.include_router(router)
    app.include_router(account_pages.router)
    app.include_router(reconcile_pages.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, error: SignInRequired) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse(f"/console/login?next={error.path}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, error: Forbidden) -> Response:
        return page(request, "message.html", {"heading": "Not allowed", "message": error.why,
                                              "error": True}, status_code=403)
