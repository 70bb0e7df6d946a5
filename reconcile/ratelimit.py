"""A thread-safe token bucket sized so no 60-second window ever holds more than the quota."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class RateLimiter:
    """At most `per_minute` acquisitions in any 60-second window, shared by every thread.

    A plain bucket of `per_minute` tokens refilled at `per_minute / 60` allows up to twice the
    quota in one window (a full bucket plus a minute of refill). Here the bucket holds a small
    burst and refills at the rest of the quota spread over a slightly longer window, so
    burst + refill over any window stays under the quota even with request jitter.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.burst = max(1, per_minute // 60)
        self.rate = max(per_minute - self.burst, 1) / (WINDOW_SECONDS + 1.0)
        self.clock = clock
        self.sleep = sleep
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a slot; answers the seconds waited."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            # Taking a token below zero reserves the next free slot, so waiters queue fairly
            # without holding the lock while they sleep.
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if wait > 0:
            self.sleep(wait)
        return wait
