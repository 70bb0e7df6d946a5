"""The background worker: drains the inbox (and every other durable queue) with retries.

Work is claimed with a lease (plus `FOR UPDATE SKIP LOCKED` where the database has it), so
several workers can share one database and a worker that dies releases its work when its lease
runs out. Each item is applied and marked done in one transaction: exactly-once in effect.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import Select, or_, select, update
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, defer, sessionmaker

from reconcile.catalog.file import Catalog
from reconcile.db import is_conflict, transaction
from reconcile.ids import new_id
from reconcile.ingest import ingest
from reconcile.ingest_many import ingest_many
from reconcile.models import InboxEntry
from reconcile.outage import Backoff, DatabaseWatch, is_unavailable
from reconcile.outcomes import FreshRead, Normalised

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Immediate re-runs of an entry that lost a race with another worker (see `is_conflict`);
# they are not failed attempts, so they neither back off nor count towards max_attempts.
CONFLICT_RETRIES = 5


def utcnow() -> datetime:
    return datetime.now(UTC)


class PermanentError(Exception):
    """Processing can never succeed (bad payload, store says gone): record it, stop retrying."""


class Processor(Protocol):
    """Turns claimed inbox entries of one channel into outcomes; may call the store, not the db.

    Returns one result per entry, in order: a `Normalised`, or the exception that stopped it.
    """

    channel: str

    def normalise(
        self, entries: Sequence[InboxEntry], now: datetime
    ) -> Sequence[Normalised | Exception]: ...


class Job(Protocol):
    """A unit of background work; `run_once` does one bounded batch, returns items handled."""

    name: str

    def run_once(self, now: datetime) -> int: ...


def backoff(attempts: int) -> timedelta:
    """Exponential with jitter, 2 s doubling up to one hour."""
    base = min(3600.0, 2.0 * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def due_entries(now: datetime, limit: int) -> Select[tuple[int]]:
    """The ids of inbox entries due now and not leased, oldest due first, locked for a claim.

    It filters on `status = 'pending'` exactly as the partial index `ix_inbox_due` does, so the
    index holds only the waiting work, however large the inbox grows.
    """
    return (
        select(InboxEntry.id)
        .where(
            InboxEntry.status == "pending",
            InboxEntry.next_attempt_at <= now,
            or_(InboxEntry.lease_until.is_(None), InboxEntry.lease_until < now),
        )
        .order_by(InboxEntry.next_attempt_at, InboxEntry.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def worker_id() -> str:
    return f"{socket.gethostname()[:32]}:{new_id('w')[-8:]}"


@dataclass
class InboxJob:
    """Claims due inbox entries, hands them to the channel's processor, applies the outcomes."""

    sessions: sessionmaker[Session]
    processors: dict[str, Processor]
    owner: str
    batch_size: int = 50
    lease: timedelta = timedelta(seconds=60)
    max_attempts: int = 12
    name: str = "inbox"
    # Which one-time purchases are credit packs: their credits are granted as they are stored.
    catalog: Catalog = field(default_factory=Catalog)

    def run_once(self, now: datetime) -> int:
        entries = self._claim(now)
        by_channel: dict[str, list[InboxEntry]] = {}
        for entry in entries:
            by_channel.setdefault(entry.channel, []).append(entry)
        for channel, group in by_channel.items():
            processor = self.processors.get(channel)
            if processor is None:
                results: Sequence[Normalised | Exception] = [
                    RuntimeError(f"no processor configured for {channel}")
                ] * len(group)
            else:
                try:
                    results = processor.normalise(group, now)
                except Exception as error:  # a processor bug must not stop the other channels
                    log.exception("processor %s failed", channel)
                    results = [error] * len(group)
            self._finish_batch(list(zip(group, results, strict=True)), now)
        return len(entries)

    def _claim(self, now: datetime) -> list[InboxEntry]:
        with transaction(self.sessions) as session:
            ids = list(session.scalars(due_entries(now, self.batch_size)))
            if not ids:
                return []
            session.execute(
                update(InboxEntry)
                .where(InboxEntry.id.in_(ids))
                .values(lease_owner=self.owner, lease_until=now + self.lease)
            )
            rows = list(
                session.scalars(
                    select(InboxEntry).where(InboxEntry.id.in_(ids)).order_by(InboxEntry.id)
                )
            )
            session.expunge_all()
            return rows

    def _finish_batch(
        self, batch: list[tuple[InboxEntry, Normalised | Exception]], now: datetime
    ) -> None:
        """Apply a whole batch in one transaction; if anything in it fails, one by one."""
        # Apply in store-id order so that workers whose batches share subscriptions lock them
        # in the same order (PostgreSQL): one waits for the other instead of deadlocking.
        # The merge is order-independent, so this changes nothing else.
        batch = sorted(batch, key=lambda item: (_store_id(item[1]), item[0].id))
        if len(batch) > 1:
            try:
                with transaction(self.sessions) as session:
                    rows = {
                        row.id: row
                        for row in session.scalars(
                            select(InboxEntry)
                            .where(InboxEntry.id.in_([entry.id for entry, _ in batch]))
                            .options(defer(InboxEntry.payload))
                            .with_for_update()
                        )
                    }
                    done = self._apply_common(session, batch, rows, now)
                    # One flush for the batch lets inserts go out as multi-row statements;
                    # ingest flushes itself wherever a later lookup needs what it added.
                    with session.no_autoflush:
                        for entry, result in batch:
                            if entry.id not in done:
                                self._apply(session, rows.get(entry.id), entry, result, now)
                return
            except Exception as error:
                if is_unavailable(error):
                    raise  # the whole batch comes back when its lease runs out
                log.warning("a batch of %d entries failed; applying them one by one", len(batch))
        for entry, result in batch:
            self._finish_one(entry, result, now)

    def _apply_common(
        self,
        session: Session,
        batch: list[tuple[InboxEntry, Normalised | Exception]],
        rows: dict[int, InboxEntry],
        now: datetime,
    ) -> set[int]:
        """The entries `ingest_many` applies in bulk, marked processed in one statement."""
        ours = [
            (entry.id, result) for entry, result in batch
            if isinstance(result, Normalised)
            and (row := rows.get(entry.id)) is not None
            and row.lease_owner == self.owner and row.status == "pending"
        ]
        if not ours:
            return set()
        done = ingest_many(session, ours, source=batch[0][0].channel, now=now)
        if done:
            for inbox_id in done:
                # Out of the session, so that its stale copy is never flushed over this update.
                session.expunge(rows[inbox_id])
            session.execute(
                update(InboxEntry)
                .where(InboxEntry.id.in_(sorted(done)))
                .values(status="processed", processed_at=now, error=None, lease_owner=None,
                        lease_until=None, attempts=InboxEntry.attempts + 1)
                .execution_options(synchronize_session=False)
            )
        return done

    def _finish_one(self, entry: InboxEntry, result: Normalised | Exception, now: datetime) -> None:
        for retry in range(CONFLICT_RETRIES + 1):
            try:
                with transaction(self.sessions) as session:
                    row = session.get(InboxEntry, entry.id, with_for_update=True)
                    self._apply(session, row, entry, result, now)
                return
            except Exception as error:
                if is_unavailable(error):
                    raise  # not the entry's fault: it comes back when its lease runs out
                if is_conflict(error) and retry < CONFLICT_RETRIES:
                    # Another worker wrote the same subscription (or account, purchase...)
                    # first; running again in a new transaction builds on what it committed.
                    log.info("inbox entry %s raced another writer; applying it again", entry.id)
                    continue
                if isinstance(error, DataError):
                    # A value the database refuses (too long for its column...): it always will.
                    log.warning("inbox entry %s cannot be stored: %s", entry.id,
                                str(error.orig).splitlines()[0] if error.orig else error)
                    refused = PermanentError(f"cannot be stored: {error.orig}")
                    self._record_failure(entry.id, refused, now)
                    return
                log.exception("applying inbox entry %s failed", entry.id)
                self._record_failure(entry.id, error, now)
                return

    def _apply(
        self,
        session: Session,
        row: InboxEntry | None,
        entry: InboxEntry,
        result: Normalised | Exception,
        now: datetime,
    ) -> None:
        if row is None or row.lease_owner != self.owner or row.status != "pending":
            return  # our lease ran out and another worker took it
        row.lease_owner = None
        row.lease_until = None
        row.attempts += 1
        if isinstance(result, Exception):
            self._failed(row, result, now)
            return
        ingest(session, result, source=entry.channel, now=now, inbox_id=entry.id,
               catalog=self.catalog)
        row.status = "processed"
        row.processed_at = now
        row.error = None
        if result.fresh_read is not None:
            self._cover(session, entry, result.fresh_read, now)

    def _cover(self, session: Session, entry: InboxEntry, read: FreshRead, now: datetime) -> None:
        """Waiting notifications that `read` already answers are done without a read each."""
        session.execute(
            update(InboxEntry)
            .where(
                InboxEntry.channel == entry.channel,
                InboxEntry.subject == read.subject,
                InboxEntry.status == "pending",
                InboxEntry.id != entry.id,
                InboxEntry.kind.in_(sorted(read.kinds)),
                InboxEntry.received_at <= read.at,
                # Not while another worker holds it: that one finishes it itself.
                or_(InboxEntry.lease_until.is_(None), InboxEntry.lease_until < now,
                    InboxEntry.lease_owner == self.owner),
            )
            .values(status="processed", processed_at=now, lease_owner=None, lease_until=None,
                    error=None)
            # Batch-mates loaded in this session must see it, or they would be applied again.
            .execution_options(synchronize_session="fetch")
        )

    def _failed(self, row: InboxEntry, error: Exception, now: datetime) -> None:
        row.error = f"{type(error).__name__}: {error}"[:2000]
        if isinstance(error, PermanentError) or row.attempts >= self.max_attempts:
            row.status = "failed"
            row.processed_at = now
        else:
            row.next_attempt_at = now + backoff(row.attempts)

    def _record_failure(self, entry_id: int, error: Exception, now: datetime) -> None:
        with transaction(self.sessions) as session:
            row = session.get(InboxEntry, entry_id)
            if row is not None and row.status == "pending":
                row.attempts += 1
                self._failed(row, error, now)
                row.lease_owner = None
                row.lease_until = None


def _store_id(result: Normalised | Exception) -> str:
    if isinstance(result, Normalised) and result.subscription is not None:
        return result.subscription.store_id
    return ""


class Worker:
    """Runs every job in turn until stopped; `drain` runs them until all are idle (tests, CLI)."""

    def __init__(
        self,
        jobs: Sequence[Job],
        *,
        clock: Clock = utcnow,
        poll_seconds: float = 0.2,
        wake: threading.Event | None = None,
        database: DatabaseWatch | None = None,
        backoff: Backoff | None = None,
    ):
        self.jobs = list(jobs)
        self.clock = clock
        self.poll_seconds = poll_seconds
        # An outage is logged through `database` (once per outage, for the whole process);
        # while it lasts, rounds are `backoff` apart instead of `poll_seconds`.
        self.database = database if database is not None else DatabaseWatch()
        self.backoff = backoff if backoff is not None else Backoff()
        self._outage_delay: float | None = None
        # Set by whoever records new work in this process (the intake): no need to wait for
        # the next poll. Work recorded by other processes is found by polling.
        self._wake = wake if wake is not None else threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One round of every job; a round that finds the database away ends there (no
        traceback: `database` logs the outage once) and sets the wait before the next."""
        handled = 0
        self._outage_delay = None
        started = self.database.now()
        for job in self.jobs:
            try:
                handled += job.run_once(self.clock())
            except Exception as error:
                if is_unavailable(error):
                    self.database.failed(error)
                    self._outage_delay = self.backoff.next()
                    return handled
                log.exception("job %s failed", job.name)
        self.database.succeeded(started)
        self.backoff.reset()
        return handled

    def drain(self, max_rounds: int = 1000) -> int:
        total = 0
        for _ in range(max_rounds):
            handled = self.run_once()
            total += handled
            if handled == 0 or self._outage_delay is not None:
                break
        return total

    def run_forever(self) -> None:
        while not self._stop.is_set():
            handled = self.run_once()
            if self._outage_delay is not None:
                self._stop.wait(self._outage_delay)
            elif handled == 0:
                self._wake.wait(self.poll_seconds)
                # Cleared before the next round looks for work, so no wake-up is lost.
                self._wake.clear()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="reconcile-worker",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
