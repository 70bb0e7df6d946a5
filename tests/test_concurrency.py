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

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from reconcile.console.models import SignInFailures
from reconcile.console.service import sign_in
from reconcile.db import transaction
from reconcile.models import (
    Account,
    InboxEntry,
    Purchase,
    ReconciliationRun,
    Subscription,
    SubscriptionEvent,
)
from reconcile.reconciliation.job import ReconcileJob
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


def test_two_first_failed_sign_ins_at_once_both_count(app: RunningApp) -> None:
    """Two wrong passwords for one name from one address at the same moment, with no failure
    on record yet: neither answers an error and both count toward the backoff."""
    sessions = app.services.sessions
    now = datetime(2026, 12, 1, tzinfo=UTC)

    def fail() -> bool:
        with transaction(sessions) as session:
            return sign_in(session, "mallory", "guess", "10.0.0.9", now, 8).session is None

    with ThreadPoolExecutor(2) as pool:
        with held(app.services.engine, "LOCK TABLE console_sign_in_failures IN SHARE MODE",
                  waiters=2):
            tried = [pool.submit(fail) for _ in range(2)]
        assert [future.result(60) for future in tried] == [True, True]
    with sessions() as session:
        counted = {row.key: row.failures for row in session.scalars(select(SignInFailures))}
    assert counted == {"user:mallory": 2, "ip:10.0.0.9": 2}


def test_two_workers_scheduling_the_same_run_start_one(recon_app: RunningApp) -> None:
    """The scheduled reconciliation comes due in two processes' workers at once: one run."""
    services = recon_app.services
    job = ReconcileJob(reconciler=services.reconciler, interval=timedelta(hours=1))
    start = datetime(2026, 12, 1, tzinfo=UTC)
    first = job.schedule(start, timedelta(hours=1))
    assert first is not None
    with transaction(services.sessions) as session:
        session.execute(text("UPDATE reconciliation_runs SET status = 'done'"))
    due = start + timedelta(hours=2)
    # FOR UPDATE passes a SHARE lock, the cursor's UPDATE waits: both have read it by then.
    with ThreadPoolExecutor(2) as pool:
        with held(services.engine, "LOCK TABLE cursors IN SHARE MODE", waiters=2):
            scheduled = [pool.submit(job.schedule, due, timedelta(hours=1)) for _ in range(2)]
        started = [future.result(60) for future in scheduled]
    assert len([run_id for run_id in started if run_id is not None]) == 1, started
    with services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 2


def _post_twice_at_once(app: RunningApp, lock: str, path: str,
                        body: dict[str, Any]) -> list[httpx.Response]:
    """The same request from two clients at once, both held at their INSERT behind `lock`."""
    def post() -> httpx.Response:
        with httpx.Client(base_url=app.url, headers=app.client.headers, timeout=60) as client:
            return client.post(path, json=body)

    with ThreadPoolExecutor(2) as pool:
        with held(app.services.engine, lock, waiters=2):
            posted = [pool.submit(post) for _ in range(2)]
        return [future.result(60) for future in posted]


def test_one_portal_purchase_posted_twice_at_once_is_recorded_once(app: RunningApp) -> None:
    """A portal backend's retry racing its first try: one 201, one 200 with the same purchase
    (never a 500), one purchase recorded."""
    body = {"account_id": "acct-race", "product_id": "credits.500", "reference": "web-1",
            "quantity": 1}
    answers = _post_twice_at_once(app, "LOCK TABLE purchases IN SHARE MODE",
                                  "/v1/portal/purchases", body)
    assert sorted(a.status_code for a in answers) == [200, 201], [a.text for a in answers]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    with app.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Purchase)) == 1


def test_one_portal_subscription_created_twice_at_once_is_a_conflict(app: RunningApp) -> None:
    """Two creates of one portal store id at once: one 201, one 409 naming it (never a 500)."""
    body = {"account_id": "acct-race", "product_id": "portal.pro.monthly",
            "store_id": "portal-race-1", "expires_at": "2030-01-01T00:00:00Z",
            "auto_renew": True}
    answers = _post_twice_at_once(app, "LOCK TABLE store_ids IN SHARE MODE",
                                  "/v1/portal/subscriptions", body)
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    with app.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 1
