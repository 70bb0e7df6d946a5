"""Reconciliation against the fake Play API: drift, acknowledgements, voided purchases, faults."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from reconcile.config import Settings
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.apple_truth import kinds, reconcile
from tests.support.google import Pusher, subscription_notification
from tests.support.oidc import OidcIssuer
from tests.support.server import FakeClock, RunningApp, serve_in_thread

DAY = dt.timedelta(days=1)
PURCHASED, EXPIRED = 4, 13
ACKNOWLEDGE = "subscriptions.acknowledge"


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Customer:
    """One Google subscription: what Play holds for its token, and what we were told."""

    def __init__(self, app: RunningApp, pusher: Pusher, fake: FakePlay, clock: FakeClock,
                 token: str = "tok-1") -> None:
        self.app, self.pusher, self.fake, self.clock = app, pusher, fake, clock
        self.token = token
        self.expiry = clock.now + 30 * DAY

    def holds(self, product: str = "premium_monthly", **kw: Any) -> None:
        kw.setdefault("expiry_time", self.expiry)
        kw.setdefault("acknowledged", True)
        kw.setdefault("account_id", "acct-g")
        self.fake.subscriptions[self.token] = subscription_purchase(product, now=self.clock.now,
                                                                    **kw)

    def bought(self, code: int = PURCHASED, **kw: Any) -> dict[str, Any]:
        """Our side: Play held this when its notification was processed."""
        self.holds(**kw)
        self.clock.advance(minutes=1)
        self.pusher.push(subscription_notification(self.token, code, self.clock.now))
        self.app.drain()
        self.clock.advance(minutes=1)
        [sub] = self.app.client.get("/v1/subscriptions",
                                    params={"store_id": self.token}).json()["items"]
        return dict(sub)

    def now_is(self, sub: dict[str, Any]) -> dict[str, Any]:
        return dict(self.app.client.get(f"/v1/subscriptions/{sub['id']}").json())


@pytest.fixture
def customer(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> Customer:
    return Customer(google_app, pusher, fake_play, clock)


def test_in_sync_reports_nothing(customer: Customer) -> None:
    """A subscription that matches Play is checked and reported clean."""
    customer.bought()
    report = reconcile(customer.app)
    assert (report["status"], report["checked"], report["discrepancies"]) == ("done", 1, [])


DRIFT: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("status", {"state": "SUBSCRIPTION_STATE_ON_HOLD"}, "billing_retry",
     {"status": "billing_retry", "entitled": False}),
    ("auto_renew", {"state": "SUBSCRIPTION_STATE_CANCELED"}, "off", {"auto_renew": False}),
    ("product", {"product": "premium_yearly"}, "premium_yearly",
     {"product_id": "premium_yearly"}),
]


@pytest.mark.parametrize(("kind", "store", "store_text", "after"), DRIFT,
                         ids=[d[0] for d in DRIFT])
def test_drift_is_found_and_repaired(
    customer: Customer, kind: str, store: dict[str, Any], store_text: str,
    after: dict[str, Any],
) -> None:
    """What Play holds now but never notified is reported and applied through ingest."""
    sub = customer.bought()
    customer.holds(**store)
    found = kinds(reconcile(customer.app))
    assert found[kind]["store"] == store_text
    assert found[kind]["repaired"] is True
    now = customer.now_is(sub)
    assert {k: now[k] for k in after} == after


def test_renewal_we_missed_moves_the_expiry(customer: Customer) -> None:
    """A renewal Play made without a notification reaching us shows as expiry drift."""
    sub = customer.bought()
    renewed = customer.expiry + 30 * DAY
    customer.holds(expiry_time=renewed)
    found = kinds(reconcile(customer.app))
    assert (found["expires_at"]["here"], found["expires_at"]["store"]) == (
        iso(customer.expiry), iso(renewed))
    assert customer.now_is(sub)["expires_at"] == iso(renewed)


def test_unacknowledged_purchase_gets_acknowledged(customer: Customer) -> None:
    """A purchase Play still holds unacknowledged is reported; a dry run leaves it, a real run
    has the acknowledgement job send it again."""
    customer.bought(acknowledged=False)
    assert len(customer.fake.calls_named(ACKNOWLEDGE)) == 1
    customer.fake.subscriptions[customer.token]["acknowledgementState"] = (
        "ACKNOWLEDGEMENT_STATE_PENDING")
    dry = kinds(reconcile(customer.app, dry_run=True))
    assert dry["unacknowledged"]["here"].startswith("acknowledged ")
    assert (dry["unacknowledged"]["store"], dry["unacknowledged"]["repaired"]) == (
        "pending", False)
    assert len(customer.fake.calls_named(ACKNOWLEDGE)) == 1
    real = kinds(reconcile(customer.app))
    assert real["unacknowledged"]["repaired"] is True
    assert len(customer.fake.calls_named(ACKNOWLEDGE)) == 2
    assert customer.fake.subscriptions[customer.token]["acknowledgementState"] == (
        "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED")
    assert kinds(reconcile(customer.app)) == {}


def test_refund_without_notification_is_found_in_voided_purchases(customer: Customer) -> None:
    """A refund Google made whose notification never came is found through voided purchases,
    recorded, and revokes the period; the next run does not report it again."""
    sub = customer.bought(order_id="GPA.1111-2222-3333-44444")
    voided_at = customer.clock.now - dt.timedelta(hours=2)
    customer.fake.voided.append({
        "purchaseToken": customer.token, "orderId": "GPA.1111-2222-3333-44444",
        "voidedTimeMillis": int(voided_at.timestamp() * 1000), "voidedSource": 0,
        "voidedReason": 1, "kind": 1,
    })
    customer.holds(state="SUBSCRIPTION_STATE_EXPIRED", order_id="GPA.1111-2222-3333-44444")
    found = kinds(reconcile(customer.app))
    assert found["refund_not_known"]["store"] == (
        f"voided {iso(voided_at)} (order GPA.1111-2222-3333-44444)")
    assert found["refund_not_known"]["subscription_id"] == sub["id"]
    assert found["refund_not_known"]["repaired"] is True
    assert "status" not in found  # the voided purchase already revoked it, before the read
    assert customer.now_is(sub)["status"] == "revoked"
    [refund] = customer.app.client.get("/v1/refunds").json()["items"]
    assert refund["store_id"] == customer.token
    customer.clock.advance(hours=1)
    assert kinds(reconcile(customer.app)) == {}


def test_token_unknown_to_play(customer: Customer) -> None:
    """A token Play answers 404 for is reported as unknown at the store, not changed."""
    sub = customer.bought()
    del customer.fake.subscriptions[customer.token]
    found = kinds(reconcile(customer.app))
    assert found["unknown_at_store"]["repaired"] is False
    assert "404" in found["unknown_at_store"]["store"]
    assert customer.now_is(sub)["status"] == "active"


def test_long_expired_token_gone_from_play_is_fine(customer: Customer) -> None:
    """Play forgets purchases 60 days after expiry (410): for one expired here that is no
    discrepancy."""
    customer.bought(code=EXPIRED, state="SUBSCRIPTION_STATE_EXPIRED")
    customer.fake.fail_next("subscriptionsv2.get", 410, times=1,
                            reason="subscriptionPurchaseNoLongerAvailable")
    report = reconcile(customer.app)
    assert (report["status"], report["checked"], report["discrepancies"]) == ("done", 1, [])


def test_replaced_purchase_is_missing_here_not_expired(customer: Customer) -> None:
    """Play ended our token because a newer purchase replaced it, whose notification we never
    got: reported as missing here, and our subscription is not expired for it."""
    sub = customer.bought()
    customer.holds(state="SUBSCRIPTION_STATE_EXPIRED", canceled="replacement")
    found = kinds(reconcile(customer.app))
    assert found["missing_here"]["repaired"] is False
    assert found["missing_here"]["store"].startswith("replaced by a newer purchase")
    assert customer.now_is(sub)["status"] == "active"


def test_play_faults_are_retried_then_reported(customer: Customer) -> None:
    """5xx and 429 are retried; a Play API that keeps failing fails the run with the error
    listed and no discrepancy."""
    sub = customer.bought()
    customer.holds(state="SUBSCRIPTION_STATE_ON_HOLD")
    customer.fake.fail_next("subscriptionsv2.get", 503, times=2)
    customer.fake.fail_next("subscriptionsv2.get", 429, times=1)
    assert kinds(reconcile(customer.app))["status"]["repaired"] is True
    customer.holds(state="SUBSCRIPTION_STATE_EXPIRED")
    customer.fake.fail_next("subscriptionsv2.get", 500, times=4)
    report = reconcile(customer.app)
    assert (report["status"], report["errors"], report["discrepancies"]) == ("failed", 1, [])
    assert "subscriptionsv2.get" in report["failures"][0]
    assert customer.now_is(sub)["status"] == "billing_retry"


def test_runs_reuse_their_play_connections(customer: Customer) -> None:
    """Reconciliation's threads live as long as the service, so the Play client's per-thread
    connections are built once, not again every worker round."""
    customer.bought()
    reconcile(customer.app)
    play = customer.app.services.play
    assert play is not None
    built = len(play._built)
    for _ in range(3):
        customer.clock.advance(minutes=1)
        reconcile(customer.app)
    assert len(play._built) == built


def test_play_timeouts_are_reported_not_drift(
    make_google_settings: Callable[..., Settings], fake_play: FakePlay, oidc: OidcIssuer,
    clock: FakeClock,
) -> None:
    """Play reads that time out are retried and then reported as faults, never as drift."""
    services = build_services(make_google_settings(google_api_timeout_seconds=0.2,
                                                   google_api_retries=1), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        customer = Customer(app, Pusher(app.client, oidc), fake_play, clock)
        sub = customer.bought()
        customer.holds(state="SUBSCRIPTION_STATE_EXPIRED")
        fake_play.latency = 0.5
        report = reconcile(app)
        fake_play.latency = 0
        assert customer.now_is(sub)["status"] == "active"
    services.close()
    assert (report["status"], report["errors"], report["discrepancies"]) == ("failed", 2, [])
    assert len(fake_play.calls_named("subscriptionsv2.get")) == 1 + 2
