"""Drawing tokens from a shared bucket, in the caller's transaction.

A plain token bucket: the row holds at most `burst` tokens and gains `rate` a second. Tokens
are only ever taken while there are some (the level never goes below zero), and the row's time
never goes back (a caller whose clock lags is refilled nothing), so over any interval of length
L the bucket hands out at most `burst + rate * L`, whatever number of processes draw from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from reconcile.budget.models import CallBudget

# Never a wait too short to move a clock at Unix-time magnitudes.
MIN_WAIT_SECONDS = 0.001
_BUDGETS = cast(Table, CallBudget.__table__)


@dataclass(frozen=True)
class Bucket:
    name: str
    burst: float
    rate: float  # tokens a second


@dataclass(frozen=True)
class Grant:
    tokens: int  # how many were taken: 0 when the bucket was empty
    at: float  # the bucket's time of the draw (never earlier than an earlier draw's)
    wait: float  # seconds until one token is there again, when none were taken


def draw(session: Session, bucket: Bucket, want: int, now: float) -> Grant:
    """Take up to `want` tokens from `bucket` as of `now`; the row is locked until the commit."""
    row = _locked(session, bucket, now)
    if row is None:
        _create(session, bucket, now)
        row = _locked(session, bucket, now)
        assert row is not None
    tokens, updated_at = row
    at = max(now, updated_at)
    level = min(bucket.burst, tokens + (at - updated_at) * bucket.rate)
    # The epsilon: a refill computed as 0.99999... is the whole token it stands for.
    taken = min(want, int(level + 1e-9))
    level = max(0.0, level - taken)
    session.execute(update(_BUDGETS).where(_BUDGETS.c.name == bucket.name)
                    .values(tokens=level, updated_at=at))
    wait = 0.0 if taken else max(MIN_WAIT_SECONDS, (1.0 - level) / bucket.rate)
    return Grant(taken, at, wait)


def _locked(session: Session, bucket: Bucket, now: float) -> tuple[float, float] | None:
    row = session.execute(
        select(_BUDGETS.c.tokens, _BUDGETS.c.updated_at)
        .where(_BUDGETS.c.name == bucket.name).with_for_update()
    ).first()
    return None if row is None else (float(row[0]), float(row[1]))


def _create(session: Session, bucket: Bucket, now: float) -> None:
    """A full bucket, unless a concurrent first caller made it already."""
    values = {"name": bucket.name, "tokens": float(bucket.burst), "updated_at": now}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(_BUDGETS).values(values)
                    .on_conflict_do_nothing(index_elements=["name"]))
