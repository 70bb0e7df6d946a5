"""Runs a reconciliation: sweeps first, then every subscription, urgent ones first, in pages.

A run is a row with a checkpoint (phase, position, error count) and a lease. Whoever holds the
lease advances it a page at a time; each page's findings, repairs, counters and checkpoint commit
together, so a run killed anywhere resumes after its last page, by whichever worker claims it once
the lease has run out. Subscriptions are read in keyset pages (memory stays flat however many
there are) and their stores are asked on a thread pool, one page ahead of the page being
settled, so the store's rate limit, not the database, sets the pace. At most `concurrency` store
calls are in flight; the pool has as many threads again, which check answers (signatures,
normalising) while the next calls are out, so that work never holds a call's place.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    and_,
    bindparam,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from reconcile.db import transaction
from reconcile.errors import StoreNotConfigured
from reconcile.heap import release_free_memory
from reconcile.ids import new_id
from reconcile.ingest import to_state
from reconcile.models import Discrepancy, ReconciliationRun, StoreId, Subscription
from reconcile.outage import is_unavailable
from reconcile.reconciliation.repair import settle
from reconcile.reconciliation.runs import RUN_LEASE, Lease, RunView
from reconcile.reconciliation.sources import (
    Fetched,
    Filters,
    Finding,
    StoreFault,
    Sweep,
    Target,
    TruthSource,
)
from reconcile.state import Status

log = logging.getLogger(__name__)

EXPIRING_SOON = timedelta(days=3)
URGENT = (Status.GRACE_PERIOD.value, Status.BILLING_RETRY.value)
SUBSCRIPTION_PHASES = ("urgent", "rest")

Progress = Callable[[int, int], None]


class Reconciler:
    """Starts, claims and advances reconciliation runs over the configured truth sources."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        sources: Mapping[str, TruthSource],
        *,
        owner: str,
        concurrency: int = 8,
        page_size: int = 200,
        lease: timedelta = RUN_LEASE,
        checks: Sequence[Sweep] = (),
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        self.sessions = sessions
        # Pages are read outside the write transactions that settle them: on SQLite by a WAL
        # reader, which takes no write lock and whose page cache a scan may fill on its own.
        self.reads = reads or sessions
        self.sources = sources
        # Checks of our own records that need no store (the credits ledger), run last.
        self.checks = list(checks)
        self.lease = Lease(owner, lease)
        self.concurrency = concurrency
        self._in_flight = threading.BoundedSemaphore(concurrency)
        self.page_size = page_size
        # One pool for the Reconciler's life: store clients keep per-thread connections
        # (httplib2 for Google), which a pool per round would rebuild every time.
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _threads(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(2 * self.concurrency,
                                                thread_name_prefix="reconcile")
            return self._pool

    # Starting and claiming

    def channels(self, filters: Filters) -> list[str]:
        """The channels a run with `filters` compares (the portal is always there: its truth
        is ours)."""
        if filters.channel is not None:
            if filters.channel not in self.sources:
                raise StoreNotConfigured(filters.channel)
            return [filters.channel]
        if not self.sources:
            raise StoreNotConfigured(None)
        return sorted(self.sources)

    def start(
        self, session: Session, filters: Filters, *, dry_run: bool, now: datetime,
        claim: bool = False,
    ) -> ReconciliationRun:
        """A new run (in the caller's transaction), claimable by any worker unless `claim`."""
        channels = self.channels(filters)
        sweeps = [s.name for c in channels for s in self.sources[c].sweeps()]
        phases = [*sweeps, *SUBSCRIPTION_PHASES] if channels else []
        phases += [check.name for check in self.checks]
        total = self._count(channels, filters) if channels else 0
        run = ReconciliationRun(
            id=new_id("rec"), status="running", dry_run=dry_run, filters=filters.to_json(),
            checked=0, started_at=now,
            checkpoint={"channels": channels, "phases": phases, "phase": 0, "state": {},
                        "total": total or 0, "errors": 0, "failures": []},
            lease_owner=self.lease.owner if claim else None,
            lease_until=now + self.lease.length if claim else None,
        )
        session.add(run)
        session.flush()
        return run

    def _count(self, channels: list[str], filters: Filters) -> int:
        """How many subscriptions a run covers (its progress's denominator), read like its
        pages: a count walks the whole index, which belongs outside the write lock."""
        with self.reads() as session:
            total = session.scalar(select(func.count()).select_from(Subscription)
                                   .where(self._selected(channels, filters)))
        return total or 0

    def claim(self, now: datetime, run_id: str | None = None) -> str | None:
        """Take the lease of a running run nobody (else) holds; its id, or None."""
        return self.lease.claim(self.sessions, now, run_id)

    # Advancing

    def advance(
        self,
        run_id: str,
        clock: Callable[[], datetime],
        *,
        max_pages: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Work on a claimed run until it ends or `max_pages` pages are done; items handled."""
        handled = pages = 0
        pool = self._threads()
        try:
            while max_pages is None or pages < max_pages:
                run = self.lease.view(self.sessions, run_id)
                if run is None:
                    break
                phase = run.phase
                if phase is None:
                    self.lease.end(self.sessions, run_id, clock())
                    break
                budget = None if max_pages is None else max_pages - pages
                if phase in SUBSCRIPTION_PHASES:
                    done, used = self._subscriptions(pool, run, clock, budget, progress)
                else:
                    done, used = self._sweep(run, self._sweeps()[phase], clock())
                handled += done
                pages += used
        except Exception as error:
            if is_unavailable(error):
                raise  # the run keeps its checkpoint and lease: it carries on when the db is back
            log.exception("reconciliation %s failed", run_id)
            self.lease.end(self.sessions, run_id, clock(), f"{type(error).__name__}: {error}")
        return handled

    def _subscriptions(
        self,
        pool: ThreadPoolExecutor,
        run: RunView,
        clock: Callable[[], datetime],
        budget: int | None,
        progress: Progress | None,
    ) -> tuple[int, int]:
        """Pages of one subscription phase, fetching the next page while settling this one."""
        queued: deque[tuple[list[Subscription], list[Future[Fetched]]]] = deque()
        pages_of = self._pages_of(run)
        last_read: str | None = run.state.get("after")
        exhausted = False
        handled = pages = 0
        while True:
            while not exhausted and len(queued) < 2 and (
                budget is None or pages + len(queued) < budget
            ):
                rows = self._page(pages_of, last_read)
                if not rows:
                    exhausted = True
                    break
                last_read = rows[-1].id
                asked = clock()
                queued.append((rows, [pool.submit(self._fetch, row, asked) for row in rows]))
            if not queued:
                if exhausted:
                    self.lease.step(self.sessions, run.id, clock())
                return handled, pages
            rows, futures = queued.popleft()
            results = [future.result() for future in futures]
            checked = self._settle(run, rows, results, clock())
            if checked is None:  # lost the lease: someone else carries on
                for _, waiting in queued:
                    for future in waiting:
                        future.cancel()
                return handled, pages
            handled += len(rows)
            pages += 1
            # Dropped before the next page is read, so that two pages are held, not three;
            # their buffers (store answers, SQLite pages) are freed among live chunks, which
            # glibc keeps resident: without trimming a run's memory crept with its length.
            del rows, futures, results
            release_free_memory()
            if progress is not None:
                progress(checked, run.checkpoint.get("total", 0))

    def _fetch(self, row: Subscription, now: datetime) -> Fetched:
        target = Target(row.id, row.channel, row.store_id, row.environment, to_state(row))
        try:
            return self.sources[row.channel].fetch(target, now, self._in_flight)
        except Exception as error:  # a bug in one adapter is reported, not mistaken for drift
            log.exception("fetching %s %s failed", row.channel, row.store_id)
            return Fetched(target, error=f"{type(error).__name__}: {error}")

    def _pages_of(self, run: RunView) -> Select[tuple[Subscription]]:
        """The statement that reads the pages of `run`'s phase: in id order, after `:after`,
        along the primary key. Built once a phase, not a page: an expression tree is cyclic
        garbage, which the collector as `serve` tunes it (`serving.settle_memory`) frees late,
        so a tree a page grew a million-subscription run by half a MiB a minute.

        The channel and status conditions are written so that no index can serve them
        (`column || ''`): given an index on them, SQLite reads every matching row and sorts
        them all to keep the first page, a cost that grows with the table (half a second a
        page at a million subscriptions). Along the key, a page reads about page_size rows.
        """
        channels: list[str] = run.checkpoint["channels"]
        channel, status = Subscription.channel + "", Subscription.status + ""
        urgent = self._urgent(datetime.fromisoformat(run.checkpoint["as_of"]), status)
        return (
            select(Subscription)
            .where(self._selected(channels, run.filters, channel),
                   urgent if run.phase == "urgent" else not_(urgent),
                   Subscription.id > bindparam("after"))
            .order_by(Subscription.id)
            .limit(self.page_size)
        )

    def _page(self, pages_of: Select[tuple[Subscription]], after: str | None) -> list[Subscription]:
        """The next page: the rows after id `after` (every id sorts after "")."""
        with self.reads() as session:
            rows = list(session.scalars(pages_of, {"after": after or ""}))
            session.expunge_all()
        return rows

    @staticmethod
    def _urgent(as_of: datetime, status: SQLColumnExpression[str]) -> ColumnElement[bool]:
        """Grace period, billing retry, or an active period ending within EXPIRING_SOON."""
        return or_(
            status.in_(URGENT),
            and_(status == Status.ACTIVE.value,
                 Subscription.expires_at.is_not(None),
                 Subscription.expires_at < as_of + EXPIRING_SOON),
        )

    @staticmethod
    def _selected(
        channels: list[str], filters: Filters,
        channel: SQLColumnExpression[str] = Subscription.channel,
    ) -> ColumnElement[bool]:
        conditions: list[ColumnElement[bool]] = [channel.in_(channels)]
        if filters.account_id:
            conditions.append(Subscription.account_id == filters.account_id)
        if filters.store_id:
            conditions.append(Subscription.id.in_(
                select(StoreId.subscription_id).where(StoreId.channel.in_(channels),
                                                      StoreId.store_id == filters.store_id)
            ))
        return and_(*conditions)

    def _settle(
        self, run: RunView, rows: list[Subscription], results: list[Fetched], now: datetime
    ) -> int | None:
        """Findings, repairs and the checkpoint of one page, in one transaction."""
        with transaction(self.sessions) as session:
            record = self.lease.held(session, run.id)
            if record is None:
                return None
            errors: list[str] = []
            checked = 0
            for row, fetched in zip(rows, results, strict=True):
                settled = settle(session, row, fetched, dry_run=run.dry_run, now=now)
                checked += settled.checked
                if settled.error:
                    errors.append(settled.error)
                for finding in settled.findings:
                    session.add(_discrepancy(run.id, finding, settled.repaired))
            record.checked += checked
            self.lease.move(record, {"after": rows[-1].id}, now, errors=errors)
            return record.checked

    def _sweep(self, run: RunView, sweep: Sweep, now: datetime) -> tuple[int, int]:
        """One page of a sweep; a store fault ends the sweep (reported) without its mark."""
        state = run.state
        if "window" not in state:
            with transaction(self.sessions) as session:
                record = self.lease.held(session, run.id)
                if record is None:
                    return 0, 0
                window = sweep.window(session, run.filters, now)
                if window is None:
                    self.lease.move(record, {}, now, next_phase=True)
                else:
                    self.lease.move(record, {"window": window, "token": None, "errors": 0}, now)
            return 0, 0
        try:
            page = sweep.fetch(state["window"], state.get("token"))
        except StoreFault as error:
            with transaction(self.sessions) as session:
                record = self.lease.held(session, run.id)
                if record is not None:
                    self.lease.move(record, {}, now, errors=[f"{sweep.name}: {error}"],
                               next_phase=True)
            return 0, 1
        with transaction(self.sessions) as session:
            record = self.lease.held(session, run.id)
            if record is None:
                return 0, 0
            for item in page.items:
                finding = sweep.settle(session, item, dry_run=run.dry_run, now=now)
                if finding is not None:
                    session.add(_discrepancy(run.id, finding, not run.dry_run))
            errors = [f"{sweep.name}: {e}" for e in page.errors]
            sweep_errors = state.get("errors", 0) + len(errors)
            if page.token is None:
                if not run.dry_run and sweep_errors == 0:
                    sweep.complete(session, state["window"], now)
                self.lease.move(record, {}, now, errors=errors, next_phase=True)
            else:
                self.lease.move(record, {**state, "token": page.token, "errors": sweep_errors}, now,
                           errors=errors)
        return len(page.items), 1

    def _sweeps(self) -> dict[str, Sweep]:
        sweeps = {s.name: s for source in self.sources.values() for s in source.sweeps()}
        return {**sweeps, **{check.name: check for check in self.checks}}


def _discrepancy(run_id: str, finding: Finding, repaired: bool) -> Discrepancy:
    return Discrepancy(
        run_id=run_id, channel=finding.channel, store_id=finding.store_id,
        subscription_id=finding.subscription_id, kind=finding.kind, here=finding.here,
        store=finding.store, repaired=repaired,
    )
