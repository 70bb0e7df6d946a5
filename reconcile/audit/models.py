"""The audit log's one table: append-only, one row per admin action."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from reconcile.models import Base, BigId


class AuditRecord(Base):
    """One action taken by a console user or the admin API; never updated, never deleted."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    # The console user's name, or `api` for the admin token.
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    # What the action was taken on: an account id, a subscription id, a run id.
    target: Mapped[str] = mapped_column(String(600))
    reason: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
