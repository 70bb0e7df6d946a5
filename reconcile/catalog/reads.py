"""The entitlement read on the business's hot path, on plain DBAPI connections.

The same statement and the same grant rules as `service.entitlements`, without what SQLAlchemy
spends around one indexed read (connection checkout, BEGIN/ROLLBACK, result metadata), and
without a hop to another thread where the database allows it:

- SQLite: the read runs on the event loop itself, on a connection of its own (a WAL reader
  never waits for the writer, and one indexed read of a local file takes microseconds). A hop
  to a thread costs more than the read: two handovers of the GIL, each of which may wait for
  the switch interval (5 ms) behind a busy event loop.
- PostgreSQL with psycopg: the read runs on the event loop through psycopg's asyncio
  connections (`READERS` of them), so the loop waits for the server without blocking.
- Anything else: `READERS` threads, each keeping one connection of the read engine.

The statement is compiled once. Any failure drops that connection and is raised to the caller,
who answers through the ordinary route (which reports an unreachable database as usual).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from reconcile.catalog.file import Catalog
from reconcile.catalog.service import _READ, Grant, _Held, grants_of
from reconcile.db import CONNECT_TIMEOUT_SECONDS
from reconcile.models import UTCDateTime

if TYPE_CHECKING:
    # Imported where used: a SQLite deployment never loads the driver.
    import psycopg

# Connections of the read at once: reader threads (each holds one pooled connection for good,
# so well below the pool's size), or psycopg's asyncio connections of the event loop.
READERS = 4


class EntitlementReads:
    """Entitlement answers, read on the event loop where the driver allows it (see above)."""

    def __init__(self, engine: Engine, catalog: Catalog, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._catalog = catalog
        self._clock = clock
        dialect = engine.dialect
        self._statements = {env: _compiled(engine, env) for env in (False, True)}
        processor = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
        self._moment: Callable[[Any], datetime | None] = processor or (lambda value: value)
        self._inline = dialect.name == "sqlite"
        self._async_params = _psycopg_params(engine) if dialect.driver == "psycopg" else None
        self._async: _AsyncReaders | None = None
        self._local = threading.local()
        self._held: list[PoolProxiedConnection] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(READERS, thread_name_prefix="entitlements")

    async def read(self, account_id: str, environment: str | None) -> list[Grant]:
        """As `read_now`, on the event loop where the driver allows it (see above)."""
        if self._inline or not self._catalog.products:
            return self.read_now(account_id, environment)
        if self._async_params is not None:
            sql, parameters = self._query(account_id, environment)
            return self._grants(await self._readers().fetch(sql, parameters))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.read_now, account_id,
                                          environment)

    def read_now(self, account_id: str, environment: str | None) -> list[Grant]:
        """Every entitlement `account_id` holds or held, as `service.entitlements` says."""
        if not self._catalog.products:
            return []
        sql, parameters = self._query(account_id, environment)
        pooled = self._connection()
        try:
            cursor = pooled.cursor()
            try:
                cursor.execute(sql, parameters)
                rows = cursor.fetchall()
            finally:
                cursor.close()
        except BaseException:
            self._drop(pooled)
            raise
        return self._grants(rows)

    def _query(self, account_id: str, environment: str | None
               ) -> tuple[str, dict[str, Any] | tuple[Any, ...]]:
        sql, names = self._statements[environment is not None]
        values = {"account": account_id, "environment": environment}
        return sql, values if names is None else tuple(values[name] for name in names)

    def _readers(self) -> _AsyncReaders:
        """The asyncio connections of the running loop (a new loop, as in tests that serve
        the same services twice, gets new ones)."""
        loop = asyncio.get_running_loop()
        readers = self._async
        if readers is None or readers.loop is not loop:
            assert self._async_params is not None
            if readers is not None:
                readers.close()
            readers = self._async = _AsyncReaders(loop, self._async_params)
        return readers

    def _grants(self, rows: Sequence[Any]) -> list[Grant]:
        moment = self._moment
        subscriptions: list[_Held] = []
        purchases: list[_Held] = []
        blocked = False
        for source, id_, channel, product_id, status, expires_at, grace, kind in rows:
            if source == "b":
                blocked = True
                continue
            held = _Held(id_, channel, product_id or "", status, moment(expires_at),
                         moment(grace), kind)
            (subscriptions if source == "s" else purchases).append(held)
        return grants_of(self._catalog, subscriptions, purchases, blocked=blocked,
                         now=self._clock())

    def _connection(self) -> PoolProxiedConnection:
        pooled: PoolProxiedConnection | None = getattr(self._local, "pooled", None)
        if pooled is None:
            pooled = self._engine.raw_connection()
            driver = pooled.driver_connection
            # Each read is one statement, so one snapshot: no transaction to open and end
            # (the SQLite reader is in autocommit already; psycopg would open one).
            if driver is not None and hasattr(driver, "autocommit"):
                driver.autocommit = True
            self._local.pooled = pooled
            with self._lock:
                self._held.append(pooled)
        return pooled

    def _drop(self, pooled: PoolProxiedConnection) -> None:
        self._local.pooled = None
        with self._lock:
            if pooled in self._held:
                self._held.remove(pooled)
        pooled.invalidate()

    def close(self) -> None:
        """Stop the reader threads and close every connection of the read; the threads' are
        closed, not handed back to the pool (they were switched to autocommit)."""
        self._executor.shutdown(wait=True)
        if self._async is not None:
            self._async.close()
        with self._lock:
            held, self._held = self._held, []
        for pooled in held:
            pooled.invalidate()


def _compiled(engine: Engine, environment: bool) -> tuple[str, list[str] | None]:
    """The read's SQL in the driver's own parameter style, and the order of its parameters
    for a positional style (None for a named one)."""
    compiled = _READ[environment].compile(dialect=engine.dialect)
    return compiled.string, list(compiled.positiontup) if compiled.positiontup else None


class _AsyncReaders:
    """psycopg asyncio connections of one event loop in autocommit, at most `READERS` busy."""

    def __init__(self, loop: asyncio.AbstractEventLoop, params: dict[str, Any]) -> None:
        self.loop = loop
        self._params = params
        # Each idle connection with its cursor, kept for the next read (one object fewer to
        # make per read).
        self._idle: list[tuple[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any]]] = []
        self._free = asyncio.Semaphore(READERS)

    async def fetch(self, sql: str, parameters: dict[str, Any] | tuple[Any, ...]
                    ) -> list[Any]:
        import psycopg  # loaded already: the engine's dialect is psycopg

        async with self._free:
            if self._idle:
                connection, cursor = self._idle.pop()
            else:
                connection = await psycopg.AsyncConnection.connect(autocommit=True,
                                                                   **self._params)
                cursor = connection.cursor()
            try:
                await cursor.execute(sql, parameters, prepare=True)
                rows = await cursor.fetchall()
            except BaseException:
                # Failed, or cancelled half-way: its state is unknown, so it is not reused.
                connection.pgconn.finish()
                raise
            self._idle.append((connection, cursor))
            return rows

    def close(self) -> None:
        """Close the idle connections; no coroutine needed (the loop may be gone)."""
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.pgconn.finish()


def _psycopg_params(engine: Engine) -> dict[str, Any]:
    """What the engine's own connections are made with (its URL, the dialect's adapters), and
    the same connect timeout as `reconcile.db.make_engine`."""
    args, params = engine.dialect.create_connect_args(engine.url)
    params = {"conninfo": args[0] if args else "", **params}
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    return params
