"""The outbox's statements: claim the heads of the (endpoint, account) lines that are due, and
write what the attempts came to. Both run in the sender's one transaction per round, Core
statements over the rows' ids (no ORM object per delivery), so a round that records a
hundred outcomes and hands out a hundred attempts costs a handful of statements.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from reconcile.notify.endpoints import signing_secrets
from reconcile.notify.models import Delivery, Event, WebhookEndpoint
from reconcile.notify.service import event_json

log = logging.getLogger("reconcile.notify.delivery")

# Core, not the ORM: executemany over ids, not a bulk update by primary key.
_DELIVERIES = cast(Table, Delivery.__table__)
_COLUMNS = _DELIVERIES.c


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
    """What one send came to, and when it ended (the time its row records)."""

    status_code: int | None
    error: str | None
    at: datetime

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# Built once: a round runs them with new values, no expression built per round. `pending` is
# written out, as in the partial index `ix_webhook_deliveries_pending`, so that it is used.
_PENDING = Delivery.status == literal_column("'pending'")
# The due time inside an expression: SQLite would otherwise read every due row of every
# endpoint through `ix_webhook_deliveries_due` and sort them, not the endpoint's in order.
_DUE = (_PENDING,
        func.coalesce(Delivery.next_attempt_at, Delivery.next_attempt_at) <= bindparam("b_now"),
        or_(Delivery.lease_until.is_(None), Delivery.lease_until < bindparam("b_now")))
_ENDPOINTS = select(WebhookEndpoint).where(
    WebhookEndpoint.enabled.is_(True),
    select(Delivery.id).where(Delivery.endpoint_id == WebhookEndpoint.id, *_DUE)
    .exists(),
).order_by(WebhookEndpoint.id)
_EARLIER = aliased(Delivery)
_HEADS = (
    # The event's columns under their own names: a row reads as the event (`event_json`).
    select(Delivery.id.label("delivery_id"), Delivery.attempts.label("delivery_attempts"),
           Event.id, Event.type, Event.created_at, Event.account_id, Event.sequence, Event.data)
    .join(Event, Event.id == Delivery.event_id)
    .where(
        Delivery.endpoint_id == bindparam("b_endpoint"), *_DUE,
        # Only the head of its (endpoint, account) line: per-account order.
        ~exists().where(and_(
            _EARLIER.endpoint_id == Delivery.endpoint_id,
            _EARLIER.account_id == Delivery.account_id,
            _EARLIER.status == literal_column("'pending'"),
            _EARLIER.position < Delivery.position,
        )),
    )
    .order_by(Delivery.position)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True, of=_DELIVERIES)
)
_LEASE = (
    update(_DELIVERIES).where(_COLUMNS.id.in_(bindparam("b_ids", expanding=True)))
    .values(lease_owner=bindparam("b_owner"), lease_until=bindparam("b_until"),
            attempts=_COLUMNS.attempts + 1)
)


def claim(session: Session, *, owner: str, now: datetime, lease: timedelta, free: int,
          per_endpoint: int, busy: Mapping[str, int]) -> list[Attempt]:
    """Lease up to `free` due heads of their lines, at most `per_endpoint` in flight for each
    endpoint counting the `busy` ones, oldest first."""
    endpoints = list(session.scalars(_ENDPOINTS, {"b_now": now}))
    claimed: list[Attempt] = []
    for endpoint in endpoints:
        room = min(per_endpoint - busy.get(endpoint.id, 0), free - len(claimed))
        if room > 0:
            claimed.extend(_claim_for(session, endpoint, owner, now, lease, room))
    return claimed


def _claim_for(session: Session, endpoint: WebhookEndpoint, owner: str, now: datetime,
               lease: timedelta, limit: int) -> list[Attempt]:
    connection = session.connection()  # Core rows: no ORM object per delivery
    rows = connection.execute(
        _HEADS, {"b_endpoint": endpoint.id, "b_now": now, "b_limit": limit}).all()
    if not rows:
        return []
    connection.execute(_LEASE, {"b_ids": [row.delivery_id for row in rows],
                                "b_owner": owner, "b_until": now + lease})
    keys = tuple(signing_secrets(endpoint, now))
    return [
        Attempt(row.delivery_id, endpoint.id, row.id, endpoint.url,
                json.dumps(event_json(row), separators=(",", ":")), keys,
                row.delivery_attempts + 1)
        for row in rows
    ]


# Still ours: not deleted, not retried by hand and claimed again since, lease not taken over.
_OURS = (_COLUMNS.id == bindparam("b_id"), _COLUMNS.status == "pending",
         _COLUMNS.lease_owner == bindparam("b_owner"),
         _COLUMNS.attempts == bindparam("b_attempts"))
_DELIVERED = update(_DELIVERIES).where(*_OURS).values(
    status="delivered", delivered_at=bindparam("b_at"), next_attempt_at=None,
    last_status_code=bindparam("b_code"), last_error=None, lease_owner=None, lease_until=None,
)
_NOT_DELIVERED = update(_DELIVERIES).where(*_OURS).values(
    status=bindparam("b_status"), next_attempt_at=bindparam("b_next"),
    last_status_code=bindparam("b_code"), last_error=bindparam("b_error"), lease_owner=None,
    lease_until=None,
)


def record(session: Session, *, owner: str, retry_seconds: Sequence[float],
           outcomes: Sequence[tuple[Attempt, Outcome]]) -> None:
    """Write the outcomes of `owner`'s attempts: delivered, due again later, or failed."""
    delivered = [{"b_id": attempt.delivery_id, "b_attempts": attempt.attempts,
                  "b_owner": owner, "b_code": outcome.status_code, "b_at": outcome.at}
                 for attempt, outcome in outcomes if outcome.delivered]
    if delivered:
        session.connection().execute(_DELIVERED, delivered)
    for attempt, outcome in outcomes:
        if not outcome.delivered:
            _failed(session, owner, retry_seconds, attempt, outcome)


def _failed(session: Session, owner: str, retry_seconds: Sequence[float], attempt: Attempt,
            outcome: Outcome) -> None:
    gone = outcome.status_code == 410
    final = gone or attempt.attempts > len(retry_seconds)
    next_at = None if final else outcome.at + timedelta(
        seconds=retry_seconds[attempt.attempts - 1])
    written = session.connection().execute(_NOT_DELIVERED, {
        "b_id": attempt.delivery_id, "b_attempts": attempt.attempts, "b_owner": owner,
        "b_status": "failed" if final else "pending", "b_next": next_at,
        "b_code": outcome.status_code, "b_error": outcome.error,
    })
    if not written.rowcount:
        return  # deleted, retried by hand, or our lease ran out and another sender took it
    if gone:
        session.connection().execute(
            update(WebhookEndpoint).where(WebhookEndpoint.id == attempt.endpoint_id).values(
                enabled=False, disabled_reason="the endpoint answered 410 Gone",
                updated_at=outcome.at,
            ).execution_options(synchronize_session=False)
        )
    # No secret and no body: the event id, the endpoint and what went wrong.
    log.warning(
        "webhook delivery of event %s to endpoint %s failed (attempt %d): %s; %s",
        attempt.event_id, attempt.endpoint_id, attempt.attempts, outcome.error,
        "given up" if final else f"next at {next_at}",
    )
