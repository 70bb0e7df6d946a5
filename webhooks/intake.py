"""Durable intake: a verified notification is in the inbox before the store hears 2xx.

Concurrent webhook requests share transactions (group commit): one writer thread takes every
notification waiting at that moment, inserts them all in one transaction and answers each
request only after that transaction committed. Under load this turns a commit per request into a
commit per batch, and requests never queue on the database's write lock one by one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, TextClause, bindparam, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from reconcile.db import transaction
from reconcile.models import InboxEntry
from reconcile.outage import DatabaseWatch, is_unavailable


@dataclass(frozen=True)
class Incoming:
    """A notification ready to be kept: raw payload plus the keys we index it by."""

    channel: str
    notification_id: str
    kind: str
    payload: str
    store_time: datetime | None = None
    subject: str | None = None
    environment: str | None = None
    status: str = "pending"
    error: str | None = None


def insert_entry(session: Session, incoming: Incoming, now: datetime) -> bool:
    """Insert `incoming` in the caller's transaction unless (channel, notification id) is
    known; True when it was new."""
    return insert_entries(session, [(incoming, now)])[0]


def insert_entries(session: Session, batch: Sequence[tuple[Incoming, datetime]]) -> list[bool]:
    """Insert every notification of `batch` not yet known, a few statements for the lot; for
    each, True when it was new (a repeat inside the batch is not)."""
    rows = [_row(incoming, now) for incoming, now in batch]
    connection = session.connection()
    if connection.dialect.name not in ("sqlite", "postgresql"):
        return [_insert_one(session, row) for row in rows]
    # Multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING: the keys they return are the rows
    # they inserted. A key repeated inside the batch is inserted (and returned) once.
    inserted: set[tuple[str, str]] = set()
    start = 0
    for size in _chunk_sizes(len(rows)):
        chunk = rows[start:start + size]
        start += size
        parameters = {f"{name}_{i}": row[name] for i, row in enumerate(chunk) for name in _COLUMNS}
        inserted.update(connection.execute(_insert_ignoring_duplicates(size), parameters).tuples())
    results = []
    for row in rows:
        key = (row["channel"], row["notification_id"])
        results.append(key in inserted)
        inserted.discard(key)
    return results


def _chunk_sizes(count: int) -> list[int]:
    """`count` as a sum of powers of two up to 64: few statements, and few distinct ones."""
    sizes = [64] * (count // 64)
    remainder = count % 64
    sizes.extend(1 << bit for bit in reversed(range(6)) if remainder & (1 << bit))
    return sizes


def _row(incoming: Incoming, now: datetime) -> dict[str, Any]:
    return {
        "channel": incoming.channel,
        "notification_id": incoming.notification_id,
        "kind": incoming.kind[:96],
        "subject": incoming.subject,
        "environment": incoming.environment,
        "payload": incoming.payload,
        "store_time": incoming.store_time,
        "received_at": now,
        "status": incoming.status,
        "attempts": 0,
        "next_attempt_at": now,
        "processed_at": now if incoming.status != "pending" else None,
        "error": incoming.error,
    }


def _insert_one(session: Session, row: dict[str, Any]) -> bool:
    """A database without ON CONFLICT: the unique constraint decides, in a savepoint."""
    try:
        with session.begin_nested():
            session.connection().execute(insert(InboxEntry), row)
    except IntegrityError:
        return False
    return True


_COLUMNS = ("channel", "notification_id", "kind", "subject", "environment", "payload",
            "store_time", "received_at", "status", "attempts", "next_attempt_at",
            "processed_at", "error")
_INBOX = cast(Table, InboxEntry.__table__)


@cache
def _insert_ignoring_duplicates(rows: int) -> TextClause:
    """INSERT of `rows` rows that skips known keys and returns the keys it inserted.

    Text, because SQLAlchemy 2.0 cannot cache a compiled `on_conflict_do_nothing` (it would
    compile the statement again for every batch); text is compiled once per engine, and the
    columns' types still convert the values. SQLite and PostgreSQL both read this SQL.
    """
    values = ", ".join(
        "(" + ", ".join(f":{name}_{i}" for name in _COLUMNS) + ")" for i in range(rows))
    # Only constant column names and placeholders go into the text; the values are bound.
    statement = text(
        f"INSERT INTO inbox ({', '.join(_COLUMNS)}) VALUES {values}"  # noqa: S608
        " ON CONFLICT (channel, notification_id) DO NOTHING RETURNING channel, notification_id"
    )
    return statement.bindparams(*(bindparam(f"{name}_{i}", type_=_INBOX.c[name].type)
                                  for i in range(rows) for name in _COLUMNS))


def is_known(session: Session, incoming: Incoming) -> bool:
    """Whether this (channel, notification id) is already in the inbox (a dry run's question)."""
    return session.scalars(
        select(InboxEntry.id).where(InboxEntry.channel == incoming.channel,
                                    InboxEntry.notification_id == incoming.notification_id)
    ).first() is not None


_Job = tuple[Incoming, datetime, "Future[bool]"]


class Intake:
    """The group-committing writer behind the webhook routes."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_batch: int = 500,
        on_recorded: Callable[[], None] | None = None,
        database: DatabaseWatch | None = None,
    ) -> None:
        self._sessions = sessions
        self._max_batch = max_batch
        # Told when a write finds the database away (it logs the outage once) or back.
        self._database = database
        # Called after a commit that recorded something new to process (wakes the worker).
        self._on_recorded = on_recorded
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, incoming: Incoming, now: datetime) -> Future[bool]:
        """A future that resolves to True (new) / False (duplicate) once committed."""
        future: Future[bool] = Future()
        self._queue.put((incoming, now, future))
        self._ensure_running()
        return future

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(10)
                self._thread = None

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="intake-writer",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)
                    break
                batch.append(job)
            self._write(batch)

    def _write(self, batch: list[_Job]) -> None:
        started = self._database.now() if self._database is not None else 0.0
        try:
            with transaction(self._sessions) as session:
                results = insert_entries(session, [(incoming, now) for incoming, now, _ in batch])
        except Exception as error:  # every waiting request answers 5xx; the stores retry
            if self._database is not None and is_unavailable(error):
                self._database.failed(error)
            for _, _, future in batch:
                future.set_exception(error)
            return
        if self._database is not None:
            self._database.succeeded(started)
        if self._on_recorded is not None and any(
            new and incoming.status == "pending"
            for (incoming, _, _), new in zip(batch, results, strict=True)
        ):
            self._on_recorded()
        for (_, _, future), new in zip(batch, results, strict=True):
            future.set_result(new)
