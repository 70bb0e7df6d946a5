"""Search and the account page: every id finds its customer, the page shows every channel,
and the actions do what the API's do, with the policy's consequences stated first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx

from reconcile.db import transaction
from reconcile.ingest import ingest
from reconcile.outcomes import Normalised, RefundSeen
from reconcile.state import Channel, Stamp
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.apple_ca import AppleTestCA
from tests.support.console import post_form
from tests.support.google import Pusher, subscription_notification
from tests.support.policy import apple_note, apple_subscription, portal_subscription, post_apple
from tests.support.server import FakeClock, RunningApp

ACCOUNT = "acct-page-1"
OTX = "7000000000000042"
TRANSACTION = "7000000000000099"
TOKEN = "gpt-console-0001.AO-J1Oz"
ORDER = "GPA.3311-2402-4141-55555"
Clients = Callable[..., httpx.Client]


def test_search_finds_accounts_subscriptions_and_apple_ids(
    app: RunningApp, apple_ca: AppleTestCA, client_for: Clients
) -> None:
    """An account id, a subscription id, an original transaction id and a transaction id each
    open the account page; an unknown id says plainly that nothing was found."""
    post_apple(app, apple_ca, apple_note(1, "SUBSCRIBED", "INITIAL_BUY", account=ACCOUNT,
                                         otx=OTX, tid=TRANSACTION))
    [sub] = app.client.get("/v1/subscriptions", params={"store_id": OTX}).json()["items"]
    client = client_for(app, "vic", "viewer")
    for query in (ACCOUNT, sub["id"], OTX, TRANSACTION):
        answer = client.get("/console/search", params={"q": f" {query} "})
        assert answer.status_code == 303, query
        assert answer.headers["location"].startswith(f"/console/accounts/{ACCOUNT}")
    page = client.get("/console/search", params={"q": TRANSACTION}, follow_redirects=True)
    assert f"Account <code>{ACCOUNT}</code>" in page.text
    missing = client.get("/console/search", params={"q": "no-such-id"})
    assert missing.status_code == 200
    assert "Nothing found for “no-such-id”" in missing.text


def google_subscription(app: RunningApp, pusher: Pusher, fake_play: FakePlay,
                        clock: FakeClock) -> None:
    """The account's Google subscription (TOKEN, latest order ORDER), pushed and applied."""
    fake_play.subscriptions[TOKEN] = subscription_purchase(
        "premium_monthly", acknowledged=True, account_id=ACCOUNT, order_id=ORDER,
        expiry_time=clock.now + timedelta(days=20), now=clock.now)
    pusher.push(subscription_notification(TOKEN, 4, clock.now))
    app.drain()


def test_search_finds_google_tokens_and_order_ids(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock,
    client_for: Clients
) -> None:
    """A Google purchase token and the order id of its latest payment both find the account."""
    google_subscription(google_app, pusher, fake_play, clock)
    client = client_for(google_app, "vic", "viewer")
    for query in (TOKEN, ORDER):
        answer = client.get("/console/search", params={"q": query})
        assert answer.status_code == 303, query
        assert answer.headers["location"].startswith(f"/console/accounts/{ACCOUNT}")


def test_search_finds_the_order_id_of_a_refund(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock,
    client_for: Clients
) -> None:
    """The order id of a Google refund finds the account, even when no history names it."""
    google_subscription(google_app, pusher, fake_play, clock)
    refunded = "GPA.3311-2402-4141-00001"
    with transaction(google_app.services.sessions) as session:
        ingest(session, Normalised(kind="VOIDED_PURCHASE", refund=RefundSeen(
            channel=Channel.GOOGLE, refund_key=f"{TOKEN}:{refunded}", store_id=TOKEN,
            refunded_at=clock.now, stamp=Stamp(clock.now, "void"),
            subscription_store_id=TOKEN)), source="google", now=clock.now)
    client = client_for(google_app, "vic", "viewer")
    answer = client.get("/console/search", params={"q": refunded})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"/console/accounts/{ACCOUNT}")
    assert client.get("/console/search", params={"q": "GPA.3311-2402-4141-00002"}
                      ).status_code == 200


def test_account_page_shows_every_channel_and_a_timeline(
    app: RunningApp, apple_ca: AppleTestCA, client_for: Clients
) -> None:
    """Channel, product, status in words, expiry and auto-renew of each subscription, and a
    timeline with the store notification (decoded on demand) and admin actions."""
    apple_subscription(app, apple_ca, ACCOUNT, otx=OTX)
    portal_subscription(app, ACCOUNT, product="portal.pro.monthly")
    app.client.put(f"/v1/accounts/{ACCOUNT}/consent", json={"consumption_data": True})
    page = client_for(app, "vic", "viewer").get(f"/console/accounts/{ACCOUNT}").text
    for text in ("App Store · com.example.phone.monthly", "Portal · portal.pro.monthly",
                 '<span class="badge tone-good">Active</span>', "2026-11-30 12:00 UTC",
                 "Auto-renew</dt><dd>On", "App Store notification: SUBSCRIBED/INITIAL_BUY",
                 "Decoded payload", "account: consent", "by <strong>api</strong>"):
        assert text in page, text
    inbox = page.split('hx-get="/console/notifications/')[1].split('"')[0]
    decoded = client_for(app, "ann", "viewer").get(f"/console/notifications/{inbox}").text
    assert "&#34;originalTransactionId&#34;: &#34;7000000000000042&#34;" in decoded


def test_without_a_catalog_the_page_says_why_there_are_no_entitlements(
    app: RunningApp, client_for: Clients
) -> None:
    """With no product catalog configured, "no entitlements" names the missing setting rather
    than contradicting the access badge."""
    portal_subscription(app, ACCOUNT)
    page = client_for(app, "vic", "viewer").get(f"/console/accounts/{ACCOUNT}").text
    assert "no product catalog is configured" in page
    assert "<code>RECONCILE_CATALOG_FILE</code>" in page


def test_viewer_sees_no_action_buttons(app: RunningApp, client_for: Clients) -> None:
    """A viewer's account page has no Cancel, Block or Port out; an admin's has them all."""
    portal_subscription(app, ACCOUNT)
    viewer = client_for(app, "vic", "viewer").get(f"/console/accounts/{ACCOUNT}").text
    admin = client_for(app, "alice", "admin").get(f"/console/accounts/{ACCOUNT}").text
    for button in ("Cancel subscription", "Block account", "Port out", "Change plan"):
        assert button not in viewer
        assert button in admin


def test_cancel_states_the_consequence_then_does_what_the_api_does(
    app: RunningApp, apple_ca: AppleTestCA, client_for: Clients
) -> None:
    """The confirmation says access continues until expiry and nothing is refunded; confirming
    with a reason records the Apple request with the App Store link, audited by the agent."""
    sub = apple_subscription(app, apple_ca, ACCOUNT, otx=OTX)
    agent = client_for(app, "bob", "agent")
    confirm = agent.get(f"/console/subscriptions/{sub['id']}/confirm/cancel").text
    assert "access continues until 2026-11-30; nothing is refunded." in confirm
    assert '<label for="reason">Reason</label>' in confirm
    assert ">Confirm</button>" in confirm
    empty = post_form(agent, f"/console/subscriptions/{sub['id']}/cancel", {"reason": " "})
    assert empty.status_code == 422
    assert app.client.get(f"/v1/subscriptions/{sub['id']}").json()["cancellation"] is None
    done = post_form(agent, f"/console/subscriptions/{sub['id']}/cancel",
                     {"reason": "customer asked by email", "requested_by": "customer"})
    assert done.status_code == 303
    after = app.client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert after["cancellation"]["state"] == "customer_action_required"
    assert after["cancellation"]["reason"] == "customer_request"
    page = agent.get(f"/console/accounts/{ACCOUNT}").text
    assert "Customer must act" in page
    assert 'href="https://apps.apple.com/account/subscriptions"' in page
    [latest, *_] = app.client.get("/v1/audit").json()["items"]
    assert (latest["actor"], latest["action"], latest["reason"]) == (
        "bob", "subscription.cancel", "customer asked by email")


def test_a_refused_action_says_why_and_changes_nothing(
    app: RunningApp, client_for: Clients
) -> None:
    """Cancelling a subscription that no longer renews answers 409 with the reason, and
    nothing is audited."""
    sub = portal_subscription(app, ACCOUNT, auto_renew=False)
    agent = client_for(app, "bob", "agent")
    answer = post_form(agent, f"/console/subscriptions/{sub['id']}/cancel", {"reason": "asked"})
    assert answer.status_code == 409
    assert "is already cancelled" in answer.text
    assert [i["action"] for i in app.client.get("/v1/audit").json()["items"]] == [
        "portal.create"]


def test_change_plan_block_unblock_port_out_and_consent(
    app: RunningApp, client_for: Clients
) -> None:
    """Each account action from the console lands as the API's would, audited by name."""
    sub = portal_subscription(app, ACCOUNT)
    admin = client_for(app, "alice", "admin")
    steps = [
        (f"/console/subscriptions/{sub['id']}/change-plan",
         {"reason": "downgrade", "product_id": "portal.lite.monthly"}),
        (f"/console/accounts/{ACCOUNT}/block", {"reason": "spam"}),
        (f"/console/accounts/{ACCOUNT}/unblock", {"reason": "appeal accepted"}),
        (f"/console/accounts/{ACCOUNT}/consent", {"reason": "asked", "consent": "yes"}),
        (f"/console/accounts/{ACCOUNT}/port-out", {"reason": "number ported out"}),
    ]
    for path, data in steps:
        assert post_form(admin, path, data).status_code == 303, path
    account = app.client.get(f"/v1/accounts/{ACCOUNT}").json()
    assert account["blocked"] is None
    assert account["consumption_data_consent"] is True
    [subscription] = account["subscriptions"]
    assert subscription["renewal_product_id"] == "portal.lite.monthly"
    assert subscription["auto_renew"] is False
    actions = [(i["actor"], i["action"]) for i in app.client.get("/v1/audit").json()["items"]]
    assert actions[:5] == [("alice", "account.port_out"), ("alice", "account.consent"),
                           ("alice", "account.unblock"), ("alice", "account.block"),
                           ("alice", "subscription.change_plan")]


def test_an_apple_plan_change_tells_the_agent_what_the_customer_must_do(
    app: RunningApp, apple_ca: AppleTestCA, client_for: Clients
) -> None:
    """Apple lets only the customer change a plan: after the request the card shows the new
    plan and the App Store link to send them."""
    sub = apple_subscription(app, apple_ca, ACCOUNT, otx=OTX)
    agent = client_for(app, "bob", "agent")
    confirm = agent.get(f"/console/subscriptions/{sub['id']}/confirm/change-plan").text
    assert "the customer must make the change in the store" in confirm
    done = post_form(agent, f"/console/subscriptions/{sub['id']}/change-plan",
                     {"reason": "wants yearly", "product_id": "com.example.phone.yearly"})
    assert done.status_code == 303
    page = agent.get(f"/console/accounts/{ACCOUNT}").text
    assert "The customer must change the plan:</strong> to com.example.phone.yearly" in page


def test_an_agent_adjusts_credits_and_sees_the_ledger(
    app: RunningApp, client_for: Clients
) -> None:
    """An agent's credit adjustment lands in the ledger as the API's would, audited by name,
    and the account page shows the balance and the entry; a viewer may not adjust."""
    portal_subscription(app, ACCOUNT)
    agent = client_for(app, "bob", "agent")
    confirm = agent.get(f"/console/accounts/{ACCOUNT}/confirm/adjust-credits")
    assert confirm.status_code == 200
    assert "no money moves" in confirm.text
    path = f"/console/accounts/{ACCOUNT}/adjust-credits"
    assert post_form(agent, path, {"reason": "goodwill", "amount": "abc"}).status_code == 422
    assert post_form(agent, path, {"reason": "goodwill", "amount": "25"}).status_code == 303
    credits = app.client.get(f"/v1/accounts/{ACCOUNT}/credits").json()
    assert (credits["balance"], credits["adjusted"]) == (25, 25)
    [audit] = [i for i in app.client.get("/v1/audit").json()["items"]
               if i["action"] == "credits.adjust"]
    assert (audit["actor"], audit["reason"], audit["note"]) == ("bob", "goodwill",
                                                                "+25 credits: goodwill")
    page = agent.get(f"/console/accounts/{ACCOUNT}").text
    assert "Credit balance: <strong>25</strong>" in page
    assert "adjustment" in page
    viewer = client_for(app, "vera", "viewer")
    assert post_form(viewer, path, {"reason": "x", "amount": "5"}).status_code == 403
    assert app.client.get(f"/v1/accounts/{ACCOUNT}/credits").json()["balance"] == 25
