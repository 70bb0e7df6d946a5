"""The tables of outbound events: the events, their per-account order, the webhook endpoints
and the (event, endpoint) deliveries, and what the service last told about each entitlement."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from reconcile.models import Base, BigId, JsonDocument


class Event(Base):
    """One change the business cares about. `position` is assigned at commit, in commit order,
    so the feed can follow it without ever passing an event that commits late."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("position", name="uq_events_position"),
        Index("ix_events_account_position", "account_id", "position"),
        Index("ix_events_type_position", "type", "position"),
        Index("ix_events_subscription", "subscription_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(128))
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    subscription_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(JsonDocument)


class EventCounter(Base):
    """A counter row locked by the committing transaction: `global` hands out feed positions,
    one row per account hands out that account's sequence numbers."""

    __tablename__ = "event_counters"

    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class EntitlementMark(Base):
    """What the last entitlement event of an account said, and when that may stop being true
    by time alone (`due_at`): the sweep looks only at marks that fell due."""

    __tablename__ = "entitlement_marks"
    __table_args__ = (Index("ix_entitlement_marks_due", "due_at"),)

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    entitlement: Mapped[str] = mapped_column(String(128), primary_key=True)
    active: Mapped[bool] = mapped_column(Boolean)
    due_at: Mapped[datetime | None]
    grant: Mapped[dict[str, Any]] = mapped_column(JsonDocument)


class WebhookEndpoint(Base):
    """Where events are pushed; `previous_secret` keeps signing until `previous_until`."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str] | None] = mapped_column(JsonDocument)
    description: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_until: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Delivery(Base):
    """One event owed to one endpoint: the durable outbox of the webhook sender."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_order", "endpoint_id", "account_id", "status", "position"),
        Index("ix_webhook_deliveries_list", "endpoint_id", "position"),
        # The console's account timeline: where each of the account's events stands.
        Index("ix_webhook_deliveries_event", "event_id"),
        # What the sender claims from: an endpoint's pending deliveries in order, without the
        # delivered history in the way however long it grows (see reconcile.notify.claims).
        Index("ix_webhook_deliveries_pending", "endpoint_id", "position",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(128))
    # The event's feed position: per (endpoint, account) the order deliveries go out in.
    position: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
