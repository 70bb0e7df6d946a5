"""Account-wide policy: acceptable-use blocks, port-out, consent to share consumption data.
Nothing here refunds anything (credits are the ledger's, `reconcile.credits`).

A block ends access at once (every subscription's and purchase's `entitled` reads the block,
see `reconcile.views`) and stops renewal on every channel; unblocking restores access to what
is still paid for, but renewals stay cancelled. Functions take the caller's session.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from reconcile.cancellation import Canceller, Reason, cancel_all
from reconcile.errors import UnknownAccount
from reconcile.models import Account, Purchase, Subscription
from reconcile.notify.service import emit, touch
from reconcile.store_records import ensure_account
from reconcile.views import iso


def known_account(session: Session, account_id: str, now: datetime) -> Account:
    """The account row, created if the service knows the account from a subscription or a
    purchase; `UnknownAccount` when it knows nothing of it (a typo must not block anyone)."""
    row = session.get(Account, account_id, with_for_update=True)
    if row is not None:
        return row
    known = session.scalars(
        select(Subscription.id).where(Subscription.account_id == account_id).limit(1)
    ).first() or session.scalars(
        select(Purchase.id).where(Purchase.account_id == account_id).limit(1)
    ).first()
    if known is None:
        raise UnknownAccount(account_id)
    return ensure_account(session, account_id, now)


def subscriptions_of(session: Session, account_id: str) -> list[Subscription]:
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.account_id == account_id)
            .order_by(Subscription.created_at, Subscription.id)
            .with_for_update()
        )
    )


def cancel_account(
    session: Session,
    account_id: str,
    reason: Reason,
    note: str | None,
    now: datetime,
    cancellers: Mapping[str, Canceller],
) -> None:
    """Stop renewal of every subscription of the account, each on its own channel."""
    known_account(session, account_id, now)
    cancel_all(session, subscriptions_of(session, account_id), reason, note, now, cancellers)


def block(
    session: Session,
    account_id: str,
    reason: str,
    now: datetime,
    cancellers: Mapping[str, Canceller],
) -> None:
    """Acceptable-use block: access ends now, renewals are cancelled, nothing is refunded.

    Blocking a blocked account keeps the first block's time and reason."""
    account = known_account(session, account_id, now)
    if account.blocked_at is None:
        account.blocked_at = now
        account.block_reason = reason
        account.updated_at = now
        emit(session, type="account.blocked", account_id=account_id,
             data=account_data(account), now=now)
        touch(session, account_id, now)
    cancel_all(session, subscriptions_of(session, account_id), "policy_block", reason, now,
               cancellers)


def unblock(session: Session, account_id: str, now: datetime) -> None:
    """Access returns for whatever paid period still runs; cancelled renewals stay cancelled."""
    account = known_account(session, account_id, now)
    if account.blocked_at is not None:
        account.blocked_at = None
        account.block_reason = None
        account.updated_at = now
        emit(session, type="account.unblocked", account_id=account_id,
             data=account_data(account), now=now)
        touch(session, account_id, now)


def port_out(
    session: Session,
    account_id: str,
    note: str | None,
    now: datetime,
    cancellers: Mapping[str, Canceller],
) -> None:
    """The customer takes the number elsewhere: renewal stops everywhere, access runs on to
    the end of what is paid, nothing is refunded."""
    cancel_account(session, account_id, "port_out", note, now, cancellers)
    emit(session, type="account.ported_out", account_id=account_id,
         data={**account_data(known_account(session, account_id, now)), "note": note}, now=now)


def account_data(account: Account) -> dict[str, object]:
    """What an `account.*` event carries."""
    return {"account": {
        "account_id": account.account_id,
        "blocked": None if account.blocked_at is None
        else {"at": iso(account.blocked_at), "reason": account.block_reason},
    }}


def set_consent(session: Session, account_id: str, consented: bool, now: datetime) -> None:
    """Whether Apple may be sent this account's consumption data (the app asks the customer).

    Consent may be recorded before the first purchase, so an unknown account is created."""
    account = ensure_account(session, account_id, now)
    if account.consumption_consent != consented:
        account.consumption_consent = consented
        account.consent_updated_at = now
        account.updated_at = now
