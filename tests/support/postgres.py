"""Fresh PostgreSQL databases per test: one migrated template per session, copied per test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from secrets import token_hex

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from reconcile.db import migrate

# An admin URL to a PostgreSQL server the tests may create databases on (scripts/postgres.sh).
POSTGRES_ENV = "RECONCILE_TEST_POSTGRES_URL"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"
BASH = shutil.which("bash") or "/bin/bash"


class PostgresDatabases:
    """Creates and drops databases on the test server reached through `admin_url`.

    `CREATE DATABASE ... TEMPLATE` copies files, so a migrated database costs tens of
    milliseconds instead of running the migration for every test.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url)
        self.engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT",
                                    poolclass=NullPool)
        self.template = f"reconcile_tmpl_{token_hex(4)}"

    def url(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def create_template(self) -> None:
        self._execute(f'CREATE DATABASE "{self.template}"')
        migrate(self.url(self.template))

    def create(self, *, migrated: bool = True) -> str:
        """A new database, with the migrated schema unless told otherwise; returns its URL."""
        name = f"reconcile_test_{token_hex(6)}"
        template = self.template if migrated else "template0"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self.engine.dispose()

    def _execute(self, statement: str) -> None:
        with self.engine.connect() as connection:
            connection.execute(text(statement))


class DedicatedServer:
    """A PostgreSQL server of one test's own (scripts/postgres.sh), which it may stop and start
    again to play an outage without disturbing the suite's shared server."""

    def __init__(self) -> None:
        started = subprocess.run([BASH, str(SCRIPT), "start"], check=True, text=True,
                                 capture_output=True).stdout
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in started.splitlines() if line.startswith("export "))
        self.admin_url = exports[POSTGRES_ENV]
        self.directory = exports["RECONCILE_TEST_POSTGRES_DIR"]

    def pause(self) -> None:
        """Stop the server (fast shutdown: sessions are cut off); its data stays."""
        subprocess.run([BASH, str(SCRIPT), "pause", self.directory], check=True)

    def resume(self) -> None:
        """Start it again on the same port."""
        subprocess.run([BASH, str(SCRIPT), "resume", self.directory], check=True)

    def close(self) -> None:
        subprocess.run([BASH, str(SCRIPT), "stop", self.directory], check=True)
