"""A run's lease and checkpoint: who may advance it, and where it resumes.

Every write to a run goes through `Lease.held`, which locks the row and checks that this holder
still owns it; a holder whose lease was taken over (it was too slow, or presumed dead) can
therefore never write again, and its uncommitted page is simply done again by the new holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from reconcile.db import transaction
from reconcile.models import ReconciliationRun
from reconcile.reconciliation.sources import Filters, write_cursor

RUN_LEASE = timedelta(minutes=5)
FAILURE_SAMPLES = 20
# Per channel, when a run last checked every one of its subscriptions without a fault.
COMPLETED_CURSOR = "reconcile:completed:"


def completed_cursor(channel: str) -> str:
    return f"{COMPLETED_CURSOR}{channel}"


@dataclass(frozen=True)
class RunView:
    """A run as its current holder sees it between pages."""

    id: str
    dry_run: bool
    filters: Filters
    checkpoint: dict[str, Any]

    @property
    def phase(self) -> str | None:
        phases: list[str] = self.checkpoint["phases"]
        index: int = self.checkpoint["phase"]
        return phases[index] if index < len(phases) else None

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.checkpoint.get("state", {})
        return state


@dataclass(frozen=True)
class Lease:
    """One holder of runs; every checkpoint extends its hold by `length`."""

    owner: str
    length: timedelta = RUN_LEASE

    def claim(
        self, sessions: sessionmaker[Session], now: datetime, run_id: str | None = None
    ) -> str | None:
        """Take a running run nobody else holds (or whose holder's lease ran out)."""
        with transaction(sessions) as session:
            query = (
                select(ReconciliationRun.id)
                .where(
                    ReconciliationRun.status == "running",
                    or_(ReconciliationRun.lease_owner.is_(None),
                        ReconciliationRun.lease_owner == self.owner,
                        ReconciliationRun.lease_until < now),
                )
                .order_by(ReconciliationRun.started_at, ReconciliationRun.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if run_id is not None:
                query = query.where(ReconciliationRun.id == run_id)
            found = session.scalars(query).first()
            if found is not None:
                session.execute(
                    update(ReconciliationRun).where(ReconciliationRun.id == found)
                    .values(lease_owner=self.owner, lease_until=now + self.length)
                )
            return found

    def view(self, sessions: sessionmaker[Session], run_id: str) -> RunView | None:
        """The run, if it is running and ours."""
        with sessions() as session:
            record = session.get(ReconciliationRun, run_id)
            if record is None or record.status != "running" or record.lease_owner != self.owner:
                return None
            checkpoint = dict(record.checkpoint)
            checkpoint.setdefault("as_of", record.started_at.isoformat())
            return RunView(record.id, record.dry_run, Filters.from_json(record.filters),
                           checkpoint)

    def held(self, session: Session, run_id: str) -> ReconciliationRun | None:
        """The run, locked for this transaction, if it is running and still ours."""
        record = session.get(ReconciliationRun, run_id, with_for_update=True)
        if record is None or record.status != "running" or record.lease_owner != self.owner:
            return None
        return record

    def move(
        self,
        record: ReconciliationRun,
        state: dict[str, Any],
        now: datetime,
        *,
        errors: list[str] | None = None,
        next_phase: bool = False,
    ) -> None:
        """Record progress (the phase's resume state, store errors) and renew the lease."""
        checkpoint = dict(record.checkpoint)
        if errors:
            checkpoint["errors"] = checkpoint.get("errors", 0) + len(errors)
            checkpoint["failures"] = [*checkpoint.get("failures", []), *errors][:FAILURE_SAMPLES]
        checkpoint["state"] = state
        if next_phase:
            checkpoint["phase"] = checkpoint["phase"] + 1
        record.checkpoint = checkpoint
        record.lease_until = now + self.length

    def step(self, sessions: sessionmaker[Session], run_id: str, now: datetime) -> None:
        """Move on to the next phase."""
        with transaction(sessions) as session:
            record = self.held(session, run_id)
            if record is not None:
                self.move(record, {}, now, next_phase=True)

    def end(
        self, sessions: sessionmaker[Session], run_id: str, now: datetime,
        error: str | None = None,
    ) -> None:
        """Close the run: done when everything was checked, failed when a store fault was left
        over or `error` stopped it."""
        with transaction(sessions) as session:
            record = self.held(session, run_id)
            if record is None:
                return
            failed = error is not None or bool(record.checkpoint.get("errors"))
            record.status = "failed" if failed else "done"
            if not failed and not Filters.from_json(record.filters).narrowed:
                for channel in record.checkpoint.get("channels", []):
                    write_cursor(session, completed_cursor(channel), now.isoformat(), now)
            record.error = error[:2000] if error else None
            record.finished_at = now
            record.lease_owner = None
            record.lease_until = None
