"""How much of one credit pack is used, first in first out, for Apple's consumption answers.

Credits come in as lots (each grant, each positive adjustment) in ledger order; debits and
negative adjustments use the oldest lot first; a clawback removes what is left of its own
pack. Apple asks rarely (a customer's refund request), so walking the account's entries
once is fine here; balances never do this.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from reconcile.credits.grants import grant_key, source_of
from reconcile.credits.models import CreditEntry
from reconcile.models import Purchase

# Apple's consumptionPercentage is in milliunits: 100% = 100000.
WHOLE = 100_000


@dataclass
class _Lot:
    source: str | None
    size: int
    left: int
    own: bool  # the pack's original grant (not a transfer's)


def used_share(session: Session, purchase: Purchase) -> int | None:
    """Milliunits of the purchase's credits already used; None when it granted no credits."""
    key = grant_key(purchase)
    granted = session.scalars(
        select(CreditEntry).where(CreditEntry.source == source_of(purchase),
                                  CreditEntry.idempotency_key == key)
    ).first()
    if granted is None or granted.amount <= 0:
        return None
    lots: list[_Lot] = []
    rows = session.execute(
        select(CreditEntry.kind, CreditEntry.amount, CreditEntry.source,
               CreditEntry.idempotency_key)
        .where(CreditEntry.account_id == granted.account_id)
        .order_by(CreditEntry.id)
        .execution_options(yield_per=1000)
    )
    for kind, amount, source, entry_key in rows:
        if amount > 0:
            lots.append(_Lot(source, amount, amount, own=entry_key == key))
        elif kind == "clawback" and source is not None:
            _remove(lots, source, -amount)
        else:
            _use(lots, -amount)
    pack = source_of(purchase)
    used = sum(lot.size - lot.left for lot in lots if lot.source == pack and lot.own)
    return min(WHOLE, max(0, used * WHOLE // granted.amount))


def _use(lots: list[_Lot], amount: int) -> None:
    for lot in lots:
        if amount <= 0:
            return
        taken = min(lot.left, amount)
        lot.left -= taken
        amount -= taken


def _remove(lots: list[_Lot], source: str, amount: int) -> None:
    """A clawback takes back the pack's unused credits; they were never used, so they are
    neither used nor available afterwards (the lot shrinks)."""
    for lot in reversed(lots):
        if amount <= 0:
            return
        if lot.source == source:
            taken = min(lot.left, amount)
            lot.left -= taken
            lot.size -= taken
            amount -= taken
