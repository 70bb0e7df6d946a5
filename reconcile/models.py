"""The tables. Every time column is a timezone-aware UTC datetime (see `UTCDateTime`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always hands back aware datetimes, on SQLite too (which drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
# Documents: `jsonb` on PostgreSQL (compact, comparable, indexable), JSON text on SQLite.
JsonDocument: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JsonDocument}


class InboxEntry(Base):
    """A raw store notification exactly as it was accepted: the durable record of intake."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("channel", "notification_id", name="uq_inbox_channel_notification"),
        # Only pending rows are ever claimed (see InboxJob._claim): the index holds just those.
        Index("ix_inbox_due", "next_attempt_at", "id",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        Index("ix_inbox_subject", "channel", "subject"),
        # The console's overview: the oldest waiting notification per channel, failures.
        Index("ix_inbox_waiting_age", "channel", "received_at",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        Index("ix_inbox_failed", "id", postgresql_where=text("status = 'failed'"),
              sqlite_where=text("status = 'failed'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    notification_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(96))
    # Store identifier the notification is about (original transaction id, purchase token).
    subject: Mapped[str | None] = mapped_column(String(512))
    environment: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    store_time: Mapped[datetime | None]
    received_at: Mapped[datetime]
    # pending -> processed | failed | rejected
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]


class Subscription(Base):
    """The one channel-agnostic subscription state."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_account", "account_id"),
        Index("ix_subscriptions_check", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[str] = mapped_column(String(512))
    account_id: Mapped[str | None] = mapped_column(String(128))
    product_id: Mapped[str | None] = mapped_column(String(256))
    renewal_product_id: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None]
    grace_expires_at: Mapped[datetime | None]
    prepaid: Mapped[bool] = mapped_column(Boolean, default=False)
    last_event_at: Mapped[datetime | None]
    # Per-field store time of the observation that last wrote each field (see reconcile.state).
    clock: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class StoreId(Base):
    """Every store identifier that resolves to a subscription (Google token chains)."""

    __tablename__ = "store_ids"

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    created_at: Mapped[datetime]


def _row(context: DefaultExecutionContext) -> dict[str, Any]:
    """The values of the row being inserted (SQLAlchemy's context-sensitive defaults)."""
    row: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return row


def _payment_id(context: DefaultExecutionContext) -> str | None:
    """The Apple transaction id or Google order id an observation's detail names."""
    detail = _row(context).get("detail") or {}
    found = detail.get("transaction_id") or detail.get("order_id")
    return str(found)[:128] if found else None


def _refund_order_id(context: DefaultExecutionContext) -> str | None:
    """The order id part of a Google refund key (`token:order id`)."""
    key = _row(context).get("refund_key") or ""
    return key.partition(":")[2][:128] or None


class SubscriptionEvent(Base):
    """A subscription's history: every observation offered to it, applied or not."""

    __tablename__ = "subscription_events"
    __table_args__ = (Index("ix_subscription_events_payment", "payment_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    source: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(96))
    store_time: Mapped[datetime | None]
    recorded_at: Mapped[datetime]
    applied: Mapped[bool] = mapped_column(Boolean)
    inbox_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    # Derived from `detail` when the row is written, so that the console finds a renewal's
    # transaction id or order id on an index rather than by reading every document.
    payment_id: Mapped[str | None] = mapped_column(String(128), default=_payment_id)


class Purchase(Base):
    """A one-time purchase (usage credits, feature add-ons, port fees) or a store transaction."""

    __tablename__ = "purchases"
    __table_args__ = (
        UniqueConstraint("channel", "store_id", name="uq_purchases_channel_store_id"),
        Index("ix_purchases_account", "account_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[str] = mapped_column(String(512))
    account_id: Mapped[str | None] = mapped_column(String(128))
    product_id: Mapped[str] = mapped_column(String(256))
    # consumable | non_consumable | non_renewing
    kind: Mapped[str] = mapped_column(String(24))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    # Decimal amount in the currency's units, as text so no float ever touches money.
    amount: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(8))
    purchased_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16), default="purchased")  # purchased|pending|revoked
    consumed: Mapped[bool] = mapped_column(Boolean, default=False)
    clock: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Refund(Base):
    """A refund or revocation the store made anyway (Apple REFUND, Google voided purchase)."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("channel", "refund_key", name="uq_refunds_channel_key"),
        Index("ix_refunds_store_id", "store_id"),
        Index("ix_refunds_account", "account_id"),
        Index("ix_refunds_refunded_at", "refunded_at"),
        Index("ix_refunds_order_id", "order_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    # Transaction id / purchase token (+ order id) that identifies this one refund.
    refund_key: Mapped[str] = mapped_column(String(600))
    store_id: Mapped[str] = mapped_column(String(512))
    subscription_id: Mapped[str | None] = mapped_column(String(40), index=True)
    purchase_id: Mapped[str | None] = mapped_column(String(40))
    account_id: Mapped[str | None] = mapped_column(String(128))
    product_id: Mapped[str | None] = mapped_column(String(256))
    amount: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(8))
    refunded_at: Mapped[datetime]
    reversed_at: Mapped[datetime | None]
    consumption_answer_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_at: Mapped[datetime]
    # A quantity-based partial refund (Google): `quantity` units, None while not yet known.
    partial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    quantity: Mapped[int | None] = mapped_column(Integer)
    # Derived from `refund_key` when the row is written: what a customer quotes of a refund.
    order_id: Mapped[str | None] = mapped_column(String(128), default=_refund_order_id)


class Account(Base):
    """What the service knows of an account beyond its subscriptions: blocks and consent."""

    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    blocked_at: Mapped[datetime | None]
    block_reason: Mapped[str | None] = mapped_column(Text)
    consumption_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_updated_at: Mapped[datetime | None]
    # Usage-credit accounting, for consumptionPercentage (milliunits of what was bought).
    credits_purchased: Mapped[int] = mapped_column(Integer, default=0)
    credits_used: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]


class OutboxEntry(Base):
    """A store call we owe (cancel, consumption answer, acknowledgement), sent at most once."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("kind", "dedupe_key", name="uq_outbox_kind_key"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
        Index("ix_outbox_store_id", "store_id"),
        Index("ix_outbox_account", "account_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    # cancel | change_plan | consumption | acknowledge
    kind: Mapped[str] = mapped_column(String(24))
    dedupe_key: Mapped[str] = mapped_column(String(600))
    subscription_id: Mapped[str | None] = mapped_column(String(40), index=True)
    account_id: Mapped[str | None] = mapped_column(String(128))
    store_id: Mapped[str | None] = mapped_column(String(512))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    # pending | sent | customer_action_required | confirmed | failed | skipped
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    deadline_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    confirmed_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]


class Acknowledgement(Base):
    """A Google purchase that must be acknowledged (or consumed) before Google refunds it."""

    __tablename__ = "acknowledgements"
    __table_args__ = (
        # Only the purchases still owed an acknowledgement: what the overview counts.
        Index("ix_acknowledgements_waiting", "first_seen_at",
              postgresql_where=text("acknowledged_at IS NULL"),
              sqlite_where=text("acknowledged_at IS NULL")),
    )

    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(24))  # subscription | product | consumable
    first_seen_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)


class ReconciliationRun(Base):
    __tablename__ = "reconciliation_runs"
    __table_args__ = (Index("ix_reconciliation_runs_started", "started_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    dry_run: Mapped[bool] = mapped_column(Boolean)
    filters: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    checked: Mapped[int] = mapped_column(Integer, default=0)
    # Resume point: the last subscription id fully checked, per phase.
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]


class Discrepancy(Base):
    __tablename__ = "discrepancies"
    __table_args__ = (
        # Keyset pages of one run's findings, all of them or of one kind.
        Index("ix_discrepancies_run", "run_id", "id"),
        Index("ix_discrepancies_run_kind", "run_id", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("reconciliation_runs.id"))
    channel: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[str] = mapped_column(String(512))
    subscription_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(24))
    here: Mapped[str | None] = mapped_column(Text)
    store: Mapped[str | None] = mapped_column(Text)
    repaired: Mapped[bool] = mapped_column(Boolean, default=False)


class Cursor(Base):
    """Named high-water marks (last notification-history fetch, last voided-purchases read)."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


# Tables owned by domain folders, imported here so that Base.metadata holds them all.
# Plain imports, not `from ... import`: either module may be the one imported first.
import reconcile.audit.models  # noqa: E402
import reconcile.budget.models  # noqa: E402  (shared store-call budgets)
import reconcile.console.models  # noqa: E402, F401
from reconcile.credits.models import CreditBalance, CreditEntry  # noqa: E402, F401
from reconcile.notify.models import (  # noqa: E402, F401  (outbound events' tables)
    Delivery,
    EntitlementMark,
    Event,
    EventCounter,
    WebhookEndpoint,
)
