"""Token chains at the ingest level: newest token decides, merges, account matching, revocation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.chains import find_subscription
from reconcile.db import make_engine, make_sessionmaker, transaction
from reconcile.ingest import ingest
from reconcile.models import Refund, StoreId, Subscription, SubscriptionEvent
from reconcile.outcomes import Normalised, RefundSeen
from reconcile.state import Channel, Observation, Stamp

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LATER = T + timedelta(days=30)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def seen(token: str, at: datetime, *, linked: tuple[str, ...] = (), env: str = "production",
         **fields: Any) -> Normalised:
    values = {"status": "active", "product_id": "basic", "auto_renew": True,
              "expires_at": LATER, "account_id": "acct-1", **fields}
    return Normalised(kind="SUBSCRIPTION_PURCHASED", subscription=Observation(
        channel=Channel.GOOGLE, store_id=token, stamp=Stamp(at, token), kind="test",
        environment=env, fields=values, linked_store_ids=linked))


def apply_all(sessions: sessionmaker[Session], *outcomes: Normalised) -> None:
    for outcome in outcomes:
        with transaction(sessions) as session:
            ingest(session, outcome, source="google", now=T)


def subscriptions(sessions: sessionmaker[Session]) -> list[tuple[str, str, list[str]]]:
    """(store_id, status, store_ids) of every subscription, by store_id."""
    with sessions() as session:
        rows = list(session.scalars(select(Subscription).order_by(Subscription.store_id)))
        return [(row.store_id, row.status, sorted(session.scalars(
            select(StoreId.store_id).where(StoreId.subscription_id == row.id)))) for row in rows]


def test_newer_token_wins_even_when_read_earlier(sessions: sessionmaker[Session]) -> None:
    """A worker that lost a race applies B's earlier read after A's later one: B still decides."""
    apply_all(sessions,
              seen("A", T + timedelta(minutes=5), status="expired", auto_renew=False),
              seen("B", T, linked=("A",), product_id="premium"))
    with sessions() as session:
        row = find_subscription(session, "google", "A")
        assert row is not None
        assert (row.store_id, row.status, row.product_id) == ("B", "active", "premium")


def test_older_token_never_overrides(sessions: sessionmaker[Session]) -> None:
    """News about a replaced token, however fresh, leaves the subscription as B says."""
    apply_all(sessions,
              seen("A", T),
              seen("B", T + timedelta(minutes=1), linked=("A",), product_id="premium"),
              seen("A", T + timedelta(minutes=9), status="expired", auto_renew=False))
    assert subscriptions(sessions) == [("B", "active", ["A", "B"])]


def test_out_of_order_chain_is_merged_with_its_history(sessions: sessionmaker[Session]) -> None:
    """C before A before B: the subscription A started is folded into C's, refunds and all."""
    with transaction(sessions) as session:
        ingest(session, seen("C", T, linked=("B",), product_id="yearly"), source="google", now=T)
    with transaction(sessions) as session:
        ingest(session, Normalised(
            kind="VOIDED_PURCHASE", subscription=seen("A", T).subscription,
            refund=RefundSeen(channel=Channel.GOOGLE, refund_key="A:GPA.1", store_id="A",
                              refunded_at=T, stamp=Stamp(T, "A"), subscription_store_id="A")),
            source="google", now=T)
    assert len(subscriptions(sessions)) == 2
    apply_all(sessions, seen("B", T + timedelta(minutes=2), linked=("A",), status="expired"))
    assert subscriptions(sessions) == [("C", "active", ["A", "B", "C"])]
    with sessions() as session:
        [survivor] = session.scalars(select(Subscription)).all()
        assert survivor.product_id == "yearly"
        assert {r.subscription_id for r in session.scalars(select(Refund))} == {survivor.id}
        kinds = [e.kind for e in session.scalars(
            select(SubscriptionEvent).where(SubscriptionEvent.subscription_id == survivor.id))]
        assert kinds.count("merged") == 1
        assert len(kinds) == 4


def test_resubscribe_after_expiry_matches_the_account(sessions: sessionmaker[Session]) -> None:
    """An unlinked new token continues the account's ended subscription in its environment."""
    apply_all(sessions,
              seen("A", T, status="expired", auto_renew=False),
              seen("S", T + timedelta(minutes=1), env="sandbox"),
              seen("C", T + timedelta(minutes=2)))
    assert subscriptions(sessions) == [("C", "active", ["A", "C"]), ("S", "active", ["S"])]


def test_no_account_match_while_running_or_without_account(
    sessions: sessionmaker[Session],
) -> None:
    """A second running subscription, or one without an account id, starts its own."""
    apply_all(sessions,
              seen("A", T),
              seen("B", T + timedelta(minutes=1)),
              seen("X", T + timedelta(minutes=2), status="expired", account_id="acct-9"),
              seen("Y", T + timedelta(minutes=3), account_id=None))
    assert [s[0] for s in subscriptions(sessions)] == ["A", "B", "X", "Y"]


def test_revoked_period_stays_revoked(sessions: sessionmaker[Session]) -> None:
    """For the same expiry, later reads do not rename a revoked period; a new period does."""
    apply_all(sessions,
              seen("A", T),
              seen("A", T + timedelta(minutes=1), status="revoked", auto_renew=False),
              seen("A", T + timedelta(minutes=2), status="expired", auto_renew=False),
              seen("A", T + timedelta(minutes=3), status="active"))
    assert subscriptions(sessions) == [("A", "revoked", ["A"])]
    apply_all(sessions, seen("A", T + timedelta(minutes=4), expires_at=LATER + timedelta(days=30)))
    assert subscriptions(sessions) == [("A", "active", ["A"])]
