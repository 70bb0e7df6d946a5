"""Store calls we owe, sent by the worker from the durable outbox, at most once each.

An entry is claimed with a lease (plus `FOR UPDATE SKIP LOCKED` where the database has it) in
one transaction, the store is called outside any transaction, and the outcome is written in the
next one. A worker that dies after the store accepted but before that commit leaves the entry
leased; once the lease runs out the same entry is sent again with exactly the same arguments
(fixed when the entry was made), which the store treats as one request. No path makes a second,
different call for one entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from reconcile.db import transaction
from reconcile.models import OutboxEntry, Subscription
from reconcile.notify.service import track_subscription
from reconcile.worker import backoff

log = logging.getLogger(__name__)


def claim(
    session: Session,
    *,
    kind: str,
    channel: str,
    owner: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    order_by: Sequence[InstrumentedAttribute[Any]] = (),
) -> list[OutboxEntry]:
    """Lease up to `limit` due pending entries of `kind` to `owner` (caller's transaction)."""
    rows = list(
        session.scalars(
            select(OutboxEntry)
            .where(
                OutboxEntry.kind == kind,
                OutboxEntry.channel == channel,
                OutboxEntry.state == "pending",
                OutboxEntry.next_attempt_at <= now,
                or_(OutboxEntry.lease_until.is_(None), OutboxEntry.lease_until < now),
            )
            .order_by(*order_by, OutboxEntry.next_attempt_at, OutboxEntry.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        row.lease_owner = owner
        row.lease_until = now + lease
        row.attempts += 1
    return rows


def settle(row: OutboxEntry, state: str, now: datetime, error: str | None = None) -> None:
    """Give `row` its final (or waiting) state and release its lease."""
    row.state = state
    row.error = error
    row.lease_owner = None
    row.lease_until = None
    if state == "sent":
        row.sent_at = row.sent_at or now


def retry_or_fail(row: OutboxEntry, error: str, now: datetime, max_attempts: int,
                  deadline: datetime | None = None) -> None:
    """A transient failure: try again after a backoff, unless attempts or time ran out."""
    next_at = now + backoff(row.attempts)
    if row.attempts >= max_attempts or (deadline is not None and next_at >= deadline):
        settle(row, "failed", now, error)
        return
    settle(row, "pending", now, error)
    row.next_attempt_at = next_at


class PlayCancel(Protocol):
    """The one Google call this job makes: `subscriptionsv2.cancel` (see channels/google.py)."""

    def cancel(self, token: str, cancellation_type: str) -> None: ...


@dataclass
class GoogleCancelJob:
    """Sends queued Google cancellations; `sent` when Google accepted, `failed` when refused."""

    sessions: sessionmaker[Session]
    play: PlayCancel
    owner: str
    # Whether an exception from `play.cancel` means Google refused for good (400, 404, 410).
    is_permanent: Callable[[Exception], bool]
    max_attempts: int = 12
    lease: timedelta = timedelta(seconds=120)
    batch_size: int = 20
    name: str = field(default="google-cancel")

    def run_once(self, now: datetime) -> int:
        with transaction(self.sessions) as session:
            claimed = claim(session, kind="cancel", channel="google", owner=self.owner, now=now,
                            lease=self.lease, limit=self.batch_size)
            due: list[tuple[int, str, str]] = []
            for row in claimed:
                sub = session.get(Subscription, row.subscription_id or "")
                if sub is not None:
                    track_subscription(session, sub, now)
                if sub is not None and not sub.auto_renew:
                    # The store already shows renewal off (the customer was quicker, or an
                    # earlier attempt landed before a crash): nothing left to send.
                    settle(row, "confirmed", now)
                    row.confirmed_at = now
                    continue
                due.append((row.id, row.payload["token"], row.payload["cancellation_type"]))
        for entry_id, token, cancellation_type in due:
            try:
                self.play.cancel(token, cancellation_type)
            except Exception as error:
                self._failed(entry_id, error, now)
            else:
                self._sent(entry_id, now)
        return len(claimed)

    def _sent(self, entry_id: int, now: datetime) -> None:
        with transaction(self.sessions) as session:
            row = session.get(OutboxEntry, entry_id, with_for_update=True)
            # Confirmed meanwhile (the RTDN was faster than this commit): keep the later state.
            if row is not None and row.state == "pending":
                _track(session, row, now)
                settle(row, "sent", now)

    def _failed(self, entry_id: int, error: Exception, now: datetime) -> None:
        message = f"{type(error).__name__}: {error}"[:2000]
        with transaction(self.sessions) as session:
            row = session.get(OutboxEntry, entry_id, with_for_update=True)
            if row is None or row.state != "pending":
                return
            _track(session, row, now)
            if self.is_permanent(error):
                settle(row, "failed", now, f"Google Play refused the cancellation: {message}")
            else:
                log.warning("Google cancel of outbox entry %s failed, will retry: %s",
                            entry_id, message)
                retry_or_fail(row, message, now, self.max_attempts)


def _track(session: Session, entry: OutboxEntry, now: datetime) -> None:
    """A cancellation's state is part of its subscription's view: tell when it moves."""
    sub = session.get(Subscription, entry.subscription_id or "")
    if sub is not None:
        track_subscription(session, sub, now)
