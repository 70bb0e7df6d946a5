"""One subscription's store answer: findings first, then (unless a dry run) the same ingest.

The preview compares against the page's snapshot without locking; only a subscription that
seems to differ is locked, compared again (a webhook may have landed meanwhile) and repaired by
`reconcile.ingest.ingest`, the one writer of state, so store truth can never roll back newer
state and a dry run computes exactly what a real run would change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from reconcile.ingest import as_applied, ingest, to_state
from reconcile.models import Acknowledgement, Refund, Subscription
from reconcile.outcomes import Normalised
from reconcile.reconciliation.drift import changes, describe, drift
from reconcile.reconciliation.sources import Fetched, Finding, Target
from reconcile.state import Status, SubscriptionState

ENDED = (Status.EXPIRED, Status.REVOKED)


@dataclass
class Settled:
    """What checking one subscription found and did."""

    findings: list[Finding] = field(default_factory=list)
    repaired: bool = False
    checked: bool = True
    error: str | None = None


def settle(
    session: Session, snapshot: Subscription, fetched: Fetched, *, dry_run: bool, now: datetime
) -> Settled:
    target = fetched.target
    if fetched.error is not None:
        return Settled(checked=False, error=f"{target.channel} {target.store_id}: {fetched.error}")
    here = to_state(snapshot)
    if fetched.unknown:
        if fetched.gone and here.status in ENDED:
            return Settled()  # ended here too: the store has simply forgotten it
        # Reported, never repaired: the store forgetting a subscription is for a person to judge.
        return Settled([_finding(target, "unknown_at_store", describe(here), fetched.note)])
    if fetched.missing is not None:
        return Settled([_finding(target, "missing_here", describe(here), fetched.missing)])
    outcome = fetched.outcome
    if outcome is None:
        return Settled()
    findings = preview(session, here, outcome, target)
    if dry_run or not (findings or _changes(here, outcome)):
        return Settled(findings)
    try:
        with session.begin_nested():
            row = session.get(Subscription, target.subscription_id, with_for_update=True)
            if row is None:
                return Settled()
            here = to_state(row)
            findings = preview(session, here, outcome, target)
            if not (findings or _changes(here, outcome)):
                return Settled()
            ingest(session, outcome, source="reconciliation", now=now)
            _hurry_acknowledgement(session, outcome, now)
    except SQLAlchemyError as error:
        # A concurrent writer won (version check): the next run looks again.
        return Settled(checked=False,
                       error=f"{target.channel} {target.store_id}: repair failed: "
                             f"{type(error).__name__}")
    return Settled(findings, repaired=True)


def preview(
    session: Session, here: SubscriptionState, outcome: Normalised, target: Target
) -> list[Finding]:
    """Every discrepancy `outcome` reveals against `here`, without changing anything."""
    findings = []
    if outcome.subscription is not None:
        for kind, ours, theirs in drift(here, as_applied(here, outcome.subscription)):
            findings.append(_finding(target, kind, ours, theirs))
    refund = outcome.refund
    if refund is not None and not refund.reversed:
        known = session.scalars(
            select(Refund.id).where(Refund.channel == refund.channel.value,
                                    Refund.refund_key == refund.refund_key)
        ).first()
        if known is None:
            refunded = refund.refunded_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            findings.append(_finding(target, "refund_not_known", None,
                                     f"refunded {refunded} ({refund.store_id})"))
    due = outcome.acknowledgement
    if due is not None:
        row = session.get(Acknowledgement, (target.channel, due.store_id))
        if row is None:
            ours = None
        elif row.acknowledged_at is not None:
            ours = f"acknowledged {row.acknowledged_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        else:
            ours = f"queued ({row.attempts} attempts)"
        findings.append(_finding(target, "unacknowledged", ours, "pending"))
    return findings


def _changes(here: SubscriptionState, outcome: Normalised) -> bool:
    truth = outcome.subscription
    return truth is not None and changes(here, as_applied(here, truth))


def _hurry_acknowledgement(session: Session, outcome: Normalised, now: datetime) -> None:
    """The store still waits for an acknowledgement: make it due now, even if we thought it
    done (Google refunds purchases left unacknowledged)."""
    due = outcome.acknowledgement
    if due is None:
        return
    row = session.get(Acknowledgement, ("google", due.store_id))
    if row is not None:
        row.acknowledged_at = None
        row.next_attempt_at = min(row.next_attempt_at, now)


def _finding(target: Target, kind: str, here: str | None, store: str | None) -> Finding:
    return Finding(kind, target.channel, target.store_id, target.subscription_id, here, store)
