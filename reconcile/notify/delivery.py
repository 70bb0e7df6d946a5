"""The webhook sender: delivers each (event, endpoint) delivery at least once, signed, in order.

Deliveries are claimed with a lease (plus `FOR UPDATE SKIP LOCKED`), sent outside any
transaction on a thread of a bounded pool, and their outcomes written later, in batches:
each round is one transaction that writes every outcome that came back since the last round
and claims what that freed (`reconcile.notify.claims`). A send that ends while a round runs
leaves its outcome for the next one, so under load rounds grow instead of multiplying, and
the sender's share of the database's single writer stays small. A process killed before its
outcomes are written leaves the leases behind; when they run out, any process sends those
deliveries again (at least once: receivers dedupe on `webhook-id`). Only the head of each
(endpoint, account) line is claimable: a delivery waits while an earlier one of the same
account to the same endpoint is pending, and a `failed` one no longer holds the rest back.
Each endpoint has its own cap of attempts in flight, so a slow or dead endpoint never takes
the threads other endpoints need. `run_once` never waits for a send.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

import httpx
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from reconcile.db import transaction
from reconcile.notify import claims
from reconcile.notify.claims import Attempt, Outcome

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def signature(secrets: Sequence[str], event_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` header: one `v1,<base64 HMAC>` per valid secret."""
    return " ".join(Webhook(secret).sign(event_id, timestamp, body) for secret in secrets)


@dataclass
class DeliveryJob:
    sessions: sessionmaker[Session]
    owner: str
    retry_seconds: Sequence[float]
    timeout: float = 10.0
    lease: timedelta = timedelta(seconds=60)
    concurrency: int = 64
    per_endpoint: int = 8
    clock: Clock = _utcnow
    # Receivers check `webhook-timestamp` against their own clock: it is the real time.
    wall: Clock = _utcnow
    wake: threading.Event | None = None
    transport: httpx.BaseTransport | None = None
    name: str = "webhook-delivery"
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    # One round at a time per process: each sees what the last one handed out and wrote.
    _round: threading.Lock = field(default_factory=threading.Lock, init=False)
    _in_flight: dict[int, str] = field(default_factory=dict, init=False)
    # Sends that ended, waiting for the next round to write them.
    _outcomes: list[tuple[Attempt, Outcome]] = field(default_factory=list, init=False)
    _futures: set[Future[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        # The transport without a client around it: a client's cookies, auth, redirects and
        # event hooks are unused here and cost as much as the transport itself.
        self._transport = self.transport or httpx.HTTPTransport(limits=httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency))
        self._timeouts = httpx.Timeout(self.timeout).as_dict()
        self._urls: dict[str, httpx.URL] = {}  # parsing one costs as much as a send
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook")

    def run_once(self, now: datetime) -> int:
        """Write the outcomes that came back, claim what is due and free to go, hand it to
        the pool; returns how many were handed out."""
        if not self._round.acquire(blocking=False):
            # A round is running (the worker's other jobs do not wait for it): it claims
            # what is due now, and the rounds its sends' answers start claim what comes later.
            return 0
        try:
            handed = self._run_round(now)
        finally:
            self._round.release()
        self._follow_up()
        return handed

    def wait(self, timeout: float = 30.0) -> None:
        """Until no attempt is in flight and every outcome is written, including those of
        the attempts the finished ones handed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pending = set(self._futures)
                unwritten = bool(self._outcomes)
            if pending:
                wait(pending, max(0.0, deadline - time.monotonic()))
            elif unwritten:
                with self._round:  # a round of another thread may be writing them
                    self._run_round(self.clock())
            else:
                return

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._transport.close()

    def _run_round(self, now: datetime) -> int:
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
            for attempt, _ in outcomes:
                self._in_flight.pop(attempt.delivery_id, None)
            free = self.concurrency - len(self._in_flight)
            busy = Counter(self._in_flight.values())
        if not outcomes and free <= 0:
            return 0
        with transaction(self.sessions) as session:
            if outcomes:
                claims.record(session, owner=self.owner, retry_seconds=self.retry_seconds,
                              outcomes=outcomes)
            attempts = claims.claim(
                session, owner=self.owner, now=now, lease=self.lease, free=free,
                per_endpoint=self.per_endpoint, busy=busy) if free > 0 else []
        for attempt in attempts:
            with self._lock:
                self._in_flight[attempt.delivery_id] = attempt.endpoint_id
            future = self._pool.submit(self._deliver, attempt)
            with self._lock:
                self._futures.add(future)
            future.add_done_callback(self._done)
        return len(attempts)

    def _follow_up(self) -> None:
        """Run rounds while outcomes wait and no other round runs. Whoever leaves an outcome
        and whoever ends a round calls this, so no outcome waits for the worker's next round:
        the next of an account's events goes out one round trip after the last."""
        while True:
            with self._lock:
                if not self._outcomes:
                    return
            if not self._round.acquire(blocking=False):
                return  # the round running now calls this when it ends
            try:
                self._run_round(self.clock())
            except RuntimeError:
                return  # the pool is shut down: the process is stopping
            except Exception:  # a database fault: the leases run out and they are sent again
                log.exception("writing webhook delivery outcomes failed")
                if self.wake is not None:
                    self.wake.set()
                return
            finally:
                self._round.release()

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _deliver(self, attempt: Attempt) -> None:
        try:
            outcome = self._send(attempt)
        except Exception:  # not the receiver's doing: the lease runs out and it is sent again
            log.exception("sending webhook delivery %s failed", attempt.delivery_id)
            with self._lock:
                self._in_flight.pop(attempt.delivery_id, None)
            return
        with self._lock:
            self._outcomes.append((attempt, outcome))
            answered = {a.delivery_id for a, _ in self._outcomes}
            left = sum(1 for delivery_id, endpoint_id in self._in_flight.items()
                       if endpoint_id == attempt.endpoint_id and delivery_id not in answered)
        if left <= self.per_endpoint // 2:
            # Else enough are in flight: a later answer writes this outcome with its own, one
            # round for several (or the worker's next round, if those hang).
            self._follow_up()

    def _url(self, url: str) -> httpx.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) > 1000:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    def _send(self, attempt: Attempt) -> Outcome:
        timestamp = self.wall().replace(microsecond=0)
        headers = {
            "content-type": "application/json",
            "webhook-id": attempt.event_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature(attempt.secrets, attempt.event_id, timestamp,
                                           attempt.body),
        }
        request = httpx.Request("POST", self._url(attempt.url), content=attempt.body.encode(),
                                headers=headers, extensions={"timeout": self._timeouts})
        try:
            response = self._transport.handle_request(request)
            try:
                for _ in cast(httpx.SyncByteStream, response.stream):
                    pass  # the body is not used; read to the end, the connection is reused
            finally:
                response.close()
        except httpx.TimeoutException:
            return Outcome(None, f"no answer within {self.timeout:g} s", self.clock())
        except httpx.HTTPError as error:
            return Outcome(None, f"{type(error).__name__}: {error}"[:500], self.clock())
        code = response.status_code
        return Outcome(code, None if 200 <= code < 300 else f"HTTP {code}", self.clock())
