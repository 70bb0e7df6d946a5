"""Durable intake: a verified notification is in the inbox before the store hears 2xx."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from reconcile.models import InboxEntry


@dataclass(frozen=True)
class Incoming:
    """A notification ready to be kept: raw payload plus the keys we index it by."""

    channel: str
    notification_id: str
    kind: str
    payload: str
    store_time: datetime | None = None
    subject: str | None = None
    environment: str | None = None
    status: str = "pending"
    error: str | None = None


def record(sessions: sessionmaker[Session], incoming: Incoming, now: datetime) -> bool:
    """Insert `incoming` unless its (channel, notification id) is known; True when new.

    Commits before returning, so the caller may answer 2xx: the row survives a crash.
    """
    with sessions() as session:
        session.add(_entry(incoming, now))
        try:
            session.commit()
        except IntegrityError:
            # Unique on (channel, notification id): the store sent it before.
            session.rollback()
            return False
    return True


def insert(session: Session, incoming: Incoming, now: datetime) -> bool:
    """Like `record`, inside the caller's transaction (reconciliation feeding recovered
    notifications in with its checkpoint); the caller commits. True when new."""
    if is_known(session, incoming):
        return False
    try:
        with session.begin_nested():
            session.add(_entry(incoming, now))
    except IntegrityError:
        return False
    return True


def _entry(incoming: Incoming, now: datetime) -> InboxEntry:
    return InboxEntry(
        channel=incoming.channel,
        notification_id=incoming.notification_id,
        kind=incoming.kind[:96],
        subject=incoming.subject,
        environment=incoming.environment,
        payload=incoming.payload,
        store_time=incoming.store_time,
        received_at=now,
        status=incoming.status,
        attempts=0,
        next_attempt_at=now,
        processed_at=now if incoming.status != "pending" else None,
        error=incoming.error,
    )


def is_known(session: Session, incoming: Incoming) -> bool:
    """Whether this (channel, notification id) is already in the inbox."""
    return (
        session.scalars(
            select(InboxEntry.id).where(
                InboxEntry.channel == incoming.channel,
                InboxEntry.notification_id == incoming.notification_id,
            )
        ).first()
        is not None
    )
