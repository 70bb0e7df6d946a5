"""The audit log: every admin action of the API and the console, newest first, paged."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.support.console import post_form
from tests.support.policy import portal_subscription
from tests.support.server import RunningApp

ACCOUNT = "acct-audit-1"
Clients = Callable[..., httpx.Client]


def test_every_api_action_is_audited_as_api(app: RunningApp) -> None:
    """Portal create and patch, cancel, change plan, block, unblock, port-out, consent, a credit
    adjustment and account cancel each leave one record with actor `api`."""
    sub = portal_subscription(app, ACCOUNT)
    client = app.client
    calls = [
        client.patch(f"/v1/portal/subscriptions/{sub['id']}", json={"auto_renew": True}),
        client.post(f"/v1/subscriptions/{sub['id']}/change-plan",
                    json={"product_id": "portal.pro.yearly"}),
        client.post(f"/v1/subscriptions/{sub['id']}/cancel",
                    json={"reason": "customer_request", "note": "by phone"}),
        client.post(f"/v1/accounts/{ACCOUNT}/cancel", json={"reason": "admin"}),
        client.post(f"/v1/accounts/{ACCOUNT}/block", json={"reason": "spam"}),
        client.post(f"/v1/accounts/{ACCOUNT}/unblock"),
        client.post(f"/v1/accounts/{ACCOUNT}/port-out", json={"note": "left"}),
        client.put(f"/v1/accounts/{ACCOUNT}/consent", json={"consumption_data": True}),
        client.post(f"/v1/accounts/{ACCOUNT}/credits/adjustments",
                    json={"amount": 5, "note": "goodwill"}),
    ]
    assert [c.status_code for c in calls] == [200] * (len(calls) - 1) + [201], \
        [c.text for c in calls]
    items = client.get("/v1/audit").json()["items"]
    assert [i["action"] for i in items] == [
        "credits.adjust", "account.consent", "account.port_out", "account.unblock",
        "account.block", "account.cancel", "subscription.cancel", "subscription.change_plan",
        "portal.update", "portal.create"]
    assert {i["actor"] for i in items} == {"api"}
    assert set(items[0]) == {"at", "actor", "action", "target", "reason", "note"}
    block = items[4]
    assert (block["target"], block["reason"], block["at"]) == (
        ACCOUNT, "spam", "2026-11-01T12:00:00Z")
    cancel = items[6]
    assert (cancel["target"], cancel["reason"], cancel["note"]) == (
        sub["id"], "customer_request", "by phone")


def test_a_refused_action_leaves_no_record(app: RunningApp) -> None:
    """An action that fails (unknown account) is rolled back together with its audit record."""
    assert app.client.post("/v1/accounts/nobody/block", json={"reason": "x"}).status_code == 404
    assert app.client.get("/v1/audit").json() == {"items": [], "next_cursor": None}


def test_audit_pages_newest_first(app: RunningApp) -> None:
    """`limit` and `next_cursor` walk the whole log newest first, each record once."""
    portal_subscription(app, ACCOUNT)
    for _ in range(4):
        app.client.put(f"/v1/accounts/{ACCOUNT}/consent", json={"consumption_data": True})
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = app.client.get("/v1/audit", params=params).json()
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [i["action"] for i in seen] == ["account.consent"] * 4 + ["portal.create"]
    assert app.client.get("/v1/audit", params={"cursor": "%%%"}).status_code == 400


def test_the_audit_log_needs_the_admin_token(app: RunningApp) -> None:
    """Without the bearer token GET /v1/audit is 401."""
    assert httpx.get(f"{app.url}/v1/audit").status_code == 401


def test_console_actions_are_audited_with_the_users_name(
    app: RunningApp, client_for: Clients
) -> None:
    """A block from the console is recorded with the console user's name and reason, and it is
    the same block the API makes (access ends, renewal cancelled)."""
    portal_subscription(app, ACCOUNT)
    admin = client_for(app, "alice", "admin")
    answer = post_form(admin, f"/console/accounts/{ACCOUNT}/block",
                       {"reason": "spam complaints"})
    assert answer.status_code == 303
    [latest, *_] = app.client.get("/v1/audit").json()["items"]
    assert {k: latest[k] for k in ("actor", "action", "target", "reason")} == {
        "actor": "alice", "action": "account.block", "target": ACCOUNT,
        "reason": "spam complaints"}
    account = app.client.get(f"/v1/accounts/{ACCOUNT}").json()
    assert account["blocked"]["reason"] == "spam complaints"
    assert account["entitled"] is False
    assert account["subscriptions"][0]["auto_renew"] is False
