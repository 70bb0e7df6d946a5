"""Which database errors are an outage, how loops back off from one, and how it is logged."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime

import psycopg
import psycopg.errors
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from reconcile.outage import Backoff, DatabaseWatch, is_unavailable
from reconcile.worker import Worker
from tests.support.server import FakeClock


def wrapped(error: Exception) -> OperationalError:
    return OperationalError("SELECT 1", {}, error)


@pytest.mark.parametrize(("error", "outage"), [
    (wrapped(psycopg.OperationalError("connection refused")), True),
    (wrapped(psycopg.errors.AdminShutdown("terminating connection")), True),
    (wrapped(psycopg.errors.CannotConnectNow("the database system is starting up")), True),
    (wrapped(psycopg.errors.SerializationFailure("could not serialize")), False),
    (wrapped(psycopg.errors.DeadlockDetected("deadlock")), False),
    (wrapped(sqlite3.OperationalError("database is locked")), True),
    (wrapped(sqlite3.OperationalError("unable to open database file")), True),
    (wrapped(sqlite3.OperationalError("no such table: inbox")), False),
    (IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), False),
    (RuntimeError("a bug"), False),
])
def test_outages_are_told_from_bugs_and_races(error: Exception, outage: bool) -> None:
    """A database that cannot be reached is an outage; a race, a schema bug or ours is not."""
    assert is_unavailable(error) is outage


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    """Waits double from `first` to `cap`, each between half and all of that; reset starts over."""
    highest = Backoff(first=0.5, cap=30, jitter=lambda: 1.0)
    assert [highest.next() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    lowest = Backoff(first=0.5, cap=30, jitter=lambda: 0.0)
    assert [lowest.next() for _ in range(3)] == [0.25, 0.5, 1]
    highest.reset()
    assert highest.next() == 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_once_as_it_begins_and_once_as_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """However many failures, one line when the database goes and one, with how long it was
    away, when an attempt begun after the last failure succeeds."""
    monotonic = Clock()
    watch = DatabaseWatch(monotonic=monotonic)
    error = wrapped(psycopg.OperationalError("connection refused"))
    with caplog.at_level(logging.INFO, logger="reconcile.outage"):
        begun_before = watch.now()
        for _ in range(50):
            monotonic.now += 0.1
            watch.failed(error)
        watch.succeeded(begun_before)  # a commit already under way proves nothing
        assert not watch.up
        monotonic.now += 1
        watch.succeeded(watch.now())
        watch.succeeded(watch.now())
    assert watch.up
    assert [r.getMessage() for r in caplog.records] == [
        "database unavailable (OperationalError: connection refused); "
        "retrying with backoff until it is back",
        "database available again after 5.9 s",
    ]
    assert all(r.exc_info is None for r in caplog.records)


class FlakyJob:
    """A job whose database is away while `down` is set."""

    name = "flaky"

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def run_once(self, now: datetime) -> int:
        self.calls += 1
        if self.down:
            raise wrapped(psycopg.OperationalError("connection refused"))
        return 0


def test_the_worker_backs_off_while_the_database_is_away(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A round that meets an outage stops there and sets a growing wait, logs no traceback,
    and the first round after it resets the wait."""
    job, after = FlakyJob(), FlakyJob()
    worker = Worker([job, after], clock=clock, backoff=Backoff(jitter=lambda: 1.0))
    with caplog.at_level(logging.INFO):
        assert worker.drain() == 0
        worker.run_once()
        assert (job.calls, after.calls, worker.backoff.failures) == (2, 0, 2)
        job.down = after.down = False
        worker.run_once()
    assert worker.backoff.failures == 0
    assert worker.database.up
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING"]
    assert all(r.exc_info is None for r in caplog.records)
