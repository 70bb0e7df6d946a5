"""The credits ledger: every change of an account's credits is one appended entry.

`append` is the one writer: it moves the account's balance row (a single UPDATE, so two
servers debiting at once are serialised by the row) and adds the entry with `balance_after`,
in the caller's transaction. Debits are idempotent on the caller's key; grants and clawbacks
from store transactions are in `reconcile.credits.grants`. Functions take the caller's session
and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reconcile.credits.models import CreditBalance, CreditEntry
from reconcile.errors import DomainError, Invalid
from reconcile.models import Account

KINDS = ("grant", "debit", "adjustment", "clawback")
# Which running total of the balance row each kind moves (debits and clawbacks by magnitude).
TOTALS = {"grant": "granted", "debit": "used", "adjustment": "adjusted", "clawback": "clawed_back"}
_BALANCES = cast(Table, CreditBalance.__table__)


class CreditsRefused(DomainError):
    """A debit that cannot be made; nothing was debited. Answered `{"detail", "balance"}`."""

    status_code = 409
    code = "credits_refused"

    def __init__(self, message: str, account_id: str, balance: int) -> None:
        super().__init__(message, account_id=account_id, balance=balance)
        self.balance = balance


@dataclass(frozen=True)
class Totals:
    """An account's balance and what made it, read from its balance row (never summed)."""

    account_id: str
    balance: int = 0
    granted: int = 0
    used: int = 0
    adjusted: int = 0
    clawed_back: int = 0

    def json(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "balance": self.balance, "granted": self.granted,
                "used": self.used, "adjusted": self.adjusted, "clawed_back": self.clawed_back}


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def entry_json(entry: CreditEntry) -> dict[str, Any]:
    """The contract's ledger entry (also what a `credits.*` event carries)."""
    return {
        "id": f"cre_{entry.id}",
        "kind": entry.kind,
        "amount": entry.amount,
        "balance_after": entry.balance_after,
        "channel": entry.channel,
        "reference": entry.reference,
        "note": entry.note,
        "created_at": iso(entry.created_at),
    }


_TOTALS = (
    select(_BALANCES.c.balance, _BALANCES.c.granted, _BALANCES.c.used, _BALANCES.c.adjusted,
           _BALANCES.c.clawed_back)
    .where(_BALANCES.c.account_id == bindparam("account_id"))
)


def totals(session: Session, account_id: str) -> Totals:
    # Columns, not the entity: `append` moves the row with a Core UPDATE, which an object
    # already loaded in this session would not see.
    row = session.execute(_TOTALS, {"account_id": account_id}).first()
    if row is None:
        return Totals(account_id)
    return Totals(account_id, *row)


# The event each kind of entry is told to the business as, in the entry's transaction.
EVENT_TYPES = {"grant": "credits.granted", "debit": "credits.debited",
               "adjustment": "credits.adjusted", "clawback": "credits.clawed_back"}


def append(
    session: Session,
    *,
    account_id: str,
    kind: str,
    amount: int,
    now: datetime,
    channel: str | None = None,
    reference: str | None = None,
    key: str | None = None,
    source: str | None = None,
    note: str | None = None,
    actor: str | None = None,
    covered: bool = False,
) -> CreditEntry | None:
    """Append one entry and move the balance with it: the only writer of the ledger.

    With `covered` the entry is made only if the balance covers it (a debit), decided by the
    UPDATE's own condition, so concurrent debits cannot overdraw; None when it does not.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown ledger entry kind {kind!r}")
    # Whole credits: a sum computed by PostgreSQL arrives as a Decimal.
    amount = int(amount)
    if not covered:
        _ensure_balance(session, account_id, now)
    total = TOTALS[kind]
    change = abs(amount) if kind in ("debit", "clawback") else amount
    statement = (
        update(_BALANCES)
        .where(_BALANCES.c.account_id == account_id)
        .values({"balance": _BALANCES.c.balance + amount,
                 total: _BALANCES.c[total] + change, "updated_at": now})
        .returning(_BALANCES.c.balance)
    )
    if covered:
        statement = statement.where(_BALANCES.c.balance + amount >= 0)
    balance_after = session.execute(statement).scalar_one_or_none()
    if balance_after is None:
        return None
    entry = CreditEntry(
        account_id=account_id, kind=kind, amount=amount, balance_after=balance_after,
        channel=channel, reference=reference, idempotency_key=key, source=source,
        note=note, actor=actor, created_at=now,
    )
    session.add(entry)
    session.flush()
    # Imported here: the events writer reads the account view, which reads balances here.
    from reconcile.notify.service import emit

    emit(session, type=EVENT_TYPES[kind], account_id=account_id,
         data={"entry": entry_json(entry)}, now=now)
    return entry


# Text, compiled once (SQLAlchemy 2.0 cannot cache a compiled `on_conflict_do_nothing`);
# SQLite and PostgreSQL both read it.
_CREATE_BALANCE = text(
    "INSERT INTO credit_balances (account_id, balance, granted, used, adjusted, clawed_back,"
    " updated_at) VALUES (:account_id, 0, 0, 0, 0, 0, :updated_at)"
    " ON CONFLICT (account_id) DO NOTHING"
).bindparams(bindparam("updated_at", type_=_BALANCES.c.updated_at.type))


def _ensure_balance(session: Session, account_id: str, now: datetime) -> None:
    """The account's balance row, created at zero if missing (a concurrent creator wins)."""
    session.execute(_CREATE_BALANCE, {"account_id": account_id, "updated_at": now})


def _keyed(session: Session, account_id: str, key: str) -> CreditEntry | None:
    return session.scalars(
        select(CreditEntry).where(CreditEntry.account_id == account_id,
                                  CreditEntry.idempotency_key == key)
    ).first()


# Debits and adjustments


def debit(
    session: Session, account_id: str, amount: int, idempotency_key: str, note: str | None,
    now: datetime,
) -> tuple[CreditEntry, bool]:
    """Take `amount` credits once per key: (the entry, True) the first time, (the same entry,
    False) for the key again. `CreditsRefused` when blocked or the balance is too low."""
    if amount <= 0:
        raise Invalid("amount must be a positive number of credits", account_id=account_id)
    key = f"debit:{idempotency_key}"
    found = _keyed(session, account_id, key)
    if found is None:
        blocked = session.scalar(select(Account.blocked_at).where(
            Account.account_id == account_id))
        if blocked is not None:
            raise CreditsRefused(f"account {account_id} is blocked: no credits may be used",
                                 account_id, totals(session, account_id).balance)
        try:
            with session.begin_nested():
                entry = append(session, account_id=account_id, kind="debit", amount=-amount,
                               now=now, reference=idempotency_key, key=key, note=note,
                               covered=True)
        except IntegrityError:
            # The same key, debited concurrently by another request that committed first.
            found = _keyed(session, account_id, key)
            if found is None:
                raise
        else:
            if entry is None:
                balance = totals(session, account_id).balance
                raise CreditsRefused(f"balance {balance} does not cover {amount} credits",
                                     account_id, balance)
            return entry, True
    if found.amount != -amount:
        raise Invalid(f"idempotency key {idempotency_key!r} was used for a debit of "
                      f"{-found.amount}, not {amount}", account_id=account_id)
    return found, False


def adjust(
    session: Session, account_id: str, amount: int, note: str, actor: str, now: datetime
) -> CreditEntry:
    """An admin's signed correction, with the note saying why (required)."""
    if amount == 0:
        raise Invalid("an adjustment must change the balance (amount 0)", account_id=account_id)
    if not note.strip():
        raise Invalid("an adjustment needs a note saying why", account_id=account_id)
    entry = append(session, account_id=account_id, kind="adjustment", amount=amount, now=now,
                   reference=None, note=note, actor=actor)
    assert entry is not None
    return entry


# Reading


def entries(
    session: Session, account_id: str, *, before: int | None, limit: int
) -> list[CreditEntry]:
    """The account's entries, newest first, from just below entry id `before`."""
    query = select(CreditEntry).where(CreditEntry.account_id == account_id)
    if before is not None:
        query = query.where(CreditEntry.id < before)
    return list(session.scalars(query.order_by(CreditEntry.id.desc()).limit(limit)))


def below_zero(session: Session) -> int:
    """How many accounts owe credits (a store refunded credits they had already used)."""
    return session.scalar(
        select(func.count()).select_from(_BALANCES).where(_BALANCES.c.balance < 0)
    ) or 0

