"""The one migration builds exactly the models' schema, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from reconcile.db import MIGRATION_LOCK, alembic_config
from reconcile.models import Base
from tests.support.postgres import POSTGRES_ENV, PostgresDatabases

# The newest revision, whichever it is: every migration must end at the models' schema.
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@pytest.fixture
def empty_database_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with no schema at all (PostgreSQL when configured, else an SQLite file)."""
    if not os.environ.get(POSTGRES_ENV):
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = databases.create(migrated=False)
    yield url
    databases.drop(url)


def schema_differences(url: str) -> list[object]:
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences: list[object] = compare_metadata(context, Base.metadata)
    engine.dispose()
    return differences


def test_migration_matches_models(database_url: str) -> None:
    """Autogenerate finds nothing between the migrated database and models.py."""
    assert schema_differences(database_url) == []


def test_processes_starting_together_all_migrate(empty_database_url: str) -> None:
    """Several processes migrating one empty database at once all succeed, and it ends at head."""
    env = {**os.environ, "RECONCILE_DATABASE_URL": empty_database_url}
    command = [sys.executable, "-m", "reconcile", "migrate"]
    engine = create_engine(empty_database_url, poolclass=NullPool)
    with engine.connect() as gate:
        postgres = engine.dialect.name == "postgresql"
        if postgres:
            # Hold the migration lock until every process is queued on it, so they all race.
            gate.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        processes = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
                     for _ in range(3)]
        try:
            deadline = time.monotonic() + 60
            while postgres and gate.scalar(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )) < len(processes):
                assert time.monotonic() < deadline, "the processes never asked for the lock"
                assert all(p.poll() is None for p in processes), "a process ended early"
                time.sleep(0.05)
            if postgres:
                gate.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
            outcomes = [(p.wait(60), p.communicate()[1]) for p in processes]
        finally:
            for process in processes:
                process.kill()
    assert [code for code, _ in outcomes] == [0, 0, 0], [err for _, err in outcomes]
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == HEAD
    engine.dispose()
    assert schema_differences(empty_database_url) == []
