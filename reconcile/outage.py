"""Riding out a database outage: which errors mean "the database cannot be reached", and a
watch that logs an outage once when it begins and once when it ends, and says how long the
background loops should wait before trying again (exponential, capped, with jitter).

Everything that meets the database's absence reports to the one watch of its process (the
worker, the webhooks' intake, `/metrics`), so an outage is one pair of log lines however many
requests and loops ran into it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from reconcile.db import is_conflict

log = logging.getLogger(__name__)

# SQLSTATE classes of a database that is not there: connection exception, insufficient
# resources (too many connections), operator intervention (shutdown, starting up).
_UNAVAILABLE_CLASSES = ("08", "53", "57")
# SQLite's words for a file it cannot use now (a lock held past the busy timeout included).
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error",
                       "database or disk is full")

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0


def is_unavailable(error: BaseException) -> bool:
    """True when `error` says the database cannot be reached or used now (not a bug, not a
    race with another writer): retrying later, unchanged, is the remedy."""
    if isinstance(error, PoolTimeout):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError | InterfaceError) or is_conflict(error):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)  # psycopg 3; None before a connection
    if sqlstate is not None:
        return str(sqlstate)[:2] in _UNAVAILABLE_CLASSES
    if type(error.orig).__module__.startswith("sqlite3"):
        message = str(error.orig).lower()
        return any(words in message for words in _SQLITE_UNAVAILABLE)
    return True


def describe(error: BaseException) -> str:
    """One short line naming the fault (the driver's first line, no SQL, no parameters)."""
    cause = error.orig if isinstance(error, DBAPIError) else error
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}"[:300]


class Backoff:
    """How long one loop waits after each consecutive failure: `first` doubling up to `cap`,
    each wait drawn between 50% and 100% of that (jitter: processes that lost the database
    together do not all come back in the same instant)."""

    def __init__(
        self,
        *,
        first: float = BACKOFF_FIRST,
        cap: float = BACKOFF_CAP,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.first = first
        self.cap = cap
        self._jitter = jitter
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.first * 2.0 ** (self.failures - 1))
        return float(ceiling * (0.5 + self._jitter() / 2))

    def reset(self) -> None:
        self.failures = 0


class DatabaseWatch:
    """Whether this process can reach its database, and since when it cannot: the one place
    an outage is logged, once as it begins and once as it ends."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_failure = float("-inf")

    @property
    def up(self) -> bool:
        return self._down_since is None

    def now(self) -> float:
        """When an attempt starts, for `succeeded`."""
        return self._monotonic()

    def failed(self, error: BaseException) -> None:
        """Record that the database could not be reached (logged when an outage begins)."""
        with self._lock:
            self._last_failure = self._monotonic()
            if self._down_since is not None:
                return
            self._down_since = self._last_failure
        log.error("database unavailable (%s); retrying with backoff until it is back",
                  describe(error))

    def succeeded(self, started: float) -> None:
        """Record that an attempt begun at `started` (see `now`) reached the database; ends an
        outage (logged with its length) unless the attempt began before the latest failure: a
        commit already under way as the server went down proves nothing about now."""
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None or started <= self._last_failure:
                return
            away = self._monotonic() - self._down_since
            self._down_since = None
        log.warning("database available again after %.1f s", away)
