"""Client-side rate limiting for outbound store calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class CallLimiter(Protocol):
    """What store clients ask before each call: blocks until it may be made."""

    def acquire(self) -> float: ...


class TokenBucket:
    """At most `rate` calls per `per` seconds (with bursts up to `burst`), shared by threads."""

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or per <= 0:
            raise ValueError("rate and period must be positive")
        self.fill_per_second = rate / per
        self.capacity = burst if burst is not None else max(1.0, min(rate, self.fill_per_second))
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a call may be made; answers the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(
                    self.capacity, self._tokens + (now - self._updated) * self.fill_per_second
                )
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                wait = (1 - self._tokens) / self.fill_per_second
            self._sleep(wait)
            waited += wait


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
