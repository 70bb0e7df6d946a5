"""The webhook sender: delivers each (event, endpoint) delivery at least once, signed, in order.

A delivery is claimed with a lease (plus `FOR UPDATE SKIP LOCKED`) in one transaction, sent
outside any transaction on a thread of a bounded pool, and its outcome written in the next
one. A process killed mid-send leaves the lease behind; when it runs out, any process sends
the delivery again (at least once: receivers dedupe on `webhook-id`). Only the head of each
(endpoint, account) line is claimable: a delivery waits while an earlier one of the same
account to the same endpoint is pending, and a `failed` one no longer holds the rest back.
Each endpoint has its own cap of attempts in flight, so a slow or dead endpoint never takes
the threads other endpoints need. `run_once` never waits for a send.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session, aliased, sessionmaker
from standardwebhooks.webhooks import Webhook

from reconcile.db import transaction
from reconcile.notify.endpoints import signing_secrets
from reconcile.notify.models import Delivery, Event, WebhookEndpoint
from reconcile.notify.service import event_json

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Attempt:
    """Everything one send needs, read in the claiming transaction."""

    delivery_id: int
    endpoint_id: str
    event_id: str
    url: str
    body: str
    secrets: tuple[str, ...]
    attempts: int


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


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
    # One claim at a time per process: each sees what the last one handed out.
    _claiming: threading.Lock = field(default_factory=threading.Lock, init=False)
    _in_flight: dict[int, str] = field(default_factory=dict, init=False)
    _futures: set[Future[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            timeout=self.timeout, transport=self.transport, follow_redirects=False,
            limits=httpx.Limits(max_connections=self.concurrency,
                                max_keepalive_connections=self.concurrency),
        )
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook")

    def run_once(self, now: datetime) -> int:
        """Claim what is due and free to go, hand it to the pool; returns how many."""
        with self._claiming:
            return self._hand_out(now)

    def _hand_out(self, now: datetime) -> int:
        with self._lock:
            free = self.concurrency - len(self._in_flight)
            busy: dict[str, int] = {}
            for endpoint_id in self._in_flight.values():
                busy[endpoint_id] = busy.get(endpoint_id, 0) + 1
        if free <= 0:
            return 0
        attempts = self._claim(now, free, busy)
        for attempt in attempts:
            with self._lock:
                self._in_flight[attempt.delivery_id] = attempt.endpoint_id
            future = self._pool.submit(self._deliver, attempt)
            with self._lock:
                self._futures.add(future)
            future.add_done_callback(self._done)
        return len(attempts)

    def wait(self, timeout: float = 30.0) -> None:
        """Until no attempt is in flight, including those the finished ones handed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                pending = set(self._futures)
            if not pending:
                return
            wait(pending, max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _claim(self, now: datetime, free: int, busy: dict[str, int]) -> list[Attempt]:
        with transaction(self.sessions) as session:
            endpoints = list(session.scalars(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.enabled.is_(True),
                    WebhookEndpoint.id.in_(
                        select(Delivery.endpoint_id).where(*self._due(now)).distinct())
                ).order_by(WebhookEndpoint.id)
            ))
            claimed: list[Attempt] = []
            for endpoint in endpoints:
                room = min(self.per_endpoint - busy.get(endpoint.id, 0), free - len(claimed))
                if room <= 0:
                    continue
                claimed.extend(self._claim_for(session, endpoint, now, room))
            return claimed

    def _due(self, now: datetime) -> tuple[ColumnElement[bool], ...]:
        return (Delivery.status == "pending", Delivery.next_attempt_at <= now,
                or_(Delivery.lease_until.is_(None), Delivery.lease_until < now))

    def _claim_for(self, session: Session, endpoint: WebhookEndpoint, now: datetime,
                   limit: int) -> list[Attempt]:
        earlier = aliased(Delivery)
        rows = list(session.execute(
            select(Delivery, Event)
            .join(Event, Event.id == Delivery.event_id)
            .where(
                Delivery.endpoint_id == endpoint.id, *self._due(now),
                ~exists().where(and_(
                    earlier.endpoint_id == Delivery.endpoint_id,
                    earlier.account_id == Delivery.account_id,
                    earlier.status == "pending",
                    earlier.position < Delivery.position,
                )),
            )
            .order_by(Delivery.position)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Delivery)
        ).tuples())
        keys = tuple(signing_secrets(endpoint, now))
        attempts = []
        for delivery, event in rows:
            delivery.lease_owner = self.owner
            delivery.lease_until = now + self.lease
            delivery.attempts += 1
            body = json.dumps(event_json(event), separators=(",", ":"))
            attempts.append(Attempt(delivery.id, endpoint.id, event.id, endpoint.url, body, keys,
                                    delivery.attempts))
        return attempts

    def _deliver(self, attempt: Attempt) -> None:
        try:
            outcome = self._send(attempt)
            self._record(attempt, outcome)
        except Exception:  # a database fault: the lease runs out and it is sent again
            log.exception("recording webhook delivery %s failed", attempt.delivery_id)
        finally:
            with self._lock:
                self._in_flight.pop(attempt.delivery_id, None)
                left = sum(1 for e in self._in_flight.values() if e == attempt.endpoint_id)
        if left > self.per_endpoint // 2:
            return  # enough in flight: refill in batches, one claim for several attempts
        # The next of this account's events (and whatever else is due) goes at once, not on
        # the worker's next round: one account's events go out one round trip apart.
        try:
            self.run_once(self.clock())
        except RuntimeError:
            pass  # the pool is shut down: the process is stopping
        except Exception:
            log.exception("claiming webhook deliveries failed")
            if self.wake is not None:
                self.wake.set()

    def _send(self, attempt: Attempt) -> Outcome:
        timestamp = self.wall().replace(microsecond=0)
        headers = {
            "content-type": "application/json",
            "webhook-id": attempt.event_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signature(attempt.secrets, attempt.event_id, timestamp,
                                           attempt.body),
        }
        try:
            response = self._client.post(attempt.url, content=attempt.body.encode(),
                                         headers=headers)
        except httpx.TimeoutException:
            return Outcome(None, f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as error:
            return Outcome(None, f"{type(error).__name__}: {error}"[:500])
        if 200 <= response.status_code < 300:
            return Outcome(response.status_code, None)
        return Outcome(response.status_code, f"HTTP {response.status_code}")

    def _record(self, attempt: Attempt, outcome: Outcome) -> None:
        now = self.clock()
        with transaction(self.sessions) as session:
            row = session.get(Delivery, attempt.delivery_id, with_for_update=True)
            if row is None or row.status != "pending" or row.lease_owner != self.owner:
                return  # deleted, or our lease ran out and another sender took it
            row.lease_owner = None
            row.lease_until = None
            row.last_status_code = outcome.status_code
            row.last_error = outcome.error
            if outcome.delivered:
                row.status = "delivered"
                row.delivered_at = now
                row.next_attempt_at = None
                return
            gone = outcome.status_code == 410
            if gone:
                endpoint = session.get(WebhookEndpoint, attempt.endpoint_id,
                                       with_for_update=True)
                if endpoint is not None:
                    endpoint.enabled = False
                    endpoint.disabled_reason = "the endpoint answered 410 Gone"
                    endpoint.updated_at = now
            if gone or row.attempts > len(self.retry_seconds):
                row.status = "failed"
                row.next_attempt_at = None
            else:
                row.next_attempt_at = now + timedelta(
                    seconds=self.retry_seconds[row.attempts - 1])
            # No secret and no body: the event id, the endpoint and what went wrong.
            log.warning(
                "webhook delivery of event %s to endpoint %s failed (attempt %d): %s; %s",
                attempt.event_id, attempt.endpoint_id, row.attempts, outcome.error,
                "given up" if row.status == "failed" else f"next at {row.next_attempt_at}",
            )
