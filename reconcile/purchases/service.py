"""Storing a verified submission: the same ingest as notifications, then the account link.

The store reads happen before this (no transaction is held while a store answers). Here, in
the caller's transaction: who holds the purchase now is checked against the transfer policy,
every outcome goes through `reconcile.ingest`, and the subscriptions and purchases it touched
are linked to the submitting account. Functions take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from reconcile.catalog.file import Catalog
from reconcile.chains import find_subscription
from reconcile.ingest import ingest, link_account
from reconcile.models import Purchase, Subscription
from reconcile.outcomes import Normalised
from reconcile.purchases.errors import OwnedElsewhere
from reconcile.state import LINKED, decode_clock
from reconcile.store_records import NO_CATALOG, link_purchase

SOURCE = "submission"
_PURCHASE = select(Purchase).where(Purchase.channel == bindparam("channel"),
                                   Purchase.store_id == bindparam("store_id"))


@dataclass(frozen=True)
class Verified:
    """What the store says about a submission, verified, in the order to apply it."""

    environment: str
    outcomes: tuple[Normalised, ...]


@dataclass(frozen=True)
class Stored:
    """What a submission touched, and which of those moved from another account."""

    subscription_ids: tuple[str, ...]
    purchase_ids: tuple[str, ...]
    transferred_from: tuple[str, ...]


def store(
    session: Session,
    verified: Verified,
    account_id: str,
    *,
    transfer: bool,
    now: datetime,
    catalog: Catalog = NO_CATALOG,
) -> Stored:
    """Ingest `verified` for `account_id`; `OwnedElsewhere` (nothing kept) when another account
    holds the purchase and `transfer` is off."""
    owners = {owner for owner in _current_owners(session, verified) if owner != account_id}
    if owners and not transfer:
        raise OwnedElsewhere(sorted(owners)[0])
    subscriptions: dict[str, Subscription] = {}
    purchases: dict[str, None] = {}
    for outcome in verified.outcomes:
        # With another owner the move is the link's to make (and to record as a transfer).
        claimed = _for_account(outcome, None if owners else account_id)
        applied = ingest(session, claimed, source=SOURCE, now=now, catalog=catalog)
        if applied.row is not None:
            subscriptions[applied.row.id] = applied.row
        if outcome.purchase is not None:
            bought = _purchase(session, outcome.purchase.channel.value,
                               outcome.purchase.store_id)
            if bought is not None:
                purchases[bought.id] = None
    for row in subscriptions.values():
        # Not in the session any more: a later outcome folded it into another subscription.
        if row in session and not _linked_to(row, account_id):
            link_account(session, row, account_id, now=now, source=SOURCE)
    for purchase_id in purchases:
        purchase = session.get(Purchase, purchase_id)
        if purchase is not None:
            link_purchase(session, purchase, account_id, now, catalog)
    return Stored(tuple(subscriptions), tuple(purchases), tuple(sorted(owners)))


def _for_account(outcome: Normalised, account_id: str | None) -> Normalised:
    """The submitting account, not the store's token, names the owner of a new purchase
    (`account_id` None: the store's facts say nothing about the owner)."""
    observation = outcome.subscription
    if observation is not None:
        fields = {k: v for k, v in observation.fields.items() if k != "account_id"}
        if account_id is not None:
            fields["account_id"] = account_id
        outcome = replace(outcome, subscription=replace(observation, fields=fields))
    if outcome.purchase is not None:
        outcome = replace(outcome, purchase=replace(outcome.purchase, account_id=account_id))
    return outcome


def _linked_to(row: Subscription, account_id: str) -> bool:
    """Already the business's link to this account: submitting again changes nothing."""
    held = decode_clock(row.clock).get("account_id")
    return row.account_id == account_id and held is not None and held.time == LINKED


def _current_owners(session: Session, verified: Verified) -> Iterator[str]:
    for outcome in verified.outcomes:
        observation = outcome.subscription
        if observation is not None:
            for store_id in (observation.store_id, *observation.linked_store_ids):
                row = find_subscription(session, observation.channel.value, store_id, lock=True)
                if row is not None and row.account_id:
                    yield row.account_id
        if outcome.purchase is not None:
            purchase = _purchase(session, outcome.purchase.channel.value,
                                 outcome.purchase.store_id)
            if purchase is not None and purchase.account_id:
                yield purchase.account_id


def _purchase(session: Session, channel: str, store_id: str) -> Purchase | None:
    return session.scalars(_PURCHASE, {"channel": channel, "store_id": store_id}).first()
