"""Credits from store transactions: one grant per purchase, one clawback per refund (given back
when the store reverses the refund), transfers.

Each entry is keyed by what caused it and names the store transaction (`source_of`), so a second
arrival of the same purchase or refund (a redelivery, a submission, a reconciliation read, a
rebuild of the purchases from the inbox) appends nothing. Called by the writer
(`reconcile.store_records`) in its transaction; functions never commit.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reconcile.catalog.file import Catalog
from reconcile.credits.models import CreditEntry
from reconcile.credits.service import append
from reconcile.errors import NotFound
from reconcile.ids import new_id
from reconcile.models import Purchase, Refund


class UnknownPurchase(NotFound):
    def __init__(self, reference: str) -> None:
        super().__init__(f"no purchase {reference}", reference=reference)


def source_of(purchase: Purchase) -> str:
    """The store transaction a purchase's entries name: the same after the purchases table is
    rebuilt from the inbox (purchase ids are not)."""
    return f"{purchase.channel}:{purchase.store_id}"


def grant_key(purchase: Purchase) -> str:
    return f"grant:{source_of(purchase)}"


def clawback_key(refund: Refund) -> str:
    return f"clawback:{refund.channel}:{refund.refund_key}"


def reinstate_key(refund: Refund) -> str:
    return f"reinstate:{refund.channel}:{refund.refund_key}"


def _entry(session: Session, purchase: Purchase, key: str) -> CreditEntry | None:
    return session.scalars(
        select(CreditEntry).where(CreditEntry.source == source_of(purchase),
                                  CreditEntry.idempotency_key == key)
    ).first()


def _has(session: Session, purchase: Purchase, key: str) -> bool:
    return _entry(session, purchase, key) is not None


def granted_for(session: Session, purchase: Purchase) -> int:
    """Credits the purchase's own grant gave (0 when none was made)."""
    return session.scalar(
        select(CreditEntry.amount).where(CreditEntry.source == source_of(purchase),
                                         CreditEntry.idempotency_key == grant_key(purchase))
    ) or 0


def held(session: Session, purchase: Purchase) -> dict[str, int]:
    """Credits of `purchase` each account holds now (grants less clawbacks and moves)."""
    # int(): PostgreSQL sums integers as numeric, which arrives as a Decimal.
    return {account: int(total) for account, total in session.execute(
        select(CreditEntry.account_id, func.sum(CreditEntry.amount))
        .where(CreditEntry.source == source_of(purchase))
        .group_by(CreditEntry.account_id)
    )}


def grant_purchase(
    session: Session, purchase: Purchase, catalog: Catalog, now: datetime
) -> CreditEntry | None:
    """The purchase's credits, once, when it is a confirmed credit-pack purchase of a known
    account; None when nothing is (or is yet) due."""
    per_unit = catalog.credits(purchase.product_id)
    if not per_unit or purchase.account_id is None or purchase.state != "purchased":
        return None
    key = grant_key(purchase)
    if _has(session, purchase, key):
        return None
    quantity = max(1, purchase.quantity or 1)
    return append(session, account_id=purchase.account_id, kind="grant",
                  amount=per_unit * quantity, now=now, channel=purchase.channel,
                  reference=purchase.store_id, key=key, source=source_of(purchase),
                  note=f"{quantity} x {purchase.product_id}")


def claw_back(
    session: Session, refund: Refund, purchase: Purchase, catalog: Catalog, now: datetime
) -> CreditEntry | None:
    """What `refund` takes back of the purchase's credits, once: all that is still held for a
    full refund, the refunded quantity's worth for a partial one. The balance may go below
    zero (credits already used stay used)."""
    per_unit = catalog.credits(purchase.product_id)
    if not per_unit or refund.reversed_at is not None or (refund.partial and not refund.quantity):
        return None
    key = clawback_key(refund)
    if _has(session, purchase, key):
        return None
    holders = {account: amount for account, amount in held(session, purchase).items()
               if amount > 0}
    if not holders:
        return None  # nothing was granted (yet): the grant, if it comes, is settled then
    account_id = max(holders, key=lambda account: holders[account])
    want = per_unit * (refund.quantity or 0) if refund.partial else holders[account_id]
    amount = min(want, holders[account_id])
    if amount <= 0:
        return None
    what = f"{refund.quantity} of {purchase.quantity}" if refund.partial else "all"
    return append(session, account_id=account_id, kind="clawback", amount=-amount, now=now,
                  channel=refund.channel, reference=refund.store_id, key=key,
                  source=source_of(purchase), note=f"store refund ({what} x {purchase.product_id})")


def reinstate(
    session: Session, refund: Refund, purchase: Purchase, catalog: Catalog, now: datetime
) -> CreditEntry | None:
    """A reversed refund gives back, once, what its clawback took (Apple REFUND_REVERSED:
    "reinstate what the refund revoked"), to the account it was taken from."""
    if (not catalog.credits(purchase.product_id) or refund.reversed_at is None
            or _has(session, purchase, reinstate_key(refund))):
        return None
    clawback = _entry(session, purchase, clawback_key(refund))
    if clawback is None or clawback.amount >= 0:
        return None
    return append(session, account_id=clawback.account_id, kind="grant",
                  amount=-clawback.amount, now=now, channel=refund.channel,
                  reference=refund.store_id, key=reinstate_key(refund),
                  source=source_of(purchase),
                  note=f"store refund reversed ({purchase.product_id}): credits reinstated")


def settle_refund(
    session: Session, refund: Refund, purchase: Purchase, catalog: Catalog, now: datetime
) -> CreditEntry | None:
    """The ledger's answer to one refund of the purchase: its clawback, or its reversal's
    reinstatement."""
    if refund.reversed_at is not None:
        return reinstate(session, refund, purchase, catalog, now)
    return claw_back(session, refund, purchase, catalog, now)


def settle_purchase(
    session: Session, purchase: Purchase, catalog: Catalog, now: datetime
) -> list[CreditEntry]:
    """Bring the ledger up to date with one purchase: its grant, then each refund's entry."""
    made = [grant_purchase(session, purchase, catalog, now)]
    for refund in refunds_of(session, purchase):
        made.append(settle_refund(session, refund, purchase, catalog, now))
    return [entry for entry in made if entry is not None]


def refunds_of(session: Session, purchase: Purchase) -> list[Refund]:
    return list(session.scalars(
        select(Refund).where(Refund.channel == purchase.channel,
                             Refund.store_id == purchase.store_id)
        .order_by(Refund.id)
    ))


def move_grant(
    session: Session,
    *,
    purchase_id_or_reference: str,
    from_account: str,
    to_account: str,
    now: datetime,
    transfer_id: str | None = None,
) -> tuple[CreditEntry, CreditEntry] | None:
    """A transferred purchase takes its credits along: a clawback on the old account and a
    grant on the new, both referencing the transfer. None when the old account holds none of
    them (already moved, never granted)."""
    purchase = session.get(Purchase, purchase_id_or_reference) or session.scalars(
        select(Purchase).where(Purchase.store_id == purchase_id_or_reference)
        .order_by(Purchase.created_at)
    ).first()
    if purchase is None:
        raise UnknownPurchase(purchase_id_or_reference)
    amount = held(session, purchase).get(from_account, 0)
    if amount <= 0 or from_account == to_account:
        return None
    transfer = transfer_id or new_id("xfer")
    out = append(session, account_id=from_account, kind="clawback", amount=-amount, now=now,
                 channel=purchase.channel, reference=transfer, key=f"move-out:{transfer}",
                 source=source_of(purchase),
                 note=f"purchase {purchase.store_id} transferred to {to_account}")
    into = append(session, account_id=to_account, kind="grant", amount=amount, now=now,
                  channel=purchase.channel, reference=transfer, key=f"move-in:{transfer}",
                  source=source_of(purchase),
                  note=f"purchase {purchase.store_id} transferred from {from_account}")
    assert out is not None
    assert into is not None
    return out, into
