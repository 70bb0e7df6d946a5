"""Driving the support console over HTTP in tests: users, sign-in, the forms' CSRF tokens."""

from __future__ import annotations

import re

import httpx

from reconcile.console.users import add_user
from reconcile.db import transaction
from tests.support.server import RunningApp

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def add_console_user(app: RunningApp, name: str, role: str, password: str = PASSWORD) -> None:
    """A console user, as `reconcile console-user add` makes one."""
    with transaction(app.services.sessions) as session:
        add_user(session, name, role, password, app.services.clock())


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def sign_in(client: httpx.Client, name: str, password: str = PASSWORD,
            headers: dict[str, str] | None = None) -> httpx.Response:
    """Fill and post the sign-in form (redirects are not followed)."""
    form = client.get("/console/login", headers=headers)
    return client.post("/console/login", headers=headers, data={
        "username": name, "password": password, "csrf_token": csrf_of(form.text)})


def post_form(client: httpx.Client, path: str, data: dict[str, str],
              page: str = "/console") -> httpx.Response:
    """Post a console form with the CSRF token of the session (read from `page`)."""
    token = csrf_of(client.get(page).text)
    return client.post(path, data={**data, "csrf_token": token})
