"""One token bucket row per store API: what every process on the database draws from."""

from __future__ import annotations

from sqlalchemy import Float, String
from sqlalchemy.orm import Mapped, mapped_column

from reconcile.models import Base


class CallBudget(Base):
    """The tokens left in a store's bucket as of `updated_at` (seconds of the callers' clock,
    Unix time in production): refilled by elapsed time when next drawn from."""

    __tablename__ = "call_budgets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
