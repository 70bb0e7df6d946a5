"""Reconciliation runs: history recovery, store faults, resuming after a crash, order, schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from reconcile.config import Settings
from reconcile.db import transaction
from reconcile.reconciliation.runner import Reconciler
from reconcile.reconciliation.sources import Filters
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN, no_sleep
from tests.fakes.appstore import FakeAppStore, notification_payload, transaction_payload
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import BUNDLE_ID
from tests.support.apple_truth import (
    DAY_MS,
    MONTHLY,
    STORE_AT,
    kinds,
    reconcile,
    store_has,
    subscribe,
)
from tests.support.server import FakeClock, RunningApp, serve_in_thread

HISTORY = "/inApps/v1/notifications/history"


def missed(otid: str, notification_uuid: str, signed: int) -> dict[str, Any]:
    """A SUBSCRIBED notification as Apple's history lists it."""
    return notification_payload(
        "SUBSCRIBED", "INITIAL_BUY", bundle_id=BUNDLE_ID, status=1, signed_date=signed,
        notification_uuid=notification_uuid,
        transaction=transaction_payload(transaction_id=f"{otid}01", original_transaction_id=otid,
                                        bundle_id=BUNDLE_ID, purchase_date=STORE_AT - 2 * DAY_MS,
                                        product_id=MONTHLY, signed_date=signed),
        renewal={"originalTransactionId": otid, "autoRenewStatus": 1,
                 "autoRenewProductId": MONTHLY, "signedDate": signed},
    )


def test_missed_notification_comes_back_through_history(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A notification we never received is recorded from history and processed like a webhook;
    one we did receive is recognised by its UUID; the next run reads on from where this ended."""
    subscribe(recon_app, apple_ca, "7101", notification_uuid="aaaaaaaa-0000-4000-8000-000000000001")
    store_has(fake_appstore, "7101")
    fake_appstore.add_notification(missed("7101", "aaaaaaaa-0000-4000-8000-000000000001",
                                          STORE_AT - DAY_MS))
    fake_appstore.add_notification(missed("7102", "bbbbbbbb-0000-4000-8000-000000000002",
                                          STORE_AT - DAY_MS))
    store_has(fake_appstore, "7102", expires=STORE_AT + 28 * DAY_MS)
    report = reconcile(recon_app)
    assert report["status"] == "done"
    found = kinds(report)["missing_here"]
    assert (found["store_id"], found["subscription_id"], found["here"]) == ("7102", None, None)
    assert found["repaired"] is True
    assert "bbbbbbbb-0000-4000-8000-000000000002" in found["store"]
    recon_app.drain()
    [sub] = recon_app.client.get("/v1/subscriptions", params={"store_id": "7102"}).json()["items"]
    assert sub["status"] == "active"
    first_end = fake_appstore.calls_to(HISTORY)[-1].body["endDate"]

    recon_app.services.clock.advance(hours=6)  # type: ignore[attr-defined]
    again = reconcile(recon_app)
    assert [d["kind"] for d in again["discrepancies"]] == []
    assert fake_appstore.calls_to(HISTORY)[-1].body["startDate"] == first_end - 3_600_000


def test_history_is_read_page_by_page(
    recon_app: RunningApp, fake_appstore: FakeAppStore
) -> None:
    """More missed notifications than one history page holds are all recovered."""
    for n in range(25):
        otid = f"71{n:02d}"
        fake_appstore.add_notification(missed(otid, f"dddddddd-0000-4000-8000-{n:012d}",
                                              STORE_AT - DAY_MS + n))
        store_has(fake_appstore, otid, expires=STORE_AT + 28 * DAY_MS)
    report = reconcile(recon_app)
    assert report["status"] == "done"
    assert sorted(d["store_id"] for d in report["discrepancies"]) == [
        f"71{n:02d}" for n in range(25)]
    assert len(fake_appstore.calls_to(HISTORY)) == 2
    recon_app.drain()
    assert len(recon_app.client.get("/v1/subscriptions", params={"limit": 100}).json()[
        "items"]) == 25


def test_dry_run_recovers_nothing(
    recon_app: RunningApp, fake_appstore: FakeAppStore
) -> None:
    """A dry run reports a missed notification but records nothing and keeps the cursor."""
    fake_appstore.add_notification(missed("7103", "cccccccc-0000-4000-8000-000000000003",
                                          STORE_AT - DAY_MS))
    store_has(fake_appstore, "7103")
    report = reconcile(recon_app, dry_run=True)
    assert kinds(report)["missing_here"]["repaired"] is False
    recon_app.drain()
    assert recon_app.client.get("/v1/subscriptions").json()["items"] == []
    assert kinds(reconcile(recon_app))["missing_here"]["repaired"] is True


@pytest.mark.parametrize("status", [429, 500, 503])
def test_store_faults_are_retried(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore, status: int
) -> None:
    """A store that fails a few times and then answers is simply checked."""
    subscribe(recon_app, apple_ca, "7201")
    store_has(fake_appstore, "7201")
    fake_appstore.fail_next("/inApps/v1/subscriptions/7201", status, times=3)
    report = reconcile(recon_app)
    assert (report["status"], report["checked"], report["errors"]) == ("done", 1, 0)
    assert report["discrepancies"] == []
    assert len(fake_appstore.calls_to("/inApps/v1/subscriptions/7201")) == 4


def test_persistent_store_fault_is_reported_not_drift(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A store that keeps failing fails the run with the error listed: no discrepancy, no
    change, while the other subscriptions are still checked."""
    broken = subscribe(recon_app, apple_ca, "7202")
    subscribe(recon_app, apple_ca, "7203")
    store_has(fake_appstore, "7202", status=2)
    store_has(fake_appstore, "7203")
    fake_appstore.fail_next("/inApps/v1/subscriptions/7202", 503, times=4)
    report = reconcile(recon_app)
    assert (report["status"], report["checked"], report["errors"]) == ("failed", 1, 1)
    assert report["discrepancies"] == []
    assert "7202" in report["failures"][0]
    assert "503" in report["failures"][0]
    now = recon_app.client.get(f"/v1/subscriptions/{broken['id']}").json()
    assert now["status"] == "active"


def test_unreachable_store_is_reported_not_drift(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """With the store unreachable every check and the history read fail as errors."""
    subscribe(recon_app, apple_ca, "7204")
    fake_appstore.stop()
    report = reconcile(recon_app)
    assert report["status"] == "failed"
    assert report["discrepancies"] == []
    assert report["errors"] == 2
    assert report["checked"] == 0


def test_history_fault_keeps_the_cursor(
    recon_app: RunningApp, fake_appstore: FakeAppStore
) -> None:
    """A history read that fails is reported and the next run reads the same window again."""
    fake_appstore.fail_next(HISTORY, 500, times=4)
    report = reconcile(recon_app)
    assert report["status"] == "failed"
    assert report["failures"][0].startswith("apple:history:")
    first_start = fake_appstore.calls_to(HISTORY)[0].body["startDate"]
    reconcile(recon_app)
    assert fake_appstore.calls_to(HISTORY)[-1].body["startDate"] == first_start


def test_killed_run_resumes_from_its_checkpoint(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A run abandoned after one page is taken over once its lease ran out, continues after
    that page, and counts and reports every subscription exactly once."""
    services = recon_app.services
    clock: FakeClock = services.clock  # type: ignore[assignment]
    ids = [f"73{n:02d}" for n in range(5)]
    for otid in ids:
        subscribe(recon_app, apple_ca, otid)
        store_has(fake_appstore, otid, auto_renew=0)
    crashed = Reconciler(services.sessions, services.truth, owner="crashed", page_size=2)
    with transaction(services.sessions) as session:
        run_id = crashed.start(session, Filters(), dry_run=False, now=clock(), claim=True).id
    crashed.advance(run_id, clock, max_pages=2)  # the history page, then two subscriptions
    report = recon_app.client.get(f"/v1/reconciliations/{run_id}").json()
    assert (report["status"], report["checked"], len(report["discrepancies"])) == (
        "running", 2, 2)

    recon_app.drain()  # the worker leaves a run whose lease is still held alone
    assert recon_app.client.get(f"/v1/reconciliations/{run_id}").json()["checked"] == 2
    clock.advance(minutes=6)
    recon_app.drain()
    report = recon_app.client.get(f"/v1/reconciliations/{run_id}").json()
    assert (report["status"], report["checked"]) == ("done", 5)
    assert sorted(d["store_id"] for d in report["discrepancies"]) == ids
    assert len(fake_appstore.calls_to("/inApps/v1/subscriptions/")) == 5
    assert crashed.advance(run_id, clock) == 0  # the old holder cannot write any more
    crashed.close()


def test_urgent_subscriptions_are_checked_first(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """Grace period, billing retry and soon-expiring subscriptions are asked about first."""
    soon = STORE_AT + DAY_MS
    plans: dict[str, dict[str, Any]] = {
        "7401": {"expires": STORE_AT + 20 * DAY_MS}, "7402": {"status": 4},
        "7403": {"status": 3}, "7404": {"expires": soon}, "7405": {"status": 2},
    }
    for otid, plan in plans.items():
        subscribe(recon_app, apple_ca, otid, **plan)
        store_has(fake_appstore, otid, **plan)
    reconcile(recon_app)
    order = [c.path.rsplit("/", 1)[1] for c in fake_appstore.calls_to("/inApps/v1/subscriptions")]
    assert set(order[:3]) == {"7402", "7403", "7404"}
    assert set(order[3:]) == {"7401", "7405"}


def test_worker_reconciles_on_a_schedule(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore, clock: FakeClock,
) -> None:
    """With an interval set the worker starts a full run when the last one is that old."""
    settings = make_settings(**apple_api_settings, reconcile_interval_minutes=60,
                             apple_environments=["sandbox"])
    services = build_services(settings, clock=clock, sleep=no_sleep)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        app.drain()
        app.drain()
        assert [r["status"] for r in app.client.get("/v1/reconciliations").json()["items"]] == [
            "done"]
        clock.advance(minutes=61)
        app.drain()
        runs = app.client.get("/v1/reconciliations").json()["items"]
    services.close()
    assert [r["status"] for r in runs] == ["done", "done"]
    assert len(fake_appstore.calls_to(HISTORY)) == 2


def test_narrowed_runs(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A store id or account narrows the check; history is narrowed too, or skipped."""
    account = "0b6f6a8e-5d4a-4c7e-9f5e-000000000001"
    subscribe(recon_app, apple_ca, "7501", account=account)
    subscribe(recon_app, apple_ca, "7502")
    store_has(fake_appstore, "7501", auto_renew=0)
    store_has(fake_appstore, "7502", auto_renew=0)
    by_store = reconcile(recon_app, store_id="7502")
    assert [(d["store_id"], d["kind"]) for d in by_store["discrepancies"]] == [
        ("7502", "auto_renew")]
    assert fake_appstore.calls_to(HISTORY)[-1].body["transactionId"] == "7502"
    history_reads = len(fake_appstore.calls_to(HISTORY))
    by_account = reconcile(recon_app, account_id=account, dry_run=True)
    assert [(d["store_id"], d["kind"]) for d in by_account["discrepancies"]] == [
        ("7501", "auto_renew")]
    assert by_account["checked"] == 1
    assert len(fake_appstore.calls_to(HISTORY)) == history_reads
    assert reconcile(recon_app, channel="portal")["checked"] == 0


def test_runs_api(recon_app: RunningApp, clock: FakeClock) -> None:
    """Runs are listed newest first with a cursor; unknown ids, unconfigured stores and
    missing credentials are refused."""
    for _ in range(3):
        reconcile(recon_app, dry_run=True)
        clock.advance(minutes=1)
    client = recon_app.client
    first = client.get("/v1/reconciliations", params={"limit": 2}).json()
    assert len(first["items"]) == 2
    rest = client.get("/v1/reconciliations",
                      params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert rest["next_cursor"] is None
    started = [r["started_at"] for r in first["items"] + rest["items"]]
    assert started == sorted(started, reverse=True)
    assert len(set(started)) == 3
    assert client.get("/v1/reconciliations/rec_nope").status_code == 404
    refused = client.post("/v1/reconciliations", json={"channel": "google"})
    assert refused.status_code == 409
    assert refused.json()["error"] == "store_not_configured"
    assert client.post("/v1/reconciliations", json={"channel": "fax"}).status_code == 422
    assert client.get("/v1/reconciliations", headers={"Authorization": ""}).status_code == 401



def test_metrics_show_the_newest_run(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore, clock: FakeClock
) -> None:
    """Prometheus sees how old the last complete reconciliation is and what it found."""
    subscribe(recon_app, apple_ca, "7701")
    store_has(fake_appstore, "7701", auto_renew=0)
    reconcile(recon_app, dry_run=True)
    clock.advance(minutes=5)
    text = recon_app.client.get("/metrics").text
    assert 'reconcile_reconciliation_runs{status="done"} 1.0' in text
    assert 'reconcile_reconciliation_age_seconds{channel="apple"} 300.0' in text
    assert ('reconcile_reconciliation_discrepancies{kind="auto_renew",repaired="false"} 1.0'
            in text)


def test_store_timeouts_are_retried_and_reported(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore, apple_ca: AppleTestCA, clock: FakeClock,
) -> None:
    """A store that answers too slowly times out, is tried again, and is reported as a fault:
    no discrepancy, no change."""
    settings = make_settings(**apple_api_settings, apple_environments=["sandbox"],
                             apple_api_timeout_seconds=0.2, apple_api_attempts=2)
    services = build_services(settings, clock=clock, sleep=no_sleep)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        sub = subscribe(app, apple_ca, "7801")
        store_has(fake_appstore, "7801", status=2)
        fake_appstore.latency = 0.5
        report = reconcile(app)
        assert app.client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "active"
    services.close()
    assert (report["status"], report["errors"], report["discrepancies"]) == ("failed", 2, [])
    assert any("7801" in failure for failure in report["failures"])
    assert len(fake_appstore.calls_to("/inApps/v1/subscriptions/7801")) == 2
