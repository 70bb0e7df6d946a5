"""The console's front door: sign-in, cookies, expiry, sign-out, backoff, CSRF and roles."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx

from reconcile.config import Settings
from reconcile.console.users import remove_user
from reconcile.db import transaction
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN
from tests.support.console import PASSWORD, add_console_user, csrf_of, post_form, sign_in
from tests.support.policy import portal_subscription
from tests.support.server import FakeClock, RunningApp, serve_in_thread

ACCOUNT = "acct-console-1"
Clients = Callable[..., httpx.Client]


def test_pages_redirect_to_the_sign_in_page(app: RunningApp, client_for: Clients) -> None:
    """Without a session every console page answers a redirect to /console/login."""
    client = client_for(app)
    for path in ("/console", f"/console/accounts/{ACCOUNT}", "/console/search?q=x",
                 "/console/reconciliations", "/console/audit"):
        answer = client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/console/login?next=/console")
    page = client.get("/console/login")
    assert page.status_code == 200
    for label in ('<label for="username">Username</label>',
                  '<label for="password">Password</label>', ">Sign in</button>"):
        assert label in page.text


def test_sign_in_sets_a_safe_cookie_and_sign_out_ends_the_session(
    app: RunningApp, client_for: Clients
) -> None:
    """The session cookie is HttpOnly and SameSite=Lax; a forged sign-out is refused; after
    sign-out the cookie opens nothing, even when replayed."""
    add_console_user(app, "alice", "viewer")
    client = client_for(app)
    answer = sign_in(client, "alice")
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    for part in ("console_session=", "HttpOnly", "SameSite=lax"):
        assert part in cookie
    assert "Secure" not in cookie
    assert client.get("/console").status_code == 200
    stolen = client.cookies.get("console_session")
    assert client.post("/console/logout", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/console").status_code == 200
    token = csrf_of(client.get("/console").text)
    assert client.post("/console/logout", data={"csrf_token": token}).status_code == 303
    replay = client_for(app)
    replay.cookies.set("console_session", stolen or "")
    assert replay.get("/console").status_code == 303


def test_cookie_is_secure_under_https(app: RunningApp, client_for: Clients) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto: https) the cookies carry Secure."""
    add_console_user(app, "alice", "viewer")
    client = client_for(app)
    https = {"X-Forwarded-Proto": "https"}
    form = client.get("/console/login", headers=https)
    assert "Secure" in form.headers["set-cookie"]
    # The test talks plain HTTP to the proxy's side, so the Secure cookie is sent by hand.
    login_cookie = form.headers["set-cookie"].split(";")[0]
    answer = client.post("/console/login", headers={**https, "Cookie": login_cookie}, data={
        "username": "alice", "password": PASSWORD, "csrf_token": csrf_of(form.text)})
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


def test_wrong_password_and_unknown_user_are_refused_alike(
    app: RunningApp, client_for: Clients
) -> None:
    """A wrong password and an unknown name both answer 401 with the same words."""
    add_console_user(app, "alice", "viewer")
    wrong = sign_in(client_for(app), "alice", "not the password")
    unknown = sign_in(client_for(app), "mallory", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password." in wrong.text
    assert "Wrong username or password." in unknown.text


def test_an_unknown_name_is_checked_against_a_hash_made_at_first_use_not_at_import() -> None:
    """An unknown name still costs an argon2 verification (against a dummy hash), but the
    dummy is hashed at the first such sign-in: importing the app (every command, every
    `serve --workers` child) does not pay argon2's 64 MiB and its milliseconds."""
    script = ("import reconcile.app\n"
              "from reconcile.console import users\n"
              "assert users._dummy_hash.cache_info().currsize == 0, 'hashed at import'\n"
              "from sqlalchemy import create_engine\n"
              "from sqlalchemy.orm import Session\n"
              "from reconcile.console.models import ConsoleUser\n"
              "engine = create_engine('sqlite://')\n"
              "ConsoleUser.__table__.create(engine)\n"
              "with Session(engine) as session:\n"
              "    assert users.check_password(session, 'mallory', 'a password') is None\n"
              "assert users._dummy_hash.cache_info().currsize == 1, 'no verification'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_repeated_failures_are_slowed_down(app: RunningApp, clock: FakeClock,
                                         client_for: Clients) -> None:
    """After three failures even the right password waits out the backoff (429, Retry-After),
    which doubles with each further failure; once it has passed, the right password works."""
    add_console_user(app, "alice", "viewer")
    client = client_for(app)
    for _ in range(3):
        assert sign_in(client, "alice", "guess").status_code == 401
    refused = sign_in(client, "alice")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    clock.advance(seconds=1)
    assert sign_in(client, "alice", "guess").status_code == 401
    assert sign_in(client, "alice").headers["retry-after"] == "2"
    clock.advance(seconds=2)
    assert sign_in(client, "alice").status_code == 303


def test_sign_in_without_the_form_token_is_refused(app: RunningApp, client_for: Clients) -> None:
    """A sign-in posted from elsewhere (no token of the login form) answers 403."""
    add_console_user(app, "alice", "viewer")
    answer = client_for(app).post("/console/login", data={
        "username": "alice", "password": PASSWORD, "csrf_token": "forged"})
    assert answer.status_code == 403


def test_session_ends_after_the_configured_hours(
    make_settings: Callable[..., Settings], clock: FakeClock, client_for: Clients
) -> None:
    """With RECONCILE_CONSOLE_SESSION_HOURS=2 a session opens pages for two hours, then not."""
    services = build_services(make_settings(console_session_hours=2), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        client = client_for(running, "alice", "viewer")
        clock.advance(hours=1, minutes=59)
        assert client.get("/console").status_code == 200
        clock.advance(minutes=1)
        answer = client.get("/console")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/login")
    services.close()


def test_forged_and_unpermitted_posts_answer_403_and_change_nothing(
    app: RunningApp, client_for: Clients
) -> None:
    """A post without the session's CSRF token, or above the user's role, is 403 and leaves
    the account unblocked and the subscription renewing."""
    sub = portal_subscription(app, ACCOUNT)
    admin = client_for(app, "alice", "admin")
    forged = admin.post(f"/console/accounts/{ACCOUNT}/block",
                        data={"reason": "spam", "csrf_token": "not-the-token"})
    assert forged.status_code == 403
    missing = admin.post(f"/console/accounts/{ACCOUNT}/block", data={"reason": "spam"})
    assert missing.status_code == 403
    agent = client_for(app, "bob", "agent")
    assert post_form(agent, f"/console/accounts/{ACCOUNT}/block",
                     {"reason": "spam"}).status_code == 403
    viewer = client_for(app, "vic", "viewer")
    assert post_form(viewer, f"/console/subscriptions/{sub['id']}/cancel",
                     {"reason": "asked"}).status_code == 403
    anonymous = client_for(app).post(f"/console/accounts/{ACCOUNT}/block",
                                         data={"reason": "spam"})
    assert anonymous.status_code == 403
    account = app.client.get(f"/v1/accounts/{ACCOUNT}").json()
    assert account["blocked"] is None
    assert account["subscriptions"][0]["auto_renew"] is True
    assert app.client.get("/v1/audit").json()["items"][0]["action"] == "portal.create"


def test_a_removed_user_is_signed_out(app: RunningApp, client_for: Clients) -> None:
    """Removing a user ends their sessions at once."""
    client = client_for(app, "alice", "viewer")
    with transaction(app.services.sessions) as session:
        remove_user(session, "alice")
    assert client.get("/console").status_code == 303
