"""Reconciling the portal: its truth is this service, so a check compares each portal
subscription with what its own dates say must be true by now.

- A period that ended without a renewal from the portal (`expires_at` passed, not moved by a
  PATCH) must be `expired`: found as `status` and repaired through `reconcile.ingest`, exactly
  what `PortalExpiryJob` records (a run finds these when that job is not running).
- Renewal still on (`auto_renew`) more than `RENEWAL_OVERDUE` after `expires_at`: the portal was
  due to renew it and never told us. Found as `missing_here`, never repaired: only the portal
  knows whether the customer paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

from reconcile.channels.portal import ENVIRONMENT
from reconcile.outcomes import Normalised
from reconcile.reconciliation.sources import Fetched, Sweep, Target
from reconcile.state import Channel, Observation, Stamp, Status, SubscriptionState

RENEWAL_OVERDUE = timedelta(days=1)
ENDED = (Status.EXPIRED, Status.REVOKED)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def after_held(here: SubscriptionState, now: datetime) -> Stamp:
    """A stamp newer than anything `here` holds, yet older than the portal's next write: ties
    at the same instant go to the portal (see `reconcile.channels.portal.record`)."""
    held = max(here.clock.values(), default=None)
    if held is None:
        return Stamp(now, "portal:")
    return Stamp(max(now, held.time), f"{held.tiebreak}~")


class PortalTruth:
    """A `TruthSource` for the portal: reads nothing, judges each subscription by its dates."""

    channel = Channel.PORTAL.value

    def fetch(
        self, target: Target, now: datetime, calls: AbstractContextManager[object]
    ) -> Fetched:
        here = target.here
        if here is None or here.expires_at is None:
            return Fetched(target)
        if here.status not in ENDED and here.expires_at <= now:
            expired = Observation(
                channel=Channel.PORTAL, store_id=target.store_id, stamp=after_held(here, now),
                kind="PORTAL_EXPIRED", environment=target.environment or ENVIRONMENT,
                fields={"status": Status.EXPIRED.value},
            )
            return Fetched(target, outcome=Normalised(kind="PORTAL_EXPIRED", subscription=expired))
        if here.auto_renew and here.expires_at + RENEWAL_OVERDUE <= now:
            return Fetched(target, missing=f"renewal due {_iso(here.expires_at)} never came "
                                           "from the portal")
        return Fetched(target)

    def sweeps(self) -> Sequence[Sweep]:
        return ()
