"""Acknowledging Google purchases, always: Google refunds what stays unacknowledged for 3 days.

`AcknowledgementJob` acknowledges (or consumes) every purchase `ingest` queued, after the
entitlement is committed. `AcknowledgementWatchdog` finds the ones still open after a
configurable age, pulls their retry forward and says so loudly; the same count is a metric
(`reconcile_google_unacknowledged`) and is in the admin API.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from reconcile.channels.google_play import PlayClient, PlayPermanentError
from reconcile.db import transaction
from reconcile.models import Acknowledgement, Purchase
from reconcile.worker import backoff

log = logging.getLogger(__name__)

ACKNOWLEDGED = "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"


@dataclass(frozen=True)
class Due:
    store_id: str
    product_id: str
    kind: str  # subscription | product | consumable
    attempts: int


@dataclass
class AcknowledgementJob:
    """Acknowledges (consumes, for consumables) every open row, with retries and backoff."""

    sessions: sessionmaker[Session]
    play: PlayClient
    batch_size: int = 50
    lease: timedelta = timedelta(seconds=60)
    concurrency: int = 8
    name: str = "google-acknowledge"
    _pool: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency,
                                        thread_name_prefix="play-ack")

    def run_once(self, now: datetime) -> int:
        due = self._claim(now)
        if due:
            outcomes = list(self._pool.map(self._attempt, due))
            self._record(now, list(zip(due, outcomes, strict=True)))
        return len(due)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _attempt(self, item: Due) -> Exception | None:
        """Send one acknowledgement; None when Google has it, else what went wrong."""
        try:
            self._send(item)
        except Exception as error:
            if isinstance(error, PlayPermanentError) and self._already_done(item):
                return None
            log.error("acknowledging Google purchase %s (%s) failed, attempt %d: %s",
                      short(item.store_id), item.product_id, item.attempts + 1, error)
            return error
        return None

    def _claim(self, now: datetime) -> list[Due]:
        with transaction(self.sessions) as session:
            rows = list(session.scalars(
                select(Acknowledgement)
                .where(Acknowledgement.acknowledged_at.is_(None),
                       Acknowledgement.next_attempt_at <= now)
                .order_by(Acknowledgement.next_attempt_at, Acknowledgement.store_id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ))
            for row in rows:
                # Pushing the next attempt out is the lease: another worker skips the row
                # until then, and a worker that dies leaves it to be retried.
                row.next_attempt_at = now + self.lease
            return [Due(r.store_id, r.product_id, r.kind, r.attempts) for r in rows]

    def _send(self, item: Due) -> None:
        if item.kind == "subscription":
            self.play.acknowledge_subscription(item.product_id, item.store_id)
        elif item.kind == "consumable":
            self.play.consume_product(item.product_id, item.store_id)
        else:
            self.play.acknowledge_product(item.product_id, item.store_id)

    def _already_done(self, item: Due) -> bool:
        """After a 4xx, whether Google already counts the purchase as acknowledged."""
        try:
            if item.kind == "subscription":
                state = self.play.get_subscription(item.store_id).get("acknowledgementState")
                return state == ACKNOWLEDGED
            product = self.play.get_product(item.product_id, item.store_id)
        except Exception:
            return False
        if item.kind == "consumable":
            return bool(product.get("consumptionState") == 1)
        return bool(product.get("acknowledgementState") == 1)

    def _record(self, now: datetime, outcomes: list[tuple[Due, Exception | None]]) -> None:
        with transaction(self.sessions) as session:
            for item, error in outcomes:
                row = session.get(Acknowledgement, ("google", item.store_id),
                                  with_for_update=True)
                if row is None or row.acknowledged_at is not None:
                    continue
                row.attempts += 1
                if error is not None:
                    row.last_error = f"{type(error).__name__}: {error}"[:2000]
                    row.next_attempt_at = now + backoff(row.attempts)
                    continue
                row.acknowledged_at = now
                row.last_error = None
                if item.kind == "consumable":
                    session.execute(
                        update(Purchase)
                        .where(Purchase.channel == "google", Purchase.store_id == item.store_id)
                        .values(consumed=True, updated_at=now)
                    )


@dataclass
class AcknowledgementWatchdog:
    """Every `interval`, retries purchases open longer than `age` at once and logs them loudly."""

    sessions: sessionmaker[Session]
    age: timedelta
    interval: timedelta = timedelta(minutes=10)
    name: str = "google-ack-watchdog"
    _last_run: datetime | None = field(default=None, repr=False)

    def run_once(self, now: datetime) -> int:
        if self._last_run is not None and now - self._last_run < self.interval:
            return 0
        self._last_run = now
        with transaction(self.sessions) as session:
            rows = list(session.scalars(
                select(Acknowledgement).where(*stale_filter(now, self.age))
                .order_by(Acknowledgement.first_seen_at).with_for_update(skip_locked=True)
            ))
            for row in rows:
                row.next_attempt_at = now
        if rows:
            oldest = now - rows[0].first_seen_at
            log.error(
                "%d Google purchase(s) unacknowledged for over %s (oldest %s); Google refunds "
                "them 3 days after purchase. Retrying now: %s",
                len(rows), self.age, oldest,
                ", ".join(f"{short(r.store_id)} {r.product_id} ({r.last_error or 'no error'})"
                          for r in rows[:20]),
            )
        return len(rows)


def stale_filter(now: datetime, age: timedelta) -> tuple[Any, ...]:
    return (Acknowledgement.acknowledged_at.is_(None), Acknowledgement.first_seen_at < now - age)


def counts(session: Session, now: datetime, age: timedelta) -> dict[str, int]:
    """Open acknowledgements, and those open longer than `age`."""
    pending = session.scalar(select(func.count()).select_from(Acknowledgement).where(
        Acknowledgement.acknowledged_at.is_(None)))
    stale = session.scalar(select(func.count()).select_from(Acknowledgement).where(
        *stale_filter(now, age)))
    return {"pending": pending or 0, "stale": stale or 0}


def short(token: str) -> str:
    """Enough of a purchase token to find it, not enough to use it."""
    return token if len(token) <= 12 else f"{token[:8]}…"
