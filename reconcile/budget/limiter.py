"""A store-call limiter whose quota holds for every process on one database together.

Each process draws tokens from the store's bucket row (reconcile.budget.service) a few at a
time, one short transaction per batch, and spends them locally; a batch not spent within
`HOLD_SECONDS` of its draw is dropped. So every call happens within HOLD_SECONDS of the draw
that paid for it, and the calls in any `window` fall within draws in a span of
`window + HOLD_SECONDS`, which the bucket keeps at most `burst + rate * span`. The refill rate
spreads the rest of the quota over `window + HOLD_SECONDS + MARGIN_SECONDS`: the margin absorbs
the time between a token leaving `acquire` and the request reaching the store, and small clock
differences between hosts.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from reconcile.budget.service import Bucket, Grant, draw
from reconcile.db import transaction

HOLD_SECONDS = 1.0
MARGIN_SECONDS = 1.0
# A batch is about this long at the full rate: fewer draws, and little dropped when idle.
BATCH_SECONDS = 0.25


class SharedRateLimiter:
    """At most `quota` acquisitions in any `window` seconds across every process drawing from
    bucket `name` of the database behind `sessions`; the `RateLimiter` interface."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        name: str,
        quota: int,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if quota < 1 or window <= 0:
            raise ValueError("quota must be at least 1 and window positive")
        self.sessions = sessions
        self.quota = quota
        self.window = window
        burst = max(1, math.floor(quota / window))
        rate = max(quota - burst, 1) / (window + HOLD_SECONDS + MARGIN_SECONDS)
        self.bucket = Bucket(name, float(burst), rate)
        self.batch = max(1, min(burst, math.ceil(rate * BATCH_SECONDS)))
        self.clock = clock
        self.sleep = sleep
        self._low = self.batch // 2  # draw again when this few are held
        self._batches: deque[tuple[int, float]] = deque()  # (tokens, spend them by)
        self._drawing = False
        self._ready = threading.Condition()

    def acquire(self) -> float:
        """Wait for a slot; answers the seconds waited.

        One caller at a time draws, outside the lock, and it draws again while half a batch is
        still held: the others keep spending those tokens, so a draw that waits (on SQLite,
        for another transaction's commit) holds nobody up. A token is checked against its
        batch's hold at the last clock reading before `acquire` returns.
        """
        waited = 0.0
        while True:
            with self._ready:
                while True:
                    now = self.clock()
                    while self._batches and now > self._batches[0][1]:
                        self._batches.popleft()
                    held = sum(tokens for tokens, _ in self._batches)
                    if not self._drawing and held <= self._low:
                        self._drawing = True
                        break
                    if held:
                        tokens, until = self._batches[0]
                        if tokens == 1:
                            self._batches.popleft()
                        else:
                            self._batches[0] = (tokens - 1, until)
                        return waited
                    self._ready.wait()
            grant: Grant | None = None
            try:
                with transaction(self.sessions) as session:
                    grant = draw(session, self.bucket, self.batch, self.clock())
                if not grant.tokens:
                    self.sleep(grant.wait)  # still the drawer: nobody else polls meanwhile
                    waited += grant.wait
            finally:
                with self._ready:
                    self._drawing = False
                    if grant is not None and grant.tokens:
                        self._batches.append((grant.tokens, grant.at + HOLD_SECONDS))
                    self._ready.notify_all()
