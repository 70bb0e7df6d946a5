"""The store-call budget holds for every process on one database together."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from reconcile.budget.limiter import SharedRateLimiter
from reconcile.budget.models import CallBudget
from reconcile.db import make_engine, make_sessionmaker
from tests.support.process import ROOT, service_env
from tests.support.shared_clock import SharedClock
from tests.support.windows import most_in_window

pytestmark = pytest.mark.slow

PROCESSES = 3
QUOTA = 600  # per 60 s
CALLS = 300  # per process: 900 in all, a minute and a half of the quota
START = 1_000_000.0


def test_three_processes_share_one_quota(database_url: str, apple_root_file: Path,
                                         tmp_path: Path) -> None:
    """Three processes calling as fast as they can together stay within one quota in every
    60-second window of their shared clock, and still use most of it."""
    clock_file = tmp_path / "clock"
    SharedClock.create(clock_file, START)
    env = service_env(database_url, apple_root_file)
    callers = [
        subprocess.Popen([sys.executable, "-m", "tests.support.budget_caller", database_url,
                          str(clock_file), str(QUOTA), str(CALLS)],
                         env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
        for _ in range(PROCESSES)
    ]
    try:
        for caller in callers:
            assert caller.stdout is not None
            assert caller.stdout.readline().strip() == "ready"
        for caller in callers:
            assert caller.stdin is not None
            caller.stdin.write("go\n")
            caller.stdin.flush()
        granted: list[float] = []
        for caller in callers:
            out, _ = caller.communicate(timeout=300)
            assert caller.returncode == 0
            granted.extend(json.loads(out))
    finally:
        for caller in callers:
            if caller.poll() is None:
                caller.kill()
                caller.wait()
    assert len(granted) == PROCESSES * CALLS
    assert most_in_window(granted, 60.0) <= QUOTA
    # Not starved either: the run took at most twice the time the quota itself needs.
    assert max(granted) - START <= 2 * 60.0 * len(granted) / QUOTA


def test_budget_is_one_row_that_refills(database_url: str) -> None:
    """Two limiters on one database draw from one row: what one took, the other cannot, until
    the bucket refills with time."""
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    now = [START]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    first, second = (SharedRateLimiter(sessions, "one-store", 120, 60.0, clock=lambda: now[0],
                                       sleep=sleep) for _ in range(2))
    try:
        assert first.acquire() == 0.0
        assert first.acquire() == 0.0
        waited = second.acquire()
        assert waited > 0
        assert slept == [waited]
        with sessions() as session:
            names = list(session.scalars(select(CallBudget.name)))
        assert names == ["one-store"]
    finally:
        engine.dispose()


def test_a_waiting_draw_holds_up_nobody_who_has_tokens(database_url: str) -> None:
    """A caller draws again while half a batch is still held; if that draw has to wait for the
    database (another writer holds it), the other callers go on spending the held tokens
    instead of queueing behind it."""
    engine = make_engine(database_url)
    limiter = SharedRateLimiter(make_sessionmaker(engine), "busy-store", 6000, 60.0,
                                clock=lambda: START)
    low = limiter.batch // 2
    assert low >= 2
    try:
        for _ in range(limiter.batch - low):
            assert limiter.acquire() == 0.0  # half a batch is left
        with engine.begin() as blocker:  # SQLite: the write lock; PostgreSQL: the table
            if engine.dialect.name == "postgresql":
                blocker.execute(text("LOCK TABLE call_budgets IN EXCLUSIVE MODE"))
            drawer = threading.Thread(target=limiter.acquire, daemon=True)
            drawer.start()
            deadline = time.monotonic() + 10
            while not limiter._drawing:
                assert time.monotonic() < deadline, "nobody started the next draw"
                time.sleep(0.005)
            spenders = [threading.Thread(target=limiter.acquire, daemon=True)
                        for _ in range(low)]
            for spender in spenders:
                spender.start()
            for spender in spenders:
                spender.join(5)
                assert not spender.is_alive(), "a caller with tokens waited for the draw"
            assert drawer.is_alive()  # still waiting for the database
        drawer.join(10)
        assert not drawer.is_alive()
        assert limiter.acquire() == 0.0  # the new batch arrived
    finally:
        engine.dispose()


@pytest.mark.parametrize(("quota", "window"), [(0, 60.0), (10, 0.0)])
def test_bad_budget_is_refused(database_url: str, quota: int, window: float) -> None:
    """A quota below one call or an empty window is refused when the limiter is built."""
    engine = make_engine(database_url)
    try:
        with pytest.raises(ValueError, match="quota must be at least 1"):
            SharedRateLimiter(make_sessionmaker(engine), "x", quota, window)
    finally:
        engine.dispose()
