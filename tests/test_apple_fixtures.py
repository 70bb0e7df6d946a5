"""fixtures/apple is the spec: every notification kind, signed, posted over HTTP, applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconcile.channels.apple import AppleProcessor, Envelope
from reconcile.channels.apple_normalise import normalise
from reconcile.models import InboxEntry
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.server import RunningApp

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures" / "apple").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def post(app: RunningApp, ca: AppleTestCA, notification: dict[str, Any]) -> None:
    response = app.client.post(
        "/webhooks/apple", json={"signedPayload": sign_notification(ca, notification)}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture(path: Path, app: RunningApp, apple_ca: AppleTestCA) -> None:
    """Each fixture, after its `given` notifications, ends in exactly its expected state."""
    fixture = load(path)
    for earlier in fixture["given"]:
        post(app, apple_ca, earlier)
    post(app, apple_ca, fixture["notification"])
    app.drain()

    inbox = app.client.get("/metrics").text
    assert 'status="failed"' not in inbox
    assert 'status="pending"' not in inbox
    expected = fixture["expected"]
    subs = app.client.get("/v1/subscriptions").json()["items"]
    if expected["subscription"] is None:
        assert subs == []
    else:
        assert len(subs) == 1
        got = {key: subs[0][key] for key in expected["subscription"]}
        assert got == expected["subscription"]
        assert subs[0]["store_ids"] == [subs[0]["store_id"]]
    account = fixture["notification"].get("data", {}).get("transaction", {}).get("appAccountToken")
    if "purchases" in expected:
        purchases = app.client.get(f"/v1/accounts/{account}").json()["purchases"]
        assert [{k: p[k] for k in want} for p, want in
                zip(purchases, expected["purchases"], strict=True)] == expected["purchases"]
    if "refunds" in expected:
        refunds = app.client.get("/v1/refunds").json()["items"]
        assert [{k: r[k] for k in want} for r, want in
                zip(refunds, expected["refunds"], strict=True)] == expected["refunds"]


@pytest.mark.parametrize(
    "path", [p for p in FIXTURES if "normalised" in load(p)["expected"]],
    ids=lambda p: p.stem,
)
def test_normalised(path: Path, app: RunningApp, apple_ca: AppleTestCA) -> None:
    """The pure normaliser's outcome for a fixture matches the expected normalised result.

    The worker decodes the recorded payload without verifying it again: what it reads must be
    exactly what verification produced when the notification was recorded.
    """
    fixture = load(path)
    services = app.services
    assert services.apple is not None
    processor = AppleProcessor(services.apple)
    verified = services.apple.verify(sign_notification(apple_ca, fixture["notification"]))
    incoming = verified.incoming()
    recorded = Envelope.recorded(InboxEntry(
        channel="apple", notification_id=incoming.notification_id, payload=incoming.payload,
        environment=incoming.environment))
    assert recorded == Envelope.of(verified)
    assert normalise(processor.decode(recorded)).summary() == fixture["expected"]["normalised"]
