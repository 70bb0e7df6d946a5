"""The entitlement read on the business's hot path, on plain DBAPI connections.

The same statement and the same grant rules as `service.entitlements`, without what SQLAlchemy
spends around one indexed read (connection checkout, BEGIN/ROLLBACK, result metadata): each of
a few reader threads keeps one connection of the read engine and runs the statement compiled
once. Any failure drops that connection and is raised to the caller, who answers through the
ordinary route (which reports an unreachable database as usual).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.pool import PoolProxiedConnection

from reconcile.catalog.file import Catalog
from reconcile.catalog.service import _READ, Grant, _Held, grants_of
from reconcile.models import UTCDateTime

# Reader threads: each holds one pooled connection for good, so well below the pool's size.
READERS = 4


class EntitlementReads:
    """Entitlement answers read by `READERS` threads, each on a connection of its own."""

    def __init__(self, engine: Engine, catalog: Catalog, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._catalog = catalog
        self._clock = clock
        dialect = engine.dialect
        self._statements = {env: _compiled(engine, env) for env in (False, True)}
        processor = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
        self._moment: Callable[[Any], datetime | None] = processor or (lambda value: value)
        self._local = threading.local()
        self._held: list[PoolProxiedConnection] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(READERS, thread_name_prefix="entitlements")

    async def read(self, account_id: str, environment: str | None) -> list[Grant]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.read_now, account_id,
                                          environment)

    def read_now(self, account_id: str, environment: str | None) -> list[Grant]:
        """Every entitlement `account_id` holds or held, as `service.entitlements` says."""
        if not self._catalog.products:
            return []
        sql, names = self._statements[environment is not None]
        values = {"account": account_id, "environment": environment}
        parameters = values if names is None else tuple(values[name] for name in names)
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
        """Stop the reader threads; their connections are closed, not handed back to the
        pool (they were switched to autocommit)."""
        self._executor.shutdown(wait=True)
        with self._lock:
            held, self._held = self._held, []
        for pooled in held:
            pooled.invalidate()


def _compiled(engine: Engine, environment: bool) -> tuple[str, list[str] | None]:
    """The read's SQL in the driver's own parameter style, and the order of its parameters
    for a positional style (None for a named one)."""
    compiled = _READ[environment].compile(dialect=engine.dialect)
    return compiled.string, list(compiled.positiontup) if compiled.positiontup else None
