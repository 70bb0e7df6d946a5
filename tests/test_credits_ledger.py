"""The ledger's domain functions on a real database: transfers, invariants, append-only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.catalog.file import load_catalog
from reconcile.credits import grants, service
from reconcile.credits.models import CreditEntry
from reconcile.db import make_engine, make_sessionmaker, transaction
from reconcile.outcomes import PurchaseSeen, RefundSeen
from reconcile.state import Channel, Stamp
from reconcile.store_records import record_purchase, record_refund
from tests.support.purchases import CATALOG

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PACK = "com.example.phone.credits.500"
CATALOG_500 = load_catalog(CATALOG)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def bought(session: Session, store_id: str, account: str, quantity: int = 1) -> str:
    seen = PurchaseSeen(channel=Channel.APPLE, store_id=store_id, environment="production",
                        product_id=PACK, kind="consumable", stamp=Stamp(NOW, store_id),
                        account_id=account, quantity=quantity)
    return record_purchase(session, seen, NOW, CATALOG_500).id


def balance_is_sum(session: Session, account: str) -> int:
    """The balance row's balance, asserted equal to the sum of the account's entries."""
    total = session.scalar(select(func.coalesce(func.sum(CreditEntry.amount), 0))
                           .where(CreditEntry.account_id == account))
    balance = service.totals(session, account).balance
    assert balance == total
    return balance


def test_move_grant_moves_what_the_purchase_granted(sessions: sessionmaker[Session]) -> None:
    """A transfer claws the purchase's credits back from the old account (even below zero,
    credits used stay used) and grants them to the new one, both referencing the transfer;
    moving again moves nothing, and a later refund claws back from the new holder."""
    with transaction(sessions) as session:
        purchase_id = bought(session, "7200000000000001", "acct-old")
        service.debit(session, "acct-old", 30, "k1", None, NOW)
    with transaction(sessions) as session:
        moved = grants.move_grant(session, purchase_id_or_reference="7200000000000001",
                                   from_account="acct-old", to_account="acct-new",
                                   now=NOW + timedelta(hours=1), transfer_id="xfer_1")
        assert moved is not None
        out, into = moved
        assert (out.kind, out.amount, out.reference, out.balance_after) == (
            "clawback", -500, "xfer_1", -30)
        assert (into.kind, into.amount, into.reference, into.balance_after) == (
            "grant", 500, "xfer_1", 500)
        assert grants.move_grant(session, purchase_id_or_reference=purchase_id,
                                  from_account="acct-old", to_account="acct-new",
                                  now=NOW) is None
    with transaction(sessions) as session:
        refund = RefundSeen(channel=Channel.APPLE, refund_key="7200000000000001",
                            store_id="7200000000000001", refunded_at=NOW + timedelta(days=1),
                            stamp=Stamp(NOW + timedelta(days=1), "r"),
                            purchase_store_id="7200000000000001")
        record_refund(session, refund, NOW + timedelta(days=1), None, CATALOG_500)
        assert (balance_is_sum(session, "acct-old"), balance_is_sum(session, "acct-new")) == (
            -30, 0)


def test_move_grant_of_an_unknown_purchase_is_refused(sessions: sessionmaker[Session]) -> None:
    """A transfer naming no stored purchase raises UnknownPurchase and appends nothing."""
    with transaction(sessions) as session, pytest.raises(grants.UnknownPurchase):
        grants.move_grant(session, purchase_id_or_reference="nope", from_account="a",
                           to_account="b", now=NOW)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(CreditEntry)) == 0


def test_grant_waits_for_the_account_and_happens_once(sessions: sessionmaker[Session]) -> None:
    """A purchase first seen without an account grants nothing; when a later report names the
    account it grants once (quantity times the pack), and reports after that add nothing."""
    seen = PurchaseSeen(channel=Channel.APPLE, store_id="7200000000000002",
                        environment="production", product_id=PACK, kind="consumable",
                        stamp=Stamp(NOW, "a"), quantity=3)
    with transaction(sessions) as session:
        record_purchase(session, seen, NOW, CATALOG_500)
        assert session.scalar(select(func.count()).select_from(CreditEntry)) == 0
    for n in range(2):
        with transaction(sessions) as session:
            named = PurchaseSeen(**{**seen.__dict__, "account_id": "acct-late",
                                    "stamp": Stamp(NOW + timedelta(minutes=n + 1), "b")})
            record_purchase(session, named, NOW, CATALOG_500)
    with sessions() as session:
        assert balance_is_sum(session, "acct-late") == 1500


def test_entries_are_never_rewritten(sessions: sessionmaker[Session]) -> None:
    """Every operation only adds entries: the rows written earlier stay exactly as they were."""
    with transaction(sessions) as session:
        bought(session, "7200000000000003", "acct-a")
        service.debit(session, "acct-a", 100, "k", "note", NOW)
        service.adjust(session, "acct-a", -50, "correction", "api", NOW)
    with sessions() as session:
        before = [(e.id, e.kind, e.amount, e.balance_after, e.reference)
                  for e in session.scalars(select(CreditEntry).order_by(CreditEntry.id))]
    with transaction(sessions) as session:
        service.debit(session, "acct-a", 100, "k", "note", NOW)
        service.debit(session, "acct-a", 10, "k2", None, NOW)
        bought(session, "7200000000000003", "acct-a")
    with sessions() as session:
        after = [(e.id, e.kind, e.amount, e.balance_after, e.reference)
                 for e in session.scalars(select(CreditEntry).order_by(CreditEntry.id))]
        assert after[:len(before)] == before
        assert [e[1] for e in after[len(before):]] == ["debit"]
        assert balance_is_sum(session, "acct-a") == 340
