"""Engine, sessions and migrations. Nothing here (or anywhere) depends on SQLite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

MIGRATIONS = Path(__file__).parent / "migrations"
# PostgreSQL advisory lock key that serialises `migrate` across processes ("reconcil" in ASCII).
MIGRATION_LOCK = 0x7265636F6E63696C
# A PostgreSQL server that does not answer at all (a host gone, packets dropped) fails a
# connection attempt after this many seconds instead of the system's TCP timeout, minutes later.
CONNECT_TIMEOUT_SECONDS = 10
# Each SQLite connection's private page cache, in KiB (SQLite's default is 2 MiB). In WAL mode a
# connection drops its cache whenever another connection has committed since its last
# transaction, which in a service with several pooled connections is nearly always, so the
# cache serves one transaction at most; the operating system caches the file. A scan of a large
# table (a reconciliation's urgent pages, its count) fills whatever is allowed on every
# connection, and the pages dropped and refilled fragment the C heap: a reconciling process at
# 1,000,000 subscriptions held 2 to 4 MiB more than at 10,000 with SQLite's default, 1 to 2.5
# MiB more with 512 KiB, 0.4 to 0.5 MiB more with 128 KiB (SQLite's own use then the same at
# both sizes, 0.8 MiB in all).
SQLITE_CACHE_KIB = 128


def make_engine(url: str) -> Engine:
    """An engine for `url`, with SQLite set up for concurrent readers and one writer."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # NORMAL in WAL mode survives a process crash; only power loss can drop a commit.
            _set_up_sqlite(dbapi_connection, "journal_mode=WAL", "synchronous=NORMAL",
                           "foreign_keys=ON")

        # SQLite has one writer at a time and its busy handler waits by sleeping (1 ms, then
        # up to 100 ms), which wrecks latency under contention. Threads of this process take
        # turns on a lock instead; other processes still meet the busy timeout.
        write_lock = threading.Lock()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            if not write_lock.acquire(timeout=30):
                raise TimeoutError("SQLite write lock not available within 30 s")
            connection.info["holds_write_lock"] = True
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release(connection)
                raise

        def _release(connection: Any) -> None:
            if connection.info.pop("holds_write_lock", False):
                write_lock.release()

        event.listen(engine, "commit", _release)
        event.listen(engine, "rollback", _release)
        return engine
    connect_args = ({"connect_timeout": CONNECT_TIMEOUT_SECONDS}
                    if url.startswith("postgresql") and "connect_timeout" not in url else {})
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                         connect_args=connect_args)


def make_read_engine(url: str, engine: Engine) -> Engine:
    """An engine for reads that must not queue behind writers: on SQLite, WAL readers see a
    snapshot without the write lock that `make_engine` takes on every BEGIN; elsewhere the
    main engine (PostgreSQL readers never wait for writers)."""
    if not url.startswith("sqlite"):
        return engine
    reader = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(reader, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        _set_up_sqlite(dbapi_connection, "query_only=ON")

    @event.listens_for(reader, "begin")
    def _sqlite_begin(connection: Any) -> None:
        # Deferred: one consistent snapshot for the transaction's reads, no lock taken.
        connection.exec_driver_sql("BEGIN")

    return reader


def _set_up_sqlite(dbapi_connection: Any, *pragmas: str) -> None:
    """A new SQLite connection: transactions begun by our `begin` hooks, a 30 s busy wait."""
    # pysqlite's own transaction handling defers BEGIN, which lets two writers both read and
    # then collide; the engines' `begin` hooks issue BEGIN (IMMEDIATE for the writer) instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("busy_timeout=30000", f"cache_size=-{SQLITE_CACHE_KIB}", *pragmas):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits when the block ends cleanly, rolls back otherwise."""
    with sessions() as session, session.begin():
        yield session


# unique_violation, serialization_failure, deadlock_detected
_CONFLICT_SQLSTATES = frozenset({"23505", "40001", "40P01"})


def is_conflict(error: BaseException) -> bool:
    """True when `error` is a race with a concurrent transaction that a plain retry resolves.

    Two writers creating the same row (unique key), a version-checked update that lost
    (`StaleDataError`), a serialization failure or a deadlock: the other transaction has
    committed or rolled back by the time we see the error, so running ours again sees its work.
    """
    if isinstance(error, StaleDataError):
        return True
    if not isinstance(error, DBAPIError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)  # psycopg 3
    if sqlstate is not None:
        return sqlstate in _CONFLICT_SQLSTATES
    return isinstance(error, IntegrityError) and "UNIQUE constraint failed" in str(error.orig)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema at `url` to the newest migration; safe to run from several processes
    at once (see migrations/env.py), a no-op when already there."""
    command.upgrade(alembic_config(url), "head")


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
