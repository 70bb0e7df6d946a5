"""The worker job that tells access which ended (or began) by time alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from reconcile.db import transaction
from reconcile.notify.access import due_accounts
from reconcile.notify.service import touch

# Batches per sweep: a backlog larger than this is finished by the next sweep.
MAX_ROUNDS = 50


@dataclass
class EntitlementSweep:
    """Every `interval`, recomputes the accounts whose entitlement end passed (and only those):
    the commit compares them with their marks and emits `entitlement.revoked` / `granted`."""

    sessions: sessionmaker[Session]
    interval: timedelta
    batch_size: int = 200
    name: str = "entitlement-sweep"
    _next_at: datetime | None = field(default=None, init=False)

    def run_once(self, now: datetime) -> int:
        if self._next_at is not None and now < self._next_at:
            return 0
        self._next_at = now + self.interval
        handled = 0
        for _ in range(MAX_ROUNDS):
            with transaction(self.sessions) as session:
                accounts = due_accounts(session, now, self.batch_size)
                for account_id in accounts:
                    touch(session, account_id, now)
            handled += len(accounts)
            if len(accounts) < self.batch_size:
                break
        return handled
