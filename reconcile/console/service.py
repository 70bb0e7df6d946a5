"""Signing in and out: server-side sessions, CSRF tokens, and the backoff after failed sign-ins.

Time is an input: every function takes `now`, and a refused sign-in says when to try again
instead of sleeping. Functions take the caller's session and never commit, except
`signing_key`, which makes the database's key once in a transaction of its own.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, delete, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from reconcile.console.models import ConsoleSecret, ConsoleSession, ConsoleUser, SignInFailures
from reconcile.console.users import check_password
from reconcile.db import transaction

FREE_FAILURES = 3
MAX_WAIT = timedelta(minutes=15)
FORGET_FAILURES = timedelta(hours=24)
KEY_NAME = "cookie_signing_key"


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: a session, a refusal, or a wait."""

    session: ConsoleSession | None = None
    retry_after: int | None = None  # seconds to wait before trying again


@dataclass(frozen=True)
class Signed:
    """A live session and its user."""

    session: ConsoleSession
    user: ConsoleUser


def signing_key(sessions: sessionmaker[Session], now: datetime) -> str:
    """The database's cookie signing key, made on first use (two processes racing agree)."""
    for _attempt in range(3):
        with sessions() as session:
            found = session.get(ConsoleSecret, KEY_NAME)
            if found is not None:
                return found.value
        try:
            with transaction(sessions) as session:
                session.add(ConsoleSecret(name=KEY_NAME, value=secrets.token_urlsafe(48),
                                          created_at=now))
        except IntegrityError:
            continue
    raise RuntimeError("could not read or make the console signing key")


def sign_in(
    session: Session, name: str, password: str, client: str, now: datetime, hours: float
) -> SignIn:
    """A new session when the password matches and neither the name nor the client address
    is waiting out its backoff; each failure lengthens the wait for both."""
    keys = [f"user:{name.lower()}"[:200], f"ip:{client}"[:200]]
    wait = max((_wait(session, key, now) for key in keys), default=0)
    if wait > 0:
        return SignIn(retry_after=wait)
    user = check_password(session, name, password)
    if user is None:
        for key in keys:
            _fail(session, key, now)
        return SignIn()
    session.execute(delete(SignInFailures).where(SignInFailures.key.in_(keys)))
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
    row = ConsoleSession(id=secrets.token_urlsafe(32), user_name=user.name,
                         csrf_token=secrets.token_urlsafe(32), created_at=now,
                         expires_at=now + timedelta(hours=hours))
    session.add(row)
    return SignIn(session=row)


def signed_in(session: Session, session_id: str, now: datetime) -> Signed | None:
    """The session and its user, while the session lasts and the user exists."""
    row = session.get(ConsoleSession, session_id)
    if row is None or row.expires_at <= now:
        return None
    user = session.get(ConsoleUser, row.user_name)
    return None if user is None else Signed(row, user)


def sign_out(session: Session, session_id: str) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.id == session_id))


def csrf_matches(signed: Signed, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(),
                                                     signed.session.csrf_token.encode())


def _wait(session: Session, key: str, now: datetime) -> int:
    row = session.get(SignInFailures, key)
    if row is None or row.blocked_until is None or row.blocked_until <= now:
        return 0
    return max(1, int((row.blocked_until - now).total_seconds() + 0.999))


# Text, compiled once; SQLite and PostgreSQL both read it. Two first failures at once (two
# processes, or two threads) both count: the second waits for the first's row and locks it.
_NEW_FAILURES = text(
    "INSERT INTO console_sign_in_failures (key, failures, last_failed_at)"
    " VALUES (:key, 0, :now) ON CONFLICT (key) DO NOTHING"
).bindparams(bindparam("now", type_=cast(Table, SignInFailures.__table__).c.last_failed_at.type))


def _fail(session: Session, key: str, now: datetime) -> None:
    session.execute(_NEW_FAILURES, {"key": key, "now": now})
    row = session.get(SignInFailures, key, with_for_update=True)
    assert row is not None, key
    if now - row.last_failed_at > FORGET_FAILURES:
        row.failures = 0
    row.failures += 1
    row.last_failed_at = now
    if row.failures >= FREE_FAILURES:
        wait = min(timedelta(seconds=2 ** (row.failures - FREE_FAILURES)), MAX_WAIT)
        row.blocked_until = now + wait
