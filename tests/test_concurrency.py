"""Several workers on one database: racing writers of one subscription lose no update."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from reconcile.models import Account, InboxEntry, Subscription, SubscriptionEvent
from reconcile.store_records import create_accounts, ensure_account
from reconcile.worker import InboxJob
from tests.support.apple_burst import story
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.server import FakeClock, RunningApp

FIXTURE = (Path(__file__).parent.parent / "fixtures" / "apple"
           / "did_change_renewal_status_auto_renew_disabled.json")


@contextmanager
def held(engine: Engine, lock: str, waiters: int) -> Iterator[None]:
    """On PostgreSQL, take `lock` and keep it until `waiters` other transactions queue on it.

    Both workers then reach the contended write before either can finish, so the race happens
    every time. SQLite serialises writers itself (BEGIN IMMEDIATE) and needs no gate.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as gate:
        gate.execute(text(lock))
        yield
        deadline = time.monotonic() + 30
        while gate.scalar(text("SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted")) < (
            waiters
        ):
            assert time.monotonic() < deadline, "the workers never reached the contended write"
            time.sleep(0.01)
        gate.rollback()


def post(app: RunningApp, ca: AppleTestCA, notification: dict[str, Any]) -> None:
    response = app.client.post(
        "/webhooks/apple", json={"signedPayload": sign_notification(ca, notification)}
    )
    assert response.status_code == 200, response.text


def race(app: RunningApp, clock: FakeClock, lock: str) -> None:
    """Two workers, one inbox entry each, run at once behind `lock`."""
    services = app.services
    jobs = [InboxJob(sessions=services.sessions, processors=services.processors,
                     owner=f"worker-{n}", batch_size=1) for n in range(2)]
    with ThreadPoolExecutor(2) as pool:
        with held(services.engine, lock, waiters=2):
            handled = [pool.submit(job.run_once, clock()) for job in jobs]
        assert [future.result(60) for future in handled] == [1, 1]


def assert_each_applied_once(app: RunningApp) -> None:
    with app.services.sessions() as session:
        inbox = list(session.scalars(select(InboxEntry).order_by(InboxEntry.id)))
        assert {(row.status, row.attempts, row.error) for row in inbox} == {
            ("processed", 1, None)
        }
        events = list(session.scalars(select(SubscriptionEvent)))
        assert sorted(e.inbox_id or 0 for e in events) == [row.id for row in inbox]
        assert session.scalar(select(func.count()).select_from(Subscription)) == 1


def test_racing_workers_create_one_subscription_with_both_updates(
    app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers applying two notifications of one new subscription at once apply both."""
    caplog.set_level(logging.INFO, logger="reconcile.worker")
    fixture: dict[str, Any] = json.loads(FIXTURE.read_text())
    for notification in (*fixture["given"], fixture["notification"]):
        post(app, apple_ca, notification)

    # Lookups pass a SHARE lock, inserts wait: both find no subscription, then both create one.
    race(app, clock, "LOCK TABLE subscriptions IN SHARE MODE")

    if app.services.engine.dialect.name == "postgresql":
        assert "raced another writer" in caplog.text  # the race really happened
    subs = app.client.get("/v1/subscriptions").json()["items"]
    assert len(subs) == 1
    assert {key: subs[0][key] for key in fixture["expected"]["subscription"]} == (
        fixture["expected"]["subscription"]
    )
    assert_each_applied_once(app)


def test_racing_workers_update_one_subscription_without_losing_either(
    app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock
) -> None:
    """Two workers updating one existing subscription at once both land, one after the other."""
    told = story(0, clock() - timedelta(days=31))
    post(app, apple_ca, told.notifications[0])
    assert app.drain() == 1
    for notification in told.notifications[1:]:
        post(app, apple_ca, notification)

    # Both queue behind the row lock; the second then works on the first one's result.
    race(app, clock, "SELECT id FROM subscriptions FOR UPDATE")

    subs = app.client.get("/v1/subscriptions").json()["items"]
    assert [{key: sub[key] for key in told.expected} for sub in subs] == [told.expected]
    assert_each_applied_once(app)


def test_racing_writers_create_one_account_without_an_error(app: RunningApp) -> None:
    """Two transactions that both find an account missing both go on: the second to insert it
    keeps the first's row. Two that create the same accounts, listed in opposite orders, do
    not deadlock. (Two `serve` processes creating a portal subscription for one new account
    once answered 500 here: a unique violation on `accounts`.)"""
    sessions = app.services.sessions
    now = datetime(2026, 12, 1, tzinfo=UTC)

    def create(account_ids: list[str]) -> str:
        with sessions() as session:
            made = ensure_account(session, "acct-a", now).account_id
            create_accounts(session, account_ids, now)
            session.commit()
            return made

    # Lookups pass a SHARE lock, inserts wait: both find the account missing, then both insert.
    with ThreadPoolExecutor(2) as pool:
        with held(app.services.engine, "LOCK TABLE accounts IN SHARE MODE", waiters=2):
            made = [pool.submit(create, order) for order in (["acct-b", "acct-c"],
                                                              ["acct-c", "acct-b"])]
        assert [future.result(60) for future in made] == ["acct-a", "acct-a"]
    with sessions() as session:
        assert sorted(session.scalars(select(Account.account_id))) == [
            "acct-a", "acct-b", "acct-c"]
