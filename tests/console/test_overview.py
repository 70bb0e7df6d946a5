"""The overview and reconciliation pages: figures drawn on the server, actions by role."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.support.console import PASSWORD, add_console_user, csrf_of
from tests.support.policy import portal_subscription
from tests.support.server import RunningApp

Clients = Callable[..., httpx.Client]


def test_overview_counts_and_charts(app: RunningApp, client_for: Clients) -> None:
    """Counts by channel and status include a new portal subscription; the charts are inline
    SVG with a text alternative."""
    portal_subscription(app, "acct-ov-1", expires_at="2026-12-01T12:00:00Z")
    page = client_for(app, "vic", "viewer").get("/console").text
    active_row = page.split('tone-good">Active</span></th>')[1].split("</tr>")[0]
    assert active_row.count("<td>") == 3
    assert "<td>1</td>" in active_row
    assert page.count('<svg class="chart"') == 2
    assert 'role="img"' in page
    assert "As a table" in page
    assert "<script" not in page.split("</head>")[1]


def test_only_admins_may_start_a_reconciliation(app: RunningApp, client_for: Clients) -> None:
    """An agent sees the runs but no start form, and a forged start answers 403."""
    agent = client_for(app, "bob", "agent")
    page = agent.get("/console/reconciliations").text
    assert "Runs" in page
    assert "Start reconciliation" not in page
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    answer = agent.post("/console/reconciliations", data={"csrf_token": token})
    assert answer.status_code == 403
    assert app.client.get("/v1/reconciliations").json()["items"] == []


def test_sign_in_never_redirects_elsewhere(app: RunningApp, client_for: Clients) -> None:
    """A `next` that points off the console lands on the overview instead."""
    add_console_user(app, "alice", "viewer")
    client = client_for(app)
    form = client.get("/console/login", params={"next": "https://evil.example/"})
    answer = client.post("/console/login", data={
        "username": "alice", "password": PASSWORD,
        "csrf_token": csrf_of(form.text), "next": "//evil.example/"})
    assert answer.headers["location"] == "/console"


def test_events_told_and_failing_deliveries_are_shown(
    app: RunningApp, client_for: Clients
) -> None:
    """An event whose endpoint is down shows on the account's timeline with its delivery
    state, and the overview names the endpoint that is failing."""
    dead = "http://127.0.0.1:9/hooks"  # the discard port: nothing answers
    created = app.client.post("/v1/webhook-endpoints", json={"url": dead, "event_types": None})
    assert created.status_code == 201, created.text
    portal_subscription(app, "acct-ev-1", expires_at="2026-12-01T12:00:00Z")
    app.drain()
    viewer = client_for(app, "vic", "viewer")
    overview = viewer.get("/console").text
    tile = overview.split('id="t-hooks"')[1].split("</section>")[0]
    assert dead in tile
    assert "retrying" in tile
    page = viewer.get("/console/accounts/acct-ev-1").text
    assert "Told the business: subscription.started" in page
    assert "waiting to be delivered after 1 attempt" in page


def test_no_failing_deliveries_says_so(app: RunningApp, client_for: Clients) -> None:
    """Without endpoints in trouble the tile says every event reached its endpoints."""
    page = client_for(app, "vic", "viewer").get("/console").text
    assert "every event reached its endpoints" in page.split('id="t-hooks"')[1]
