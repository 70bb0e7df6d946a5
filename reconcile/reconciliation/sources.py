"""What a channel hands reconciliation: the store's truth per subscription, and sweeps.

A `TruthSource.fetch` runs on a worker thread and only talks to the store (no database), so
many run at once under the store client's rate limit. It makes its store call inside the
`calls` context it is handed, which bounds the calls in flight, and checks the answer
(signatures, normalising) after leaving it, so the next call need not wait for that work. A
store fault that outlived the client's retries comes back as `Fetched.error`: it is reported
as such and never read as drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from reconcile.models import Cursor
from reconcile.outcomes import Normalised
from reconcile.state import SubscriptionState


@dataclass(frozen=True)
class Target:
    """One subscription to check, as plain data a worker thread may hold."""

    subscription_id: str
    channel: str
    store_id: str
    environment: str
    # Our state as the page read it (the portal, whose truth is ours, judges by it).
    here: SubscriptionState | None = None


@dataclass(frozen=True)
class Fetched:
    """The store's answer for one target: its truth, "no such subscription", or a fault."""

    target: Target
    outcome: Normalised | None = None
    unknown: bool = False
    # Unknown because it ended long ago (Google forgets purchases 60 days after expiry).
    gone: bool = False
    # The store knows of a newer purchase continuing this one that we never heard of.
    missing: str | None = None
    note: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Filters:
    """Which subscriptions a run covers; none set means all of every configured channel."""

    channel: str | None = None
    account_id: str | None = None
    store_id: str | None = None

    @property
    def narrowed(self) -> bool:
        return bool(self.account_id or self.store_id)

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v is not None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Filters:
        return cls(raw.get("channel"), raw.get("account_id"), raw.get("store_id"))


@dataclass(frozen=True)
class Finding:
    """One discrepancy between our state and the store's, before anything is repaired."""

    kind: str
    channel: str
    store_id: str
    subscription_id: str | None
    here: str | None
    store: str | None


@dataclass(frozen=True)
class SweepPage:
    """One page of a sweep: store facts, faults met on the way, and where to continue."""

    items: Sequence[Any]
    token: str | None
    errors: Sequence[str] = field(default_factory=tuple)


class StoreFault(Exception):
    """The store did not answer usefully even after retries: report it, never as drift."""


class Sweep(Protocol):
    """A store-wide read done page by page (Apple notification history, Google voided purchases).

    `window` decides what this run reads (None: nothing) and is kept in the checkpoint, so a
    resumed run reads the same window; `fetch` only talks to the store (may raise StoreFault);
    `settle` runs in the page's transaction; `complete` records the high-water mark.
    """

    name: str

    def window(
        self, session: Session, filters: Filters, now: datetime
    ) -> dict[str, Any] | None: ...

    def fetch(self, window: Mapping[str, Any], token: str | None) -> SweepPage: ...

    def settle(
        self, session: Session, item: Any, *, dry_run: bool, now: datetime
    ) -> Finding | None: ...

    def complete(self, session: Session, window: Mapping[str, Any], now: datetime) -> None: ...


class TruthSource(Protocol):
    """A channel that can tell reconciliation what the store holds."""

    channel: str

    def fetch(
        self, target: Target, now: datetime, calls: AbstractContextManager[object]
    ) -> Fetched:
        """The store's truth for `target`, its store call made inside `calls`; `now` stamps
        stores whose answers carry no time."""
        ...

    def sweeps(self) -> Sequence[Sweep]: ...


def read_cursor(session: Session, name: str) -> str | None:
    """A named high-water mark (the end of the last complete history read), if any."""
    row = session.get(Cursor, name)
    return None if row is None else row.value


def write_cursor(session: Session, name: str, value: str, now: datetime) -> None:
    row = session.get(Cursor, name, with_for_update=True)
    if row is None:
        session.add(Cursor(name=name, value=value, updated_at=now))
    else:
        row.value = value
        row.updated_at = now
