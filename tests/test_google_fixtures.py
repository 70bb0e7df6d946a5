"""fixtures/google is the spec: each notification kind pushed over HTTP, read, applied, acked."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from reconcile.channels.google import GoogleProcessor
from reconcile.models import InboxEntry
from tests.fakes.play import FakePlay
from tests.support.google import Pusher
from tests.support.server import FakeClock, RunningApp

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures" / "google").glob("*.json"))
ACCOUNT = "acct-7d1c0a4e"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def steps(fixture: dict[str, Any]) -> list[dict[str, Any]]:
    main = {key: fixture[key] for key in ("envelope", "purchase", "product") if key in fixture}
    return [*fixture["given"], main]


def notification_of(step: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(step["envelope"]["message"]["data"]))
    return decoded


def stage(fake: FakePlay, step: dict[str, Any]) -> None:
    """Make the fake answer what this step's fixture says Google holds for its token."""
    notification = notification_of(step)
    token = next((section["purchaseToken"] for section in notification.values()
                  if isinstance(section, dict) and "purchaseToken" in section), None)
    if token is None:
        return
    if "purchase" in step:
        fake.subscriptions[token] = copy.deepcopy(step["purchase"])
    if "product" in step:
        fake.products[token] = copy.deepcopy(step["product"])


def subset(items: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: item.get(key) for key in want} for item, want in
            zip(items, wanted, strict=True)]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture(
    path: Path, google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """Each fixture, after its `given` pushes, ends in exactly its expected state and calls."""
    fixture = load(path)
    expected = fixture["expected"]
    assert notification_of(fixture) == fixture["notification"]
    calls_before = 0
    for number, step in enumerate(steps(fixture)):
        if number:
            clock.advance(minutes=1)
        stage(fake_play, step)
        calls_before = len(fake_play.calls)
        response = pusher.post(step["envelope"])
        assert response.status_code == 200, response.text
        google_app.drain()

    calls = [c.name.removeprefix("androidpublisher.purchases.")
             for c in fake_play.calls[calls_before:]]
    assert calls == expected["play_calls"]
    with google_app.services.sessions() as session:
        entry = session.scalars(select(InboxEntry).where(
            InboxEntry.notification_id == fixture["envelope"]["message"]["messageId"])).one()
    assert entry.status == expected["inbox_status"]
    assert entry.error == expected.get("inbox_error")
    subs = google_app.client.get("/v1/subscriptions").json()["items"]
    if expected["subscription"] is None:
        assert subs == []
    else:
        assert len(subs) == 1
        assert {key: subs[0][key] for key in expected["subscription"]} == expected["subscription"]
    if "purchases" in expected:
        purchases = google_app.client.get(f"/v1/accounts/{ACCOUNT}").json()["purchases"]
        assert subset(purchases, expected["purchases"]) == expected["purchases"]
    refunds = google_app.client.get("/v1/refunds").json()["items"]
    assert subset(refunds, expected.get("refunds", [])) == expected.get("refunds", [])
    if "acknowledgements" in expected:
        acks = google_app.client.get("/v1/acknowledgements", params={"state": "all"}).json()
        got = [{"store_id": a["store_id"], "kind": a["kind"],
                "acknowledged": a["acknowledged_at"] is not None} for a in acks["items"]]
        assert got == expected["acknowledgements"]


@pytest.mark.parametrize(
    "path", [p for p in FIXTURES if load(p)["expected"]["normalised"] is not None],
    ids=lambda p: p.stem,
)
def test_normalised(path: Path, google_app: RunningApp, fake_play: FakePlay) -> None:
    """The processor turns each fixture notification into its expected normalised result."""
    fixture = load(path)
    stage(fake_play, fixture)
    processor = google_app.services.processors["google"]
    assert isinstance(processor, GoogleProcessor)
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    entry = InboxEntry(id=1, channel="google", payload=json.dumps(fixture["envelope"]),
                       notification_id=fixture["envelope"]["message"]["messageId"])
    [outcome] = processor.normalise([entry], now)
    assert not isinstance(outcome, Exception), outcome
    assert outcome.summary() == fixture["expected"]["normalised"]
