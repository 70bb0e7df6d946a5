"""The console's tables: its users, their sign-in sessions, failed sign-ins, its signing key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from reconcile.models import Base, InboxEntry, Subscription


class ConsoleUser(Base):
    __tablename__ = "console_users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # viewer | agent | admin
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ConsoleSession(Base):
    """A sign-in; the cookie carries only its (signed) id, so signing out really ends it."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(64), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class SignInFailures(Base):
    """Failed sign-ins per username and per client address, for the backoff."""

    __tablename__ = "console_sign_in_failures"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime]
    blocked_until: Mapped[datetime | None]


class ConsoleSecret(Base):
    """The cookie signing key, made once per database so every process signs alike."""

    __tablename__ = "console_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


# The overview counts notifications per hour (the inbox is the largest table) and
# subscriptions by channel and status (a covering index: no table rows are read).
Index("ix_inbox_received_at", InboxEntry.received_at)
Index("ix_subscriptions_channel_status", Subscription.channel, Subscription.status)
