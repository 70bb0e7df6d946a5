"""`reconcile console-user add|list|remove|set-role|set-password`: the console's users.

Passwords are read from standard input (one line), never from the command line, where other
users of the machine could read them in the process list."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from reconcile.config import Settings
from reconcile.console import users
from reconcile.db import make_engine, make_sessionmaker, migrate, transaction
from reconcile.errors import DomainError
from reconcile.worker import utcnow

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Support console users: viewer reads; agent also cancels and changes "
                       "plans; admin also blocks, ports out and runs reconciliations.")
RoleOption = Annotated[str, typer.Option("--role", help="viewer, agent or admin")]


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            _fail("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[red]{message}[/red]")
    raise typer.Exit(1)


def _run(action: str, work: object) -> None:
    settings = Settings()
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            work(session)  # type: ignore[operator]
    except DomainError as error:
        _fail(f"{action}: {error.message}")
    finally:
        engine.dispose()


@app.command()
def add(name: str, role: RoleOption = "viewer") -> None:
    """A new user; the password is read from standard input."""
    password = _password()
    _run("add", lambda s: users.add_user(s, name, role, password, utcnow()))
    typer.echo(f"added {name} ({role})")


@app.command(name="list")
def list_users() -> None:
    """Every user and role."""
    found: list[users.UserView] = []
    _run("list", lambda s: found.extend(users.list_users(s)))
    table = Table("name", "role", "created")
    for user in found:
        table.add_row(user.name, user.role, user.created_at.strftime("%Y-%m-%d %H:%M UTC"))
    Console().print(table)


@app.command()
def remove(name: str) -> None:
    """The user goes, and every session of theirs ends; their audit records stay."""
    _run("remove", lambda s: users.remove_user(s, name))
    typer.echo(f"removed {name}")


@app.command(name="set-role")
def set_role(name: str, role: Annotated[str, typer.Argument(help="viewer, agent or admin")]
             ) -> None:
    """Change what the user may do (from their next request on)."""
    _run("set-role", lambda s: users.set_role(s, name, role, utcnow()))
    typer.echo(f"{name} is now {role}")


@app.command(name="set-password")
def set_password(name: str) -> None:
    """A new password from standard input; every session of the user ends."""
    password = _password()
    _run("set-password", lambda s: users.set_password(s, name, password, utcnow()))
    typer.echo(f"password of {name} changed")
