"""Entitlement events: what an account may use now, against what it was last told.

Each account keeps one mark per entitlement (`EntitlementMark`): whether the last event said
active, and when that stops being true by time alone (`due_at`: the end of the paid period or
grace period that grants it). A write that touches an account compares the computed
entitlements with the marks; `EntitlementSweep` looks only at marks that fell due, so access
that ends with no store message is told once, within the sweep interval, however many
accounts there are. Both run under the account's locked sequence counter (see
`reconcile.notify.service`), so two writers never tell the same change twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, bindparam, select
from sqlalchemy.orm import Session

from reconcile.catalog.file import Catalog
from reconcile.catalog.service import Grant, grants_of
from reconcile.models import Purchase, Subscription
from reconcile.notify.models import EntitlementMark
from reconcile.views import blocked_among

# Built once: every write that touches an account runs them.
_ACCOUNTS: BindParameter[list[str]] = bindparam("accounts", expanding=True)
_SUBSCRIPTIONS = select(Subscription).where(Subscription.account_id.in_(_ACCOUNTS))
_PURCHASES = select(Purchase).where(Purchase.account_id.in_(_ACCOUNTS))
_MARKS = select(EntitlementMark).where(EntitlementMark.account_id.in_(_ACCOUNTS))


def settle(
    session: Session, catalog: Catalog, account_ids: Sequence[str], now: datetime
) -> Iterator[tuple[str, str, dict[str, Any], bool]]:
    """(account, "granted" | "revoked", the Entitlement, previously active) for each flip of
    `active` since the last event, updating the marks; accounts in the order given."""
    accounts = {"accounts": list(account_ids)}
    subscriptions: dict[str, list[Subscription]] = {a: [] for a in account_ids}
    for sub in session.scalars(_SUBSCRIPTIONS, accounts):
        subscriptions[sub.account_id or ""].append(sub)
    purchases: dict[str, list[Purchase]] = {a: [] for a in account_ids}
    for purchase in session.scalars(_PURCHASES, accounts):
        purchases[purchase.account_id or ""].append(purchase)
    blocked = blocked_among(session, account_ids)
    marks: dict[str, dict[str, EntitlementMark]] = {a: {} for a in account_ids}
    for stored in session.scalars(_MARKS, accounts):
        marks[stored.account_id][stored.entitlement] = stored
    for account_id in account_ids:
        grants = {grant.entitlement: grant for grant in grants_of(
            catalog, subscriptions[account_id], purchases[account_id],
            blocked=account_id in blocked, now=now)}
        held = marks[account_id]
        for name in sorted(set(grants) | set(held)):
            grant, mark = grants.get(name), held.get(name)
            active = grant is not None and grant.active
            was = mark is not None and mark.active
            shown = grant.json() if grant is not None else {**(mark.grant if mark else {}),
                                                            "active": False}
            due = _due(grant)
            if mark is None:
                if not active:
                    continue  # never told active: nothing to take back
                session.add(EntitlementMark(account_id=account_id, entitlement=name,
                                            active=True, due_at=due, grant=shown))
            elif (mark.active, mark.due_at, mark.grant) != (active, due, shown):
                mark.active, mark.due_at, mark.grant = active, due, shown
            if active != was:
                yield account_id, "granted" if active else "revoked", shown, was


def _due(grant: Grant | None) -> datetime | None:
    return grant.expires_at if grant is not None and grant.active else None


def due_accounts(session: Session, now: datetime, limit: int) -> list[str]:
    """Accounts with an entitlement whose end passed: the only ones a sweep looks at."""
    return list(session.scalars(
        select(EntitlementMark.account_id).where(EntitlementMark.due_at <= now)
        .group_by(EntitlementMark.account_id).order_by(EntitlementMark.account_id).limit(limit)
    ))
