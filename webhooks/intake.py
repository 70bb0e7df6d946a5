"""Durable intake: a verified notification is in the inbox before the store hears 2xx."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
    entry = InboxEntry(
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
    with sessions() as session:
        session.add(entry)
        try:
            session.commit()
        except IntegrityError:
            # Unique on (channel, notification id): the store sent it before.
            session.rollback()
            return False
    return True
