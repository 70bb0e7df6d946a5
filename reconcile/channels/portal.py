"""The company's own web billing: a channel whose truth is this service.

Portal changes are observations like any store's (channel `portal`, stamped now) and go through
`reconcile.ingest`, so there is still one writer of subscription state. A portal period that
runs out without a renewal (`expires_at` moved by a PATCH) is expired: `status_at` says so and
`PortalExpiryJob` records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.db import transaction
from reconcile.ingest import apply_observation
from reconcile.models import Subscription, SubscriptionEvent
from reconcile.state import Channel, Observation, Stamp, Status

ENVIRONMENT = "production"


def status_at(expires_at: datetime | None, now: datetime) -> Status:
    """A portal subscription is active while its paid period runs, expired after."""
    return Status.ACTIVE if expires_at is None or now < expires_at else Status.EXPIRED


def create(session: Session, store_id: str, fields: Mapping[str, Any], now: datetime) -> str:
    """A new portal subscription from `fields`; returns its id."""
    values = dict(fields)
    values.setdefault("renewal_product_id", values.get("product_id"))
    values.update(status=status_at(values.get("expires_at"), now).value, prepaid=False,
                  grace_expires_at=None)
    applied = apply_observation(
        session, _observation(store_id, values, "PORTAL_CREATED", Stamp(now, _tiebreak(0))),
        source="portal", now=now,
    )
    assert applied.subscription_id is not None
    return applied.subscription_id


def update(session: Session, row: Subscription, fields: Mapping[str, Any], now: datetime) -> None:
    """Apply an admin PATCH: a later `expires_at` is a renewal, which starts a waiting plan."""
    values = dict(fields)
    if "product_id" in values:
        # Setting the product outright replaces any plan change that was waiting.
        values["renewal_product_id"] = values["product_id"]
    elif "expires_at" in values and _renews(row, values["expires_at"]):
        values["product_id"] = row.renewal_product_id or row.product_id
    if "expires_at" in values:
        values["status"] = status_at(values["expires_at"], now).value
    record(session, row, values, "PORTAL_UPDATED", now)


def record(
    session: Session, row: Subscription, fields: Mapping[str, Any], kind: str, now: datetime
) -> None:
    """Write `fields` of portal subscription `row` as an observation made now."""
    # The newest portal write must win even within one clock tick (or if the clock stepped
    # back): stamp no earlier than what is held, tie-broken by a per-subscription sequence.
    held = max((Stamp.decode(raw) for raw in (row.clock or {}).values()), default=None)
    time = now if held is None else max(now, held.time)
    sequence = session.scalar(
        select(func.count()).select_from(SubscriptionEvent)
        .where(SubscriptionEvent.subscription_id == row.id)
    ) or 0
    observation = _observation(row.store_id, fields, kind, Stamp(time, _tiebreak(sequence)))
    apply_observation(session, observation, source="portal", now=now)


def _renews(row: Subscription, expires_at: datetime | None) -> bool:
    return expires_at is not None and (row.expires_at is None or expires_at > row.expires_at)


def _tiebreak(sequence: int) -> str:
    return f"portal:{sequence:012d}"


def _observation(
    store_id: str, fields: Mapping[str, Any], kind: str, stamp: Stamp
) -> Observation:
    return Observation(channel=Channel.PORTAL, store_id=store_id, stamp=stamp, kind=kind,
                       environment=ENVIRONMENT, fields=dict(fields))


@dataclass
class PortalExpiryJob:
    """Records `expired` for portal subscriptions whose paid period ran out unrenewed."""

    sessions: sessionmaker[Session]
    batch_size: int = 100
    name: str = "portal-expiry"

    def run_once(self, now: datetime) -> int:
        with transaction(self.sessions) as session:
            rows = list(session.scalars(
                select(Subscription)
                .where(Subscription.channel == Channel.PORTAL.value,
                       Subscription.status == Status.ACTIVE.value,
                       Subscription.expires_at <= now)
                .order_by(Subscription.expires_at)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ))
            for row in rows:
                record(session, row, {"status": Status.EXPIRED.value}, "PORTAL_EXPIRED", now)
            return len(rows)
