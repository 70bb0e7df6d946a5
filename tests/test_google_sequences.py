"""Google subscriptions over time: lifecycles, token chains, revocations, bursts and reordering."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from reconcile.models import InboxEntry
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.google import Pusher, subscription_notification, voided_notification
from tests.support.server import FakeClock, RunningApp

ACCOUNT = "acct-seq"
DAY = dt.timedelta(days=1)

PURCHASED, RENEWED, CANCELED, ON_HOLD, IN_GRACE = 4, 2, 3, 5, 6
RECOVERED, PAUSED, REVOKED, EXPIRED, PENDING_CANCELED = 1, 10, 12, 13, 20


class Story:
    """Drives one customer's subscription: set what Google holds, push, let the worker run."""

    def __init__(self, app: RunningApp, pusher: Pusher, fake: FakePlay, clock: FakeClock):
        self.app, self.pusher, self.fake, self.clock = app, pusher, fake, clock
        self.start = clock.now

    def holds(self, token: str, product: str = "premium_monthly", **kw: Any) -> None:
        """What subscriptionsv2.get answers for `token` from now on."""
        kw.setdefault("account_id", ACCOUNT)
        kw.setdefault("expiry_time", self.start + 30 * DAY)
        kw.setdefault("acknowledged", True)
        self.fake.subscriptions[token] = subscription_purchase(product, now=self.clock.now, **kw)

    def push(self, token: str, code: int, *, drain: bool = True) -> None:
        self.clock.advance(minutes=1)
        self.pusher.push(subscription_notification(token, code, self.clock.now))
        if drain:
            self.app.drain()

    def step(self, token: str, code: int, product: str = "premium_monthly", **kw: Any) -> None:
        self.holds(token, product, **kw)
        self.push(token, code)

    def subscriptions(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.app.client.get("/v1/subscriptions").json()["items"]
        return items

    def only(self) -> dict[str, Any]:
        [sub] = self.subscriptions()
        return sub

    def inbox(self) -> list[InboxEntry]:
        with self.app.services.sessions() as session:
            return list(session.scalars(select(InboxEntry).order_by(InboxEntry.id)))


def story(app: RunningApp, pusher: Pusher, fake: FakePlay, clock: FakeClock) -> Story:
    return Story(app, pusher, fake, clock)


def view(sub: dict[str, Any], *keys: str) -> tuple[Any, ...]:
    return tuple(sub[key] for key in keys)


def test_purchase_renew_cancel_expire(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A subscription's whole life: bought, renewed, cancelled (still active), then expired."""
    s = story(google_app, pusher, fake_play, clock)
    first, second = s.start + 30 * DAY, s.start + 60 * DAY
    s.step("A", PURCHASED, acknowledged=False, expiry_time=first)
    assert view(s.only(), "status", "entitled", "auto_renew") == ("active", True, True)
    s.step("A", RENEWED, expiry_time=second)
    assert s.only()["expires_at"] == second.strftime("%Y-%m-%dT%H:%M:%SZ")
    s.step("A", CANCELED, state="SUBSCRIPTION_STATE_CANCELED", expiry_time=second)
    assert view(s.only(), "status", "entitled", "auto_renew") == ("active", True, False)
    clock.now = second + DAY
    s.step("A", EXPIRED, state="SUBSCRIPTION_STATE_EXPIRED", expiry_time=second)
    sub = s.only()
    assert view(sub, "status", "entitled", "auto_renew") == ("expired", False, False)
    events = google_app.client.get(f"/v1/subscriptions/{sub['id']}/events").json()["items"]
    assert [e["kind"] for e in events] == [
        "SUBSCRIPTION_PURCHASED", "SUBSCRIPTION_RENEWED", "SUBSCRIPTION_CANCELED",
        "SUBSCRIPTION_EXPIRED"]
    assert [c.name.rsplit(".", 2)[-2] for c in fake_play.calls_named("acknowledge")] == [
        "subscriptions"]


def test_grace_then_hold_then_recover(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """Payment trouble: grace keeps access, account hold takes it away, recovery restores it."""
    s = story(google_app, pusher, fake_play, clock)
    expiry = s.start + 2 * DAY
    s.step("A", PURCHASED, expiry_time=expiry)
    grace_end = expiry + 3 * DAY
    clock.now = expiry + dt.timedelta(hours=1)
    s.step("A", IN_GRACE, state="SUBSCRIPTION_STATE_IN_GRACE_PERIOD", expiry_time=grace_end)
    sub = s.only()
    assert view(sub, "status", "entitled") == ("grace_period", True)
    assert sub["grace_expires_at"] == grace_end.strftime("%Y-%m-%dT%H:%M:%SZ")
    clock.now = grace_end + dt.timedelta(hours=1)
    s.step("A", ON_HOLD, state="SUBSCRIPTION_STATE_ON_HOLD", expiry_time=grace_end)
    assert view(s.only(), "status", "entitled", "grace_expires_at") == (
        "billing_retry", False, None)
    s.step("A", RECOVERED, expiry_time=clock.now + 30 * DAY)
    assert view(s.only(), "status", "entitled") == ("active", True)


def test_pause_and_resume(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A paused subscription has no access; when it resumes and renews, access returns."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("A", PURCHASED)
    clock.now = s.start + 31 * DAY
    s.step("A", PAUSED, state="SUBSCRIPTION_STATE_PAUSED", expiry_time=s.start + 30 * DAY)
    assert view(s.only(), "status", "entitled") == ("paused", False)
    clock.now = s.start + 61 * DAY
    s.step("A", RENEWED, expiry_time=s.start + 91 * DAY)
    assert view(s.only(), "status", "entitled") == ("active", True)


def test_upgrade_chain_a_b_c(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A -> B -> C: one subscription under the newest token, every token finds it, each acked."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("A", PURCHASED, "basic_monthly", acknowledged=False)
    s.step("B", PURCHASED, "premium_monthly", linked_purchase_token="A", acknowledged=False)
    s.step("A", EXPIRED, "basic_monthly", state="SUBSCRIPTION_STATE_EXPIRED",
           canceled="replacement", expiry_time=clock.now)
    s.step("C", PURCHASED, "premium_yearly", linked_purchase_token="B", acknowledged=False,
           expiry_time=s.start + 365 * DAY)
    s.step("B", EXPIRED, "premium_monthly", state="SUBSCRIPTION_STATE_EXPIRED",
           canceled="replacement", linked_purchase_token="A", expiry_time=clock.now)
    sub = s.only()
    assert view(sub, "store_id", "product_id", "status", "entitled") == (
        "C", "premium_yearly", "active", True)
    assert sorted(sub["store_ids"]) == ["A", "B", "C"]
    for token in ("A", "B", "C"):
        found = google_app.client.get("/v1/subscriptions", params={"store_id": token}).json()
        assert [item["id"] for item in found["items"]] == [sub["id"]]
    acked = [c.params["token"] for c in fake_play.calls_named("subscriptions.acknowledge")]
    assert acked == ["A", "B", "C"]


def test_chain_arriving_backwards_is_one_subscription(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """C (linking B) first, then A, then B (linking A): merged into one subscription under C."""
    s = story(google_app, pusher, fake_play, clock)
    s.holds("A", "basic_monthly", state="SUBSCRIPTION_STATE_EXPIRED", canceled="replacement",
            expiry_time=s.start)
    s.holds("B", "premium_monthly", state="SUBSCRIPTION_STATE_EXPIRED", canceled="replacement",
            linked_purchase_token="A", expiry_time=s.start)
    s.holds("C", "premium_yearly", linked_purchase_token="B", expiry_time=s.start + 365 * DAY)
    s.push("C", PURCHASED)
    s.push("A", PURCHASED)
    assert len(s.subscriptions()) == 2
    s.push("B", PURCHASED)
    sub = s.only()
    assert view(sub, "store_id", "product_id", "status") == ("C", "premium_yearly", "active")
    assert sorted(sub["store_ids"]) == ["A", "B", "C"]
    events = google_app.client.get(f"/v1/subscriptions/{sub['id']}/events").json()["items"]
    assert "merged" in [e["kind"] for e in events]
    assert len(events) == 4


def test_old_token_grants_nothing_on_its_own(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """After an upgrade, news about the replaced token never changes the subscription."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("A", PURCHASED)
    s.step("B", PURCHASED, "premium_yearly", linked_purchase_token="A",
           expiry_time=s.start + 365 * DAY)
    before = s.only()
    s.step("A", RECOVERED, state="SUBSCRIPTION_STATE_ACTIVE", expiry_time=s.start + 99 * DAY)
    s.step("A", CANCELED, state="SUBSCRIPTION_STATE_CANCELED")
    after = s.only()
    keys = ("store_id", "product_id", "status", "auto_renew", "expires_at")
    assert view(after, *keys) == view(before, *keys)


def test_deferred_downgrade_switches_at_renewal(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A downgrade waits for the period end as renewal_product_id, then becomes the product."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("A", PURCHASED, "premium_monthly")
    s.step("B", PURCHASED, "premium_monthly", linked_purchase_token="A",
           deferred_product_id="basic_monthly")
    assert view(s.only(), "store_id", "product_id", "renewal_product_id") == (
        "B", "premium_monthly", "basic_monthly")
    clock.now = s.start + 30 * DAY
    s.step("B", RENEWED, "basic_monthly", linked_purchase_token="A",
           expiry_time=s.start + 60 * DAY)
    assert view(s.only(), "store_id", "product_id", "renewal_product_id") == (
        "B", "basic_monthly", "basic_monthly")


def test_pending_upgrade_then_abandoned_or_completed(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A pending upgrade leaves A untouched; abandoned it grants nothing, paid it continues A."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("A", PURCHASED)
    before = s.only()
    s.step("B", PURCHASED, "premium_yearly", state="SUBSCRIPTION_STATE_PENDING",
           linked_purchase_token="A", acknowledged=False)
    s.step("B", PENDING_CANCELED, "premium_yearly",
           state="SUBSCRIPTION_STATE_PENDING_PURCHASE_CANCELED", linked_purchase_token="A",
           acknowledged=False)
    assert s.only() == before
    assert fake_play.calls_named("subscriptions.acknowledge") == []
    s.step("C", PURCHASED, "premium_yearly", linked_purchase_token="A", acknowledged=False)
    assert view(s.only(), "store_id", "product_id") == ("C", "premium_yearly")


def test_revoked_stays_revoked_against_late_news(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """After a revocation, delayed notifications read as EXPIRED do not rename the period."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("A", PURCHASED)
    s.step("A", REVOKED, state="SUBSCRIPTION_STATE_EXPIRED", expiry_time=clock.now)
    assert view(s.only(), "status", "entitled") == ("revoked", False)
    s.push("A", RENEWED)
    s.push("A", EXPIRED)
    assert view(s.only(), "status", "entitled") == ("revoked", False)


def test_voided_purchase_revokes_and_records_once(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A voided current order revokes the period; its refund is recorded once, however often."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("A", PURCHASED, order_id="GPA.1")
    s.holds("A", state="SUBSCRIPTION_STATE_EXPIRED", order_id="GPA.1", expiry_time=clock.now)
    for message in ("v-1", "v-2"):
        pusher.push(voided_notification("A", "GPA.1", 1, clock.now), message)
    s.push("A", RENEWED, drain=False)
    google_app.drain()
    assert view(s.only(), "status", "entitled") == ("revoked", False)
    refunds = google_app.client.get("/v1/refunds").json()["items"]
    assert [(r["store_id"], r["account_id"], r["subscription_id"]) for r in refunds] == [
        ("A", ACCOUNT, s.only()["id"])]
    assert len(fake_play.calls_named("subscriptionsv2.get")) == 2


def test_burst_for_one_token_costs_one_read(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """Reordered and duplicated notifications waiting together are answered by one read."""
    s = story(google_app, pusher, fake_play, clock)
    s.holds("A", state="SUBSCRIPTION_STATE_CANCELED")
    s.holds("B")
    for token, code in [("A", EXPIRED), ("A", CANCELED), ("B", PURCHASED), ("A", PURCHASED),
                        ("A", RENEWED), ("B", RENEWED)]:
        s.push(token, code, drain=False)
    pusher.push(subscription_notification("A", CANCELED, clock.now), "msg-2")  # redelivered
    google_app.drain()
    assert sorted(c.params["token"] for c in fake_play.calls_named("subscriptionsv2.get")) == [
        "A", "B"]
    assert {e.status for e in s.inbox()} == {"processed"}
    by_token = {sub["store_id"]: sub for sub in s.subscriptions()}
    assert view(by_token["A"], "status", "auto_renew") == ("active", False)


def test_waiting_notifications_beyond_the_batch_are_covered(
    make_google_settings: Any, fake_play: FakePlay, clock: FakeClock, oidc: Any
) -> None:
    """Notifications for a token that did not fit in the batch are done by the batch's read."""
    from reconcile.services import build_services
    from tests.conftest import ADMIN_TOKEN
    from tests.support.server import serve_in_thread

    services = build_services(make_google_settings(worker_batch_size=2), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        s = story(app, Pusher(app.client, oidc), fake_play, clock)
        s.holds("A")
        for code in (PURCHASED, RENEWED, CANCELED, RENEWED, RECOVERED, REVOKED):
            s.push("A", code, drain=False)
        clock.advance(minutes=1)
        assert app.services.worker().run_once() == 2
        statuses = [e.status for e in s.inbox()]
        assert statuses == ["processed"] * 5 + ["pending"]  # a revocation is read for itself
        app.drain()
    services.close()
    assert len(fake_play.calls_named("subscriptionsv2.get")) == 2


def test_resubscribe_while_another_is_active_stays_separate(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """Account matching continues only ended subscriptions: two running ones stay two."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("A", PURCHASED, "premium_monthly")
    s.step("B", PURCHASED, "family_addon")
    assert sorted(sub["store_id"] for sub in s.subscriptions()) == ["A", "B"]


def test_gone_token_is_recorded_as_failed(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """410 from Google is permanent: the notification is failed with the reason, not retried."""
    s = story(google_app, pusher, fake_play, clock)
    s.holds("A")
    fake_play.fail_next("subscriptionsv2.get", 410)
    s.push("A", RENEWED)
    [entry] = s.inbox()
    assert entry.status == "failed"
    assert entry.error is not None
    assert "410 subscriptionPurchaseNoLongerAvailable" in entry.error
    assert s.subscriptions() == []


def test_unknown_token_is_recorded_as_failed(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """404 for a token Google does not know is permanent too."""
    s = story(google_app, pusher, fake_play, clock)
    s.push("nobody-knows", PURCHASED)
    [entry] = s.inbox()
    assert (entry.status, entry.attempts) == ("failed", 1)


def test_transient_errors_are_retried(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """5xx and 429 are retried in the call; when they persist the notification waits and retries."""
    s = story(google_app, pusher, fake_play, clock)
    s.holds("A")
    fake_play.fail_next("subscriptionsv2.get", 503)
    fake_play.fail_next("subscriptionsv2.get", 429)
    s.push("A", PURCHASED)
    assert s.only()["status"] == "active"
    assert [c.status for c in fake_play.calls_named("subscriptionsv2.get")] == [503, 429, 200]

    fake_play.fail_next("subscriptionsv2.get", 500, times=4)
    s.push("A", RENEWED)
    entry = s.inbox()[-1]
    assert (entry.status, entry.attempts) == ("pending", 1)
    assert entry.error is not None
    assert "500" in entry.error
    clock.advance(minutes=5)
    google_app.drain()
    assert s.inbox()[-1].status == "processed"


def test_apple_and_google_side_by_side(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock,
    apple_ca: AppleTestCA,
) -> None:
    """One account's Apple and Google subscriptions share the tables and the admin API."""
    s = story(google_app, pusher, fake_play, clock)
    s.step("G", PURCHASED)
    at = int(clock.now.timestamp() * 1000)
    apple = sign_notification(apple_ca, {
        "notificationType": "SUBSCRIBED", "subtype": "INITIAL_BUY",
        "notificationUUID": "5e5e5e5e-0000-4000-8000-000000000001", "signedDate": at,
        "data": {"status": 1, "transaction": {
            "originalTransactionId": "7001", "transactionId": "7001", "productId": "phone.monthly",
            "purchaseDate": at, "expiresDate": at + 30 * 86_400_000, "appAccountToken": ACCOUNT,
            "type": "Auto-Renewable Subscription"}},
    })
    assert google_app.client.post("/webhooks/apple",
                                  json={"signedPayload": apple}).status_code == 200
    google_app.drain()
    account = google_app.client.get(f"/v1/accounts/{ACCOUNT}").json()
    assert account["entitled"] is True
    assert sorted((sub["channel"], sub["store_id"]) for sub in account["subscriptions"]) == [
        ("apple", "7001"), ("google", "G")]
