"""Console users and roles: made, listed, re-roled and removed from the command line.

Passwords are kept only as argon2 hashes. Functions take the caller's session and never commit.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from reconcile.console.models import ConsoleSession, ConsoleUser
from reconcile.errors import Conflict, Invalid, NotFound

Role = Literal["viewer", "agent", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "agent", "admin")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown, so an unknown name costs as long as a wrong
    password. Made at the first such sign-in, not at import: an argon2 hash takes its memory
    cost (64 MiB) and tens of milliseconds, which every command that imports the app (and
    every `serve --workers` child) would otherwise pay, as its peak memory, at start."""
    return _hasher.hash("not a password of anyone")


class UnknownUser(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no console user {name}", name=name)


@dataclass(frozen=True)
class UserView:
    name: str
    role: Role
    created_at: datetime


def may(role: str, needed: Role) -> bool:
    """Whether `role` includes what `needed` may do (viewer < agent < admin)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def add_user(session: Session, name: str, role: str, password: str, now: datetime) -> UserView:
    _check_name(name)
    checked = _check_role(role)
    _check_password(password)
    if session.get(ConsoleUser, name) is not None:
        raise Conflict(f"console user {name} exists already", name=name)
    session.add(ConsoleUser(name=name, role=checked, password_hash=_hasher.hash(password),
                            created_at=now, updated_at=now))
    return UserView(name, checked, now)


def set_role(session: Session, name: str, role: str, now: datetime) -> UserView:
    checked = _check_role(role)
    user = _get(session, name)
    user.role = checked
    user.updated_at = now
    return UserView(user.name, checked, user.created_at)


def set_password(session: Session, name: str, password: str, now: datetime) -> None:
    """A new password; every session of the user ends."""
    _check_password(password)
    user = _get(session, name)
    user.password_hash = _hasher.hash(password)
    user.updated_at = now
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_name == name))


def remove_user(session: Session, name: str) -> None:
    """The user and every session of theirs go; their audit records stay."""
    session.delete(_get(session, name))
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_name == name))


def list_users(session: Session) -> list[UserView]:
    return [UserView(u.name, u.role, u.created_at)  # type: ignore[arg-type]
            for u in session.scalars(select(ConsoleUser).order_by(ConsoleUser.name))]


def check_password(session: Session, name: str, password: str) -> ConsoleUser | None:
    """The user when the password is theirs, else None (in about the same time either way)."""
    user = session.get(ConsoleUser, name)
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def _get(session: Session, name: str) -> ConsoleUser:
    user = session.get(ConsoleUser, name)
    if user is None:
        raise UnknownUser(name)
    return user


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise Invalid("a user name is 1-64 letters, digits or . _ @ - (starting with a letter "
                      "or digit)", name=name)


def _check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise Invalid(f"unknown role {role!r}: one of {', '.join(ROLES)}", role=role)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"a password has at least {MIN_PASSWORD} characters")
