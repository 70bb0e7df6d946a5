"""Every Google purchase is acknowledged after it is stored, retried, and watched when it is not."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from tests.fakes.play import FakePlay, product_purchase, subscription_purchase
from tests.support.google import Pusher, one_time_notification, subscription_notification
from tests.support.server import FakeClock, RunningApp

ACK = "subscriptions.acknowledge"


def acknowledgements(app: RunningApp, state: str) -> dict[str, Any]:
    response = app.client.get("/v1/acknowledgements", params={"state": state})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def unacknowledged_metric(app: RunningApp) -> float:
    for line in app.client.get("/metrics").text.splitlines():
        if line.startswith("reconcile_google_unacknowledged "):
            return float(line.split()[1])
    raise AssertionError("metric missing")


def test_acknowledged_only_after_the_entitlement_is_stored(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """The acknowledgement is sent by its own job once the subscription is committed."""
    fake_play.subscriptions["A"] = subscription_purchase("premium_monthly", now=clock.now)
    pusher.push(subscription_notification("A", 4, clock.now))
    inbox_job, ack_job = google_app.services.jobs[0], google_app.services.jobs[1]
    assert inbox_job.run_once(clock.now) == 1
    assert fake_play.calls_named(ACK) == []
    [sub] = google_app.client.get("/v1/subscriptions").json()["items"]
    assert sub["entitled"] is True
    assert acknowledgements(google_app, "pending")["counts"] == {"pending": 1, "stale": 0}
    assert ack_job.run_once(clock.now) == 1
    [call] = fake_play.calls_named(ACK)
    assert call.params == {"packageName": "com.example.reconcile",
                           "subscriptionId": "premium_monthly", "token": "A"}
    assert fake_play.subscriptions["A"]["acknowledgementState"] == (
        "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED")
    assert acknowledgements(google_app, "pending")["items"] == []


def test_failed_acknowledgement_is_retried_with_backoff(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """When Google keeps failing, the row waits with its error and is retried later."""
    fake_play.subscriptions["A"] = subscription_purchase(now=clock.now)
    fake_play.fail_next(ACK, 503, times=4)
    pusher.push(subscription_notification("A", 4, clock.now))
    google_app.drain()
    [item] = acknowledgements(google_app, "pending")["items"]
    assert item["attempts"] == 1
    assert "503" in item["last_error"]
    assert item["next_attempt_at"] > clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    clock.advance(minutes=1)
    google_app.drain()
    assert acknowledgements(google_app, "acknowledged")["items"][0]["attempts"] == 2


def test_already_acknowledged_at_google_counts(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A 400 on acknowledge for a purchase Google already counts as acknowledged is done."""
    fake_play.subscriptions["A"] = subscription_purchase(now=clock.now)
    pusher.push(subscription_notification("A", 4, clock.now))
    google_app.services.jobs[0].run_once(clock.now)
    fake_play.subscriptions["A"]["acknowledgementState"] = "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
    fake_play.fail_next(ACK, 400)
    google_app.drain()
    assert acknowledgements(google_app, "pending")["counts"] == {"pending": 0, "stale": 0}


def test_consumable_is_consumed(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """Usage credits are consumed (not just acknowledged) and the purchase says so."""
    fake_play.products["P"] = product_purchase("credits_100", account_id="acct-c", quantity=3)
    pusher.push(one_time_notification("P", "credits_100", 1, clock.now))
    google_app.drain()
    assert fake_play.products["P"]["consumptionState"] == 1
    account = google_app.client.get("/v1/accounts/acct-c").json()
    [purchase] = account["purchases"]
    assert (purchase["kind"], purchase["quantity"], purchase["consumed"]) == (
        "consumable", 3, True)
    assert [c.name.rsplit(".", 1)[1] for c in fake_play.calls_named("products.consume")] == [
        "consume"]


def test_watchdog_finds_retries_and_reports_stale_purchases(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the watchdog age an open acknowledgement is counted, listed, logged and retried."""
    fake_play.subscriptions["A"] = subscription_purchase(now=clock.now)
    fake_play.fail_next(ACK, 500, times=1000)
    pusher.push(subscription_notification("A", 4, clock.now))
    google_app.drain()
    clock.advance(hours=23)
    assert unacknowledged_metric(google_app) == 0
    clock.advance(hours=2)
    google_app.drain()
    assert unacknowledged_metric(google_app) == 1
    stale = acknowledgements(google_app, "stale")
    assert stale["counts"] == {"pending": 1, "stale": 1}
    [item] = stale["items"]
    assert (item["store_id"], item["stale"]) == ("A", True)

    fake_play.reset()
    fake_play.subscriptions["A"] = subscription_purchase(now=clock.now)
    before = clock.now
    clock.advance(minutes=11)  # the next watchdog round pulls the retry forward
    with caplog.at_level(logging.ERROR, logger="reconcile.acknowledgements"):
        google_app.drain()
    assert any("unacknowledged for over" in r.getMessage() for r in caplog.records)
    assert unacknowledged_metric(google_app) == 0
    [done] = acknowledgements(google_app, "acknowledged")["items"]
    assert done["acknowledged_at"] > before.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_nothing_to_acknowledge_for_pending_or_acknowledged(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """Only ACTIVE or IN_GRACE_PERIOD purchases still PENDING acknowledgement are acknowledged."""
    fake_play.subscriptions["P"] = subscription_purchase(
        state="SUBSCRIPTION_STATE_PENDING", now=clock.now)
    fake_play.subscriptions["K"] = subscription_purchase(acknowledged=True, now=clock.now)
    fake_play.subscriptions["H"] = subscription_purchase(
        state="SUBSCRIPTION_STATE_ON_HOLD", now=clock.now,
        expiry_time=clock.now - dt.timedelta(days=1))
    for token in ("P", "K", "H"):
        pusher.push(subscription_notification(token, 4, clock.now))
    google_app.drain()
    assert fake_play.calls_named(ACK) == []
    assert acknowledgements(google_app, "all")["items"] == []


def test_admin_api_requires_the_token(google_app: RunningApp) -> None:
    """The acknowledgement list is admin-only."""
    response = google_app.client.get("/v1/acknowledgements", headers={"Authorization": ""})
    assert response.status_code == 401
