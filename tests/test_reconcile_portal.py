"""Reconciling the portal checks its subscriptions' dates; the age metric is per channel."""

from __future__ import annotations

import gc
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event

from reconcile import heap
from reconcile.config import Settings
from reconcile.db import transaction
from reconcile.reconciliation.sources import Fetched, Filters
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN
from tests.fakes.appstore import FakeAppStore
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_truth import reconcile, store_has, subscribe
from tests.support.server import FakeClock, RunningApp, serve_in_thread


def portal_subscription(app: RunningApp, clock: FakeClock, **fields: Any) -> dict[str, Any]:
    body = {"account_id": "acct-portal", "product_id": "web.monthly", "auto_renew": True,
            "expires_at": (clock.advance(seconds=0).replace(microsecond=0)
                           .strftime("%Y-%m-%dT%H:%M:%SZ")), **fields}
    created = app.client.post("/v1/portal/subscriptions", json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


def run_portal(app: RunningApp, clock: FakeClock, *, dry_run: bool) -> dict[str, Any]:
    """A portal-only run carried out here, without the worker's other jobs (whose portal
    expiry job would otherwise have expired the subscription first)."""
    reconciler = app.services.reconciler
    with transaction(app.services.sessions) as session:
        run_id = reconciler.start(session, Filters("portal"), dry_run=dry_run, now=clock(),
                                  claim=True).id
    reconciler.advance(run_id, clock)
    return dict(app.client.get(f"/v1/reconciliations/{run_id}").json())


def test_a_portal_period_that_ended_unrenewed_is_found_and_repaired(
    app: RunningApp, clock: FakeClock
) -> None:
    """A portal subscription still active after its period ended is reported as `status`
    (a dry run changes nothing), repaired to expired by a real run; renewal left on for more
    than a day after expiry is then reported as `missing_here`, never repaired."""
    sub = portal_subscription(app, clock, expires_at="2026-11-02T12:00:00Z")
    untouched = portal_subscription(app, clock, expires_at="2026-12-20T12:00:00Z",
                                    account_id="acct-later")
    clock.advance(days=2, minutes=1)
    dry = run_portal(app, clock, dry_run=True)
    assert (dry["status"], dry["checked"]) == ("done", 2)
    assert [(d["subscription_id"], d["kind"], d["here"], d["store"], d["repaired"])
            for d in dry["discrepancies"]] == [(sub["id"], "status", "active", "expired", False)]
    assert app.client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "active"

    real = run_portal(app, clock, dry_run=False)
    # Repaired in the run's first phase (periods ending soon), the subscription is no longer
    # urgent and the second phase looks at it again: renewal is overdue too.
    assert [(d["kind"], d["repaired"]) for d in real["discrepancies"]] == [
        ("status", True), ("missing_here", False)]
    after = app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert (after["status"], after["entitled"]) == ("expired", False)

    overdue = run_portal(app, clock, dry_run=False)
    [finding] = overdue["discrepancies"]
    assert (finding["subscription_id"], finding["kind"], finding["repaired"]) == (
        sub["id"], "missing_here", False)
    assert "renewal due 2026-11-02T12:00:00Z" in finding["store"]
    assert app.client.get(f"/v1/subscriptions/{untouched['id']}").json()["status"] == "active"

    renewed = app.client.patch(f"/v1/portal/subscriptions/{sub['id']}",
                               json={"expires_at": "2026-12-04T12:00:00Z"})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["status"] == "active"  # the portal's write wins over the repair
    assert run_portal(app, clock, dry_run=True)["discrepancies"] == []


def ages(app: RunningApp) -> dict[str, float]:
    text = app.client.get("/metrics").text
    return {channel: float(value) for channel, value in re.findall(
        r'^reconcile_reconciliation_age_seconds\{channel="(\w+)"\} (\S+)$', text, re.M)}


def test_one_channels_runs_never_hide_anothers_failures(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore, clock: FakeClock
) -> None:
    """The age metric is per channel: after a complete run, a failing Apple run and a fine
    portal run move only the portal's age; narrowed runs move nothing."""
    subscribe(recon_app, apple_ca, "7901")
    store_has(fake_appstore, "7901")
    assert reconcile(recon_app)["status"] == "done"
    clock.advance(minutes=10)
    assert ages(recon_app) == {"apple": 600.0, "portal": 600.0}
    assert reconcile(recon_app, store_id="7901", dry_run=True)["status"] == "done"
    fake_appstore.fail_next("/inApps/v1/", 401, times=20)
    assert reconcile(recon_app)["status"] == "failed"
    assert reconcile(recon_app, channel="portal")["status"] == "done"
    clock.advance(minutes=1)
    assert ages(recon_app) == {"apple": 660.0, "portal": 60.0}


def test_pages_are_read_along_the_primary_key(app: RunningApp, clock: FakeClock) -> None:
    """Every page of a run reads subscriptions in key order, never by sorting all that match:
    with an index on (channel, status) usable, SQLite sorted the whole table for each page
    (half a second a page at a million subscriptions). Pages and the run's count are read by
    the WAL reader, not under the write lock of the connections that settle them. Checked on
    the plans of the statements the run itself sent."""
    engine, reader = app.services.engine, app.services.reader
    if engine.dialect.name != "sqlite":
        pytest.skip("the plan checked is SQLite's; PostgreSQL plans by cost")
    assert reader is not None
    assert reader is not engine
    for n in range(3):
        portal_subscription(app, clock, account_id=f"acct-{n}",
                            expires_at=f"2026-12-0{n + 2}T12:00:00Z")
    sent: dict[str, list[tuple[str, Any]]] = {"writer": [], "reader": []}

    def watch(name: str) -> Any:
        def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if statement.lstrip().startswith("SELECT") and "FROM subscriptions" in statement:
                sent[name].append((statement, parameters))
        return seen

    watchers = {"writer": (engine, watch("writer")), "reader": (reader, watch("reader"))}
    for target, seen in watchers.values():
        event.listen(target, "before_cursor_execute", seen)
    try:
        report = run_portal(app, clock, dry_run=True)
    finally:
        for target, seen in watchers.values():
            event.remove(target, "before_cursor_execute", seen)
    assert report["checked"] == 3
    assert not [s for s, _ in sent["writer"] if "ORDER BY" in s or "count(" in s], sent["writer"]
    pages = [(s, p) for s, p in sent["reader"] if "ORDER BY" in s]
    assert len(pages) >= 2  # the urgent phase and the rest
    assert any("count(" in s for s, _ in sent["reader"])
    with engine.connect() as connection:
        for statement, parameters in pages:
            plan = " | ".join(row[-1] for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {statement}", parameters))
            assert "TEMP B-TREE" not in plan, plan
            assert "sqlite_autoindex_subscriptions_1" in plan, plan


@pytest.fixture
def paged_app(make_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[RunningApp]:
    services = build_services(make_settings(reconcile_page_size=2), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


def test_pages_leave_no_garbage_for_the_cycle_collector(
    paged_app: RunningApp, clock: FakeClock
) -> None:
    """A run's memory stays flat however many pages it reads: a page leaves nothing that only
    the cycle collector frees, which `serve` runs seldom (`serving.settle_memory`). A query
    built for each page did (about 60 objects of SQL expression tree a page: half a MiB a
    minute at a million subscriptions). Two runs in pages of two, over 4 and then 20
    subscriptions, must leave the same cyclic garbage (after a first run, whose statements
    SQLAlchemy's compiled cache keeps)."""
    def garbage_of_a_run() -> list[str]:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            report = run_portal(paged_app, clock, dry_run=True)
            gc.collect()
            found = [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert report["status"] == "done"
        return found

    for n in range(4):
        portal_subscription(paged_app, clock, account_id=f"acct-{n}",
                            expires_at=f"2026-12-{n + 2:02}T12:00:00Z")
    garbage_of_a_run()
    few = garbage_of_a_run()
    for n in range(4, 20):
        portal_subscription(paged_app, clock, account_id=f"acct-{n}",
                            expires_at=f"2026-12-{n + 2:02}T12:00:00Z")
    many = garbage_of_a_run()
    assert len(many) - len(few) < 8, Counter(many) - Counter(few)  # 8 more pages than `few`


def test_every_settled_page_gives_the_heap_s_free_pages_back(
    paged_app: RunningApp, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each page a run trims the C heap (glibc's `malloc_trim`, the outermost edge,
    counted here): a page's buffers are freed among live chunks, which glibc otherwise keeps
    resident, so a run's memory crept with its length. Six subscriptions none of them due
    soon, in pages of two: three pages, three trims."""
    trims: list[int] = []

    def malloc_trim(pad: int) -> int:
        trims.append(pad)
        return 1

    monkeypatch.setattr(heap, "_TRIM", malloc_trim)
    for n in range(6):
        portal_subscription(paged_app, clock, account_id=f"acct-{n}",
                            expires_at=f"2027-02-{n + 2:02}T12:00:00Z")
    report = run_portal(paged_app, clock, dry_run=True)
    assert report["status"] == "done"
    assert report["checked"] == 6
    assert trims == [0, 0, 0]


def test_a_settled_page_is_let_go_before_the_next_is_read(
    paged_app: RunningApp, clock: FakeClock
) -> None:
    """A run holds two pages of store answers (the one being settled, the one being fetched),
    not three: when a page is read, only the queued page's answers are alive. Ten
    subscriptions in pages of two; each page read counts the live `Fetched`."""
    for n in range(10):
        portal_subscription(paged_app, clock, account_id=f"acct-{n}",
                            expires_at=f"2027-02-{n + 2:02}T12:00:00Z")
    live: list[int] = []
    engine = paged_app.services.reader or paged_app.services.engine

    def count_answers(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "ORDER BY subscriptions.id" in statement and "LIMIT" in statement:
            live.append(sum(isinstance(o, Fetched) for o in gc.get_objects()))

    event.listen(engine, "before_cursor_execute", count_answers)
    try:
        report = run_portal(paged_app, clock, dry_run=True)
    finally:
        event.remove(engine, "before_cursor_execute", count_answers)
    assert report["checked"] == 10
    assert len(live) >= 5, live  # every page read was seen
    assert max(live) <= 2, live
