"""The ledger's tables: append-only entries, and one balance row per account.

The balance row holds the running totals, so reading a balance never sums entries; every entry
is written together with its balance row change, in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from reconcile.models import Base, BigId


class CreditBalance(Base):
    """An account's balance and totals, kept equal to the sums of its entries."""

    __tablename__ = "credit_balances"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    granted: Mapped[int] = mapped_column(BigInteger, default=0)
    # Positive magnitudes of debits and clawbacks; adjustments are signed.
    used: Mapped[int] = mapped_column(BigInteger, default=0)
    adjusted: Mapped[int] = mapped_column(BigInteger, default=0)
    clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class CreditEntry(Base):
    """One change of an account's credits; never updated, never deleted."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        # Grants, clawbacks and debits each carry a key naming what caused them, so a second
        # arrival of the same cause (a redelivery, a retried debit) cannot append twice.
        UniqueConstraint("account_id", "idempotency_key", name="uq_credit_entries_key"),
        Index("ix_credit_entries_account", "account_id", "id"),
        Index("ix_credit_entries_source", "source"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # grant | debit | adjustment | clawback
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str | None] = mapped_column(String(16))
    reference: Mapped[str | None] = mapped_column(String(600))
    idempotency_key: Mapped[str | None] = mapped_column(String(700))
    # The store transaction ("channel:store id") whose credits a grant or clawback moves (None
    # for debits and adjustments).
    source: Mapped[str | None] = mapped_column(String(600))
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
