"""Reconciliation against the fake App Store: every drift kind found, repaired or only reported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from reconcile.config import Settings
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN, no_sleep
from tests.fakes.appstore import FakeAppStore
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_truth import (
    DAY_MS,
    EXPIRES,
    MONTHLY,
    STORE_AT,
    WEBHOOK_AT,
    YEARLY,
    iso,
    kinds,
    reconcile,
    store_has,
    subscribe,
)
from tests.support.server import FakeClock, RunningApp, serve_in_thread
from tests.support.windows import most_in_window


def events(app: RunningApp, sub_id: str) -> list[dict[str, Any]]:
    return list(app.client.get(f"/v1/subscriptions/{sub_id}/events").json()["items"])


def test_in_sync_reports_nothing_and_writes_nothing(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A subscription that matches the store is checked, reported clean and left untouched."""
    sub = subscribe(recon_app, apple_ca, "7001")
    store_has(fake_appstore, "7001")
    report = reconcile(recon_app)
    assert report["status"] == "done"
    assert report["checked"] == 1
    assert report["discrepancies"] == []
    assert report["errors"] == 0
    assert len(events(recon_app, sub["id"])) == 1


DRIFT: list[tuple[str, dict[str, Any], str, str, dict[str, Any]]] = [
    ("status", {"status": 3}, "active", "billing_retry", {"status": "billing_retry"}),
    ("expires_at", {"expires": EXPIRES + 30 * DAY_MS}, iso(EXPIRES), iso(EXPIRES + 30 * DAY_MS),
     {"expires_at": iso(EXPIRES + 30 * DAY_MS)}),
    ("auto_renew", {"auto_renew": 0}, "on", "off", {"auto_renew": False}),
    ("product", {"product": YEARLY}, MONTHLY, YEARLY, {"product_id": YEARLY}),
]


@pytest.mark.parametrize(("kind", "store", "here_text", "store_text", "after"), DRIFT,
                         ids=[d[0] for d in DRIFT])
def test_drift_is_found_and_repaired(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore,
    kind: str, store: dict[str, Any], here_text: str, store_text: str, after: dict[str, Any],
) -> None:
    """Each kind of state drift is reported with both values and repaired through ingest."""
    sub = subscribe(recon_app, apple_ca, "7002")
    store_has(fake_appstore, "7002", **store)
    report = reconcile(recon_app)
    assert report["status"] == "done"
    assert kinds(report) == {kind: {
        "channel": "apple", "store_id": "7002", "subscription_id": sub["id"], "kind": kind,
        "here": here_text, "store": store_text, "repaired": True,
    }}
    now = recon_app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert {k: now[k] for k in after} == after
    assert now["last_event_at"] == iso(STORE_AT)
    assert [e["source"] for e in events(recon_app, sub["id"])] == ["apple", "reconciliation"]


def test_planned_downgrade_is_product_drift(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A downgrade waiting for renewal that we never heard of shows as product drift."""
    subscribe(recon_app, apple_ca, "7003", product=YEARLY)
    store_has(fake_appstore, "7003", product=YEARLY, renews_as=MONTHLY)
    found = kinds(reconcile(recon_app))
    assert found["product"]["here"] == YEARLY
    assert found["product"]["store"] == f"{YEARLY} (renews as {MONTHLY})"


def test_dry_run_reports_everything_and_changes_nothing(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A dry run lists the same drift a real run would repair, and repairs none of it."""
    sub = subscribe(recon_app, apple_ca, "7004")
    store_has(fake_appstore, "7004", status=3, expires=EXPIRES + DAY_MS, auto_renew=0,
              product=YEARLY)
    before = recon_app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    report = reconcile(recon_app, dry_run=True)
    assert report["dry_run"] is True
    assert report["status"] == "done"
    assert sorted(kinds(report)) == ["auto_renew", "expires_at", "product", "status"]
    assert not any(d["repaired"] for d in report["discrepancies"])
    assert recon_app.client.get(f"/v1/subscriptions/{sub['id']}").json() == before
    assert len(events(recon_app, sub["id"])) == 1
    real = reconcile(recon_app)
    assert [(d["kind"], d["here"], d["store"]) for d in real["discrepancies"]] == [
        (d["kind"], d["here"], d["store"]) for d in report["discrepancies"]]
    assert all(d["repaired"] for d in real["discrepancies"])


def test_older_store_truth_never_rolls_back_newer_state(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A store answer signed before the newest webhook we applied changes nothing."""
    sub = subscribe(recon_app, apple_ca, "7005", auto_renew=0)
    store_has(fake_appstore, "7005", auto_renew=1, signed=WEBHOOK_AT - 60_000)
    report = reconcile(recon_app)
    assert report["discrepancies"] == []
    assert recon_app.client.get(f"/v1/subscriptions/{sub['id']}").json()["auto_renew"] is False


def test_unknown_at_store_is_reported_not_repaired(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A subscription the store answers 404 for is reported and left as it is."""
    sub = subscribe(recon_app, apple_ca, "7006")
    report = reconcile(recon_app)
    assert report["status"] == "done"
    assert kinds(report) == {"unknown_at_store": {
        "channel": "apple", "store_id": "7006", "subscription_id": sub["id"],
        "kind": "unknown_at_store", "here": f"active, expires {iso(EXPIRES)}", "store": None,
        "repaired": False,
    }}
    assert recon_app.client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "active"


def test_refund_without_notification_is_recorded(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore
) -> None:
    """A refund Apple made but never told us about is found in the status and recorded."""
    sub = subscribe(recon_app, apple_ca, "7007")
    store_has(fake_appstore, "7007", status=5, revocationDate=STORE_AT - 60_000,
              revocationReason=0)
    found = kinds(reconcile(recon_app))
    assert found["status"]["store"] == "revoked"
    assert found["refund_not_known"]["store"] == f"refunded {iso(STORE_AT - 60_000)} (700701)"
    assert found["refund_not_known"]["repaired"] is True
    [refund] = recon_app.client.get("/v1/refunds").json()["items"]
    assert (refund["store_id"], refund["subscription_id"]) == ("700701", sub["id"])
    assert recon_app.client.get(f"/v1/subscriptions/{sub['id']}").json()["entitled"] is False
    assert kinds(reconcile(recon_app)) == {}


def test_no_more_status_reads_are_in_flight_than_the_concurrency(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    apple_ca: AppleTestCA, fake_appstore: FakeAppStore, clock: FakeClock,
) -> None:
    """RECONCILE_RECONCILE_CONCURRENCY bounds the calls out at once, although the run's pool
    has twice as many threads: with each answer taking 50 ms, no 45 ms saw more than two
    status reads arrive."""
    settings = make_settings(**apple_api_settings, apple_environments=["sandbox"],
                             reconcile_concurrency=2)
    services = build_services(settings, clock=clock, sleep=no_sleep)
    try:
        with serve_in_thread(services, ADMIN_TOKEN) as app:
            ids = [f"76{n:02d}" for n in range(12)]
            for otid in ids:
                subscribe(app, apple_ca, otid)
                store_has(fake_appstore, otid)
            fake_appstore.latency = 0.05
            report = reconcile(app)
    finally:
        services.close()
    assert report["status"] == "done"
    assert report["checked"] == len(ids)
    reads = [c.at for c in fake_appstore.calls_to("/inApps/v1/subscriptions/")]
    assert len(reads) == len(ids)
    assert most_in_window(reads, 0.045) == 2
