"""The worker's side of reconciliation: carry on runs (API-started or orphaned), and schedule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from reconcile.db import transaction
from reconcile.errors import StoreNotConfigured
from reconcile.models import Cursor, ReconciliationRun
from reconcile.reconciliation.runner import Reconciler
from reconcile.reconciliation.sources import Filters, write_cursor

SCHEDULE_CURSOR = "reconcile:schedule"


@dataclass
class ReconcileJob:
    """Advances one claimable run a few pages per round, so the inbox keeps flowing beside it;
    with an interval, also starts a full run when the last scheduled one is that old."""

    reconciler: Reconciler
    interval: timedelta | None = None
    pages_per_round: int = 3
    name: str = "reconcile"

    def run_once(self, now: datetime) -> int:
        run_id = self.reconciler.claim(now)
        if run_id is None and self.interval is not None:
            run_id = self.schedule(now, self.interval)
        if run_id is None:
            return 0
        # A round that only moved between phases still counts, so `drain` keeps going.
        return max(1, self.reconciler.advance(run_id, lambda: now,
                                              max_pages=self.pages_per_round))

    def schedule(self, now: datetime, interval: timedelta) -> str | None:
        """Start (and claim) a scheduled full run if one is due and none is running."""
        try:
            with transaction(self.reconciler.sessions) as session:
                # Locked before anything is read: a second process scheduling at the same
                # moment waits here, then sees the run this one started and leaves it.
                held = session.get(Cursor, SCHEDULE_CURSOR, with_for_update=True)
                last = None if held is None else held.value
                if last is not None and datetime.fromisoformat(last) + interval > now:
                    return None
                running = session.scalars(
                    select(ReconciliationRun.id).where(ReconciliationRun.status == "running")
                ).first()
                if running is not None:
                    return None
                write_cursor(session, SCHEDULE_CURSOR, now.isoformat(), now)
                run = self.reconciler.start(session, Filters(), dry_run=False, now=now,
                                            claim=True)
                return run.id
        except StoreNotConfigured:
            return None
        except IntegrityError:
            return None  # another worker scheduled the same run first
