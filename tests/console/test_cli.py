"""`reconcile console-user`: users are made, listed, re-roled and removed from the shell."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import select

from reconcile.console.models import ConsoleUser
from reconcile.db import make_engine, make_sessionmaker


def console_user(
    database_url: str, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECONCILE_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "reconcile", "console-user", *args],
                          input=stdin, capture_output=True, text=True, env=env, timeout=120,
                          check=False)


def test_console_user_commands(database_url: str) -> None:
    """add reads the password from stdin and stores only its argon2 hash; a bad role or a short
    password is refused with a message; list, set-role and remove do what they say."""
    added = console_user(database_url, "add", "alice", "--role", "agent",
                         stdin="a long enough password\n")
    assert added.returncode == 0, added.stderr
    short = console_user(database_url, "add", "bob", "--role", "agent", stdin="short\n")
    assert short.returncode == 1
    assert "at least 10 characters" in short.stderr
    bad_role = console_user(database_url, "add", "bob", "--role", "boss",
                            stdin="a long enough password\n")
    assert bad_role.returncode == 1
    assert "unknown role 'boss'" in bad_role.stderr
    assert console_user(database_url, "set-role", "alice", "admin").returncode == 0
    listed = console_user(database_url, "list")
    assert "alice" in listed.stdout
    assert "admin" in listed.stdout
    assert "bob" not in listed.stdout
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        [user] = session.scalars(select(ConsoleUser)).all()
        assert user.password_hash.startswith("$argon2id$")
        assert "a long enough password" not in user.password_hash
    engine.dispose()
    assert console_user(database_url, "remove", "alice").returncode == 0
    missing = console_user(database_url, "remove", "alice")
    assert missing.returncode == 1
    assert "no console user alice" in missing.stderr
