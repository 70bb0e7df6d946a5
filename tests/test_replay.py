"""`reconcile replay`: derived state rebuilt from the inbox, and nothing else touched."""

from __future__ import annotations

import copy
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from reconcile.db import transaction
from reconcile.models import Base, OutboxEntry, StoreId, Subscription, SubscriptionEvent
from reconcile.replay.rebuild import Change
from reconcile.replay.runner import Replayer, ReplayFilters, ReplayRefused, ReplaySummary
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.apple_burst import Story, story
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.google import Pusher, subscription_notification
from tests.support.process import ROOT, service_env
from tests.support.server import FakeClock, RunningApp


def deliver(app: RunningApp, ca: AppleTestCA, count: int) -> list[Story]:
    """`count` Apple subscriptions, each from three notifications, applied by the worker."""
    start = datetime.now(UTC) - timedelta(days=31)
    stories = [story(n, start) for n in range(count)]
    for s in stories:
        for note in s.notifications:
            body = {"signedPayload": sign_notification(ca, note)}
            assert app.client.post("/webhooks/apple", json=body).status_code == 200
    app.drain()
    return stories


def states(app: RunningApp, stories: list[Story]) -> dict[str, dict[str, Any]]:
    items = app.client.get("/v1/subscriptions", params={"limit": 200}).json()["items"]
    keys = stories[0].expected.keys()
    return {i["store_id"]: {k: i[k] for k in keys} for i in items if i["channel"] == "apple"}


def everything(app: RunningApp) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove that nothing was written."""
    with app.services.sessions() as session:
        return {table.name: sorted(tuple(map(repr, row)) for row in
                                   session.execute(select(table)))
                for table in Base.metadata.sorted_tables}


def replay(app: RunningApp, *, dry_run: bool, **filters: Any) -> tuple[ReplaySummary,
                                                                         list[Change]]:
    changes: list[Change] = []
    replayer = Replayer(app.services.sessions, app.services.processors, app.services.clock)
    summary = replayer.run(ReplayFilters(**filters), dry_run=dry_run, on_change=changes.append)
    return summary, changes


def corrupt(app: RunningApp, store_id: str, **values: Any) -> None:
    with transaction(app.services.sessions) as session:
        session.execute(update(Subscription).where(Subscription.store_id == store_id)
                        .values(**values))


@pytest.fixture
def portal_and_block(app: RunningApp) -> dict[str, Any]:
    """A portal subscription on a blocked account: nothing the inbox could rebuild."""
    created = app.client.post("/v1/portal/subscriptions", json={
        "account_id": "acct-web", "product_id": "web.monthly", "auto_renew": True,
        "expires_at": "2026-12-20T00:00:00Z"})
    assert created.status_code == 201, created.text
    blocked = app.client.post("/v1/accounts/acct-web/block", json={"reason": "fraud"})
    assert blocked.status_code == 200, blocked.text
    return dict(app.client.get(f"/v1/subscriptions/{created.json()['id']}").json())


def test_a_dry_run_prints_the_differences_and_writes_nothing(
    app: RunningApp, apple_ca: AppleTestCA, portal_and_block: dict[str, Any]
) -> None:
    """A dry run reports, per subscription, each field it would rebuild (here -> rebuilt) and
    leaves every table exactly as it was."""
    stories = deliver(app, apple_ca, 3)
    broken = stories[1].original_transaction_id
    corrupt(app, broken, status="revoked", product_id="com.example.wrong")
    before = everything(app)
    summary, changes = replay(app, dry_run=True)
    assert everything(app) == before
    assert (summary.subscriptions, summary.notifications, summary.changed) == (3, 9, 1)
    assert summary.skipped == []
    assert sorted((c.store_id, c.field, c.here, c.rebuilt) for c in changes) == [
        (broken, "product_id", "com.example.wrong", stories[1].expected["product_id"]),
        (broken, "status", "revoked", "active"),
    ]
    [line] = [c.line() for c in changes if c.field == "status"]
    assert line.endswith("status: revoked -> active")


def test_a_replay_rebuilds_lost_and_broken_state_and_keeps_the_rest(
    app: RunningApp, apple_ca: AppleTestCA, portal_and_block: dict[str, Any]
) -> None:
    """After derived rows were lost or damaged, a replay restores every Apple subscription
    from the inbox (history not doubled), while the portal subscription, the block and the
    outbox stay exactly as they were."""
    stories = deliver(app, apple_ca, 4)
    expected = states(app, stories)
    history = len(app.client.get(
        f"/v1/subscriptions/{portal_and_block['id']}/events").json()["items"])
    lost, broken = stories[0].original_transaction_id, stories[1].original_transaction_id
    with transaction(app.services.sessions) as session:
        [lost_id] = session.scalars(select(Subscription.id).where(Subscription.store_id == lost))
        session.add(OutboxEntry(channel="apple", kind="consumption", dedupe_key="kept",
                                payload={"x": 1}, state="sent", attempts=1,
                                created_at=app.services.clock(),
                                next_attempt_at=app.services.clock()))
        session.execute(delete(SubscriptionEvent).where(
            SubscriptionEvent.subscription_id == lost_id))
        session.execute(delete(StoreId).where(StoreId.subscription_id == lost_id))
        session.execute(delete(Subscription).where(Subscription.id == lost_id))
    corrupt(app, broken, auto_renew=True, expires_at=datetime(2030, 1, 1, tzinfo=UTC))
    outbox = everything(app)["outbox"]
    events_before = everything(app)["subscription_events"]

    summary, changes = replay(app, dry_run=False)
    assert summary.skipped == []
    assert {c.store_id for c in changes} == {lost, broken}
    assert states(app, stories) == expected
    assert everything(app)["outbox"] == outbox
    assert len(everything(app)["subscription_events"]) == len(events_before) + 3
    portal = app.client.get(f"/v1/subscriptions/{portal_and_block['id']}").json()
    assert portal == portal_and_block
    assert len(app.client.get(
        f"/v1/subscriptions/{portal['id']}/events").json()["items"]) == history
    account = app.client.get("/v1/accounts/acct-web").json()
    assert account["blocked"]["reason"] == "fraud"

    again, more = replay(app, dry_run=True)
    assert (again.changed, more) == (0, [])


def test_a_replay_can_be_narrowed_by_store_id_and_time(
    app: RunningApp, apple_ca: AppleTestCA, clock: FakeClock
) -> None:
    """--store-id rebuilds only that subscription; --since/--until pick subscriptions by when
    their notifications were received."""
    stories = deliver(app, apple_ca, 2)
    first, second = (s.original_transaction_id for s in stories)
    corrupt(app, first, status="expired")
    corrupt(app, second, status="expired")
    received = clock()
    _, changes = replay(app, dry_run=True, store_id=second)
    assert {c.store_id for c in changes} == {second}
    _, later = replay(app, dry_run=True, since=received + timedelta(seconds=1))
    assert later == []
    summary, window = replay(app, dry_run=False, since=received - timedelta(hours=1),
                             until=received + timedelta(seconds=1))
    assert {c.store_id for c in window} == {first, second}
    assert summary.changed == 2


def test_a_channel_that_is_not_configured_is_refused(app: RunningApp) -> None:
    """Replaying Google without its Play API set up is refused with a clear reason."""
    with pytest.raises(ReplayRefused, match="google notifications cannot be replayed"):
        replay(app, dry_run=True, channel="google")


def test_google_is_replayed_through_a_fresh_read(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A Google subscription is rebuilt from its notifications with one Play read per token,
    through the same normaliser as the worker's."""
    fake_play.subscriptions["tok-r"] = subscription_purchase(
        "premium_monthly", now=clock(), account_id="acct-g",
        expiry_time=clock() + timedelta(days=30), acknowledged=True)
    for code in (4, 2):
        clock.advance(minutes=1)
        pusher.push(subscription_notification("tok-r", code, clock()))
    google_app.drain()
    [sub] = google_app.client.get("/v1/subscriptions").json()["items"]
    corrupt(google_app, "tok-r", status="paused", auto_renew=False)
    reads = len(fake_play.calls)
    summary, changes = replay(google_app, dry_run=False, channel="google")
    assert summary.skipped == []
    assert {(c.field, c.here, c.rebuilt) for c in changes} >= {("status", "paused", "active")}
    assert google_app.client.get(f"/v1/subscriptions/{sub['id']}").json()["status"] == "active"
    assert len(fake_play.calls) - reads == 1


@pytest.mark.slow
def test_the_replay_command(
    app: RunningApp, apple_ca: AppleTestCA, database_url: str, apple_root_file: Path
) -> None:
    """`reconcile replay --dry-run` prints each difference and changes nothing; without it the
    differences are applied; a bad time is refused with exit 2."""
    stories = deliver(app, apple_ca, 2)
    broken = stories[0].original_transaction_id
    corrupt(app, broken, status="revoked")
    env = service_env(database_url, apple_root_file)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reconcile", "replay", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120,
                              check=False)

    dry = command("--dry-run", "--channel", "apple")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"apple {broken} " in dry.stdout
    assert "status: revoked -> active" in dry.stdout
    assert "dry run: 2 subscriptions replayed from 6 notifications" in dry.stdout
    assert states(app, stories)[broken]["status"] == "revoked"
    real = command()
    assert real.returncode == 0, real.stdout + real.stderr
    assert states(app, stories)[broken]["status"] == "active"
    refused = command("--since", "yesterday")
    assert refused.returncode == 2
    assert "not an ISO 8601 time" in refused.stdout + refused.stderr


def test_a_replay_passes_through_no_state_it_does_not_end_in(
    app: RunningApp, apple_ca: AppleTestCA
) -> None:
    """Renewal turned off and on again, then a cancellation asked for: the replay goes
    straight to the final state, so the waiting cancellation is not taken as confirmed, and
    the rebuilt history keeps the order the notifications came in."""
    s = story(9, datetime.now(UTC) - timedelta(days=31))
    again = copy.deepcopy(s.notifications[2])
    again.update(subtype="AUTO_RENEW_ENABLED", notificationUUID=str(uuid.uuid4()),
                 signedDate=again["signedDate"] + 86_400_000)
    again["data"]["renewal"]["autoRenewStatus"] = 1
    for note in (*s.notifications, again):
        body = {"signedPayload": sign_notification(apple_ca, note)}
        assert app.client.post("/webhooks/apple", json=body).status_code == 200
    app.drain()
    [sub] = app.client.get("/v1/subscriptions").json()["items"]
    assert sub["auto_renew"] is True
    asked = app.client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                            json={"reason": "customer_request"})
    assert asked.json()["cancellation"]["state"] == "customer_action_required", asked.text
    corrupt(app, s.original_transaction_id, product_id="com.example.wrong")

    summary, changes = replay(app, dry_run=False)
    assert summary.skipped == []
    assert [(c.field, c.rebuilt) for c in changes] == [("product_id", sub["product_id"])]
    after = app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert after["cancellation"]["state"] == "customer_action_required"
    assert after == {**sub, "cancellation": after["cancellation"],
                     "updated_at": after["updated_at"]}
    history = app.client.get(f"/v1/subscriptions/{sub['id']}/events").json()["items"]
    kinds = [event["kind"] for event in history]
    assert kinds == sorted(kinds, key=["SUBSCRIBED/INITIAL_BUY", "DID_RENEW",
                                       "DID_CHANGE_RENEWAL_STATUS/AUTO_RENEW_DISABLED",
                                       "DID_CHANGE_RENEWAL_STATUS/AUTO_RENEW_ENABLED"].index)
