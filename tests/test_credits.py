"""The credits ledger over HTTP: grants from store transactions, debits, adjustments, refunds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

import httpx
import pytest

from reconcile.config import Settings
from reconcile.db import transaction
from reconcile.outcomes import PurchaseSeen, RefundSeen
from reconcile.services import build_services
from reconcile.state import Channel, Stamp
from reconcile.store_records import record_purchase, record_refund
from tests.conftest import ADMIN_TOKEN
from tests.fakes.play import FakePlay, product_purchase
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_truth import kinds, reconcile
from tests.support.google import Pusher, one_time_notification, voided_notification
from tests.support.oidc import OidcIssuer
from tests.support.policy import NOW_MS, apple_note, post_apple
from tests.support.purchases import CATALOG
from tests.support.server import FakeClock, RunningApp, serve_in_thread

ACCOUNT = "5b0c8a2e-3333-4444-8333-000000000012"
APP_TOKEN = "test-app-token"
PACK_500 = "com.example.phone.credits.500"
PACK_100 = "com.example.phone.credits100"
ENTRY_KEYS = {"id", "kind", "amount", "balance_after", "channel", "reference", "note",
              "created_at"}


@pytest.fixture
def shop(make_google_settings: Callable[..., Settings], clock: FakeClock) -> Iterator[RunningApp]:
    """Both stores (Google on the fake Play API), the fixture catalog and an app token."""
    services = build_services(make_google_settings(catalog_file=CATALOG, app_token=APP_TOKEN),
                              clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


@pytest.fixture
def pusher(shop: RunningApp, oidc: OidcIssuer) -> Pusher:
    return Pusher(shop.client, oidc)


def app_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {APP_TOKEN}"}


def ledger(app: RunningApp, account: str = ACCOUNT) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The account's totals and every entry (newest first), checked against each other: the
    balance is the sum of the entries and each entry's balance_after follows from the last."""
    totals = app.client.get(f"/v1/accounts/{account}/credits", headers=app_headers()).json()
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = app.client.get(f"/v1/accounts/{account}/credits/entries", headers=app_headers(),
                              params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert totals["balance"] == sum(item["amount"] for item in items)
    for newer, older in pairwise(items):
        assert newer["balance_after"] - newer["amount"] == older["balance_after"]
    return totals, items


def debit(app: RunningApp, amount: int, key: str, account: str = ACCOUNT,
          **body: Any) -> httpx.Response:
    return app.client.post(f"/v1/accounts/{account}/credits/debits", headers=app_headers(),
                           json={"amount": amount, "idempotency_key": key, **body})


def apple_pack(n: int, tid: str, product: str = PACK_500, quantity: int = 1,
               ntype: str = "ONE_TIME_CHARGE", **kwargs: Any) -> dict[str, Any]:
    note = apple_note(n, ntype, account=ACCOUNT, otx=tid, product=product,
                      tx_type="Consumable", **kwargs)
    note["data"]["transaction"]["quantity"] = quantity
    return note


def test_apple_purchase_grants_once_with_its_quantity(shop: RunningApp,
                                                      apple_ca: AppleTestCA) -> None:
    """ONE_TIME_CHARGE of two 500-credit packs grants 1000 once, however often it is notified;
    the balance, its parts, the entry and the account view agree."""
    post_apple(shop, apple_ca, apple_pack(1, "7100000000000001", quantity=2),
               apple_pack(2, "7100000000000001", quantity=2))
    totals, items = ledger(shop)
    assert totals == {"account_id": ACCOUNT, "balance": 1000, "granted": 1000, "used": 0,
                      "adjusted": 0, "clawed_back": 0}
    [grant] = items
    assert set(grant) == ENTRY_KEYS
    assert {k: grant[k] for k in ("kind", "amount", "balance_after", "channel", "reference")} == {
        "kind": "grant", "amount": 1000, "balance_after": 1000, "channel": "apple",
        "reference": "7100000000000001"}
    account = shop.client.get(f"/v1/accounts/{ACCOUNT}", headers=app_headers()).json()
    assert account["credits"] == {"balance": 1000}


def test_apple_refund_claws_back_once_and_may_go_below_zero(
    shop: RunningApp, apple_ca: AppleTestCA
) -> None:
    """A REFUND of a used pack claws back all it granted, once even if reported twice; the
    balance goes below zero and the account view and /metrics show it."""
    post_apple(shop, apple_ca, apple_pack(1, "7100000000000002", product=PACK_100))
    assert debit(shop, 60, "call-1").status_code == 201
    refund = {"revoked_at": NOW_MS - 60_000}
    post_apple(shop, apple_ca, apple_pack(2, "7100000000000002", PACK_100, ntype="REFUND",
                                          **refund),
               apple_pack(3, "7100000000000002", PACK_100, ntype="REFUND", **refund))
    totals, items = ledger(shop)
    assert (totals["balance"], totals["clawed_back"], totals["used"]) == (-60, 100, 60)
    assert [(i["kind"], i["amount"], i["balance_after"]) for i in items] == [
        ("clawback", -100, -60), ("debit", -60, 40), ("grant", 100, 100)]
    assert items[0]["reference"] == "7100000000000002"
    account = shop.client.get(f"/v1/accounts/{ACCOUNT}", headers=app_headers()).json()
    assert account["credits"] == {"balance": -60}
    assert "reconcile_credit_accounts_below_zero 1.0" in shop.client.get("/metrics").text
    refused = debit(shop, 1, "call-2")
    assert (refused.status_code, refused.json()["balance"]) == (409, -60)


def test_reversed_refund_reinstates_the_clawback_once(
    shop: RunningApp, apple_ca: AppleTestCA
) -> None:
    """REFUND_REVERSED gives back what the REFUND clawed back, once even if reported twice, to
    the account it was taken from; credits used meanwhile stay used."""
    post_apple(shop, apple_ca, apple_pack(1, "7100000000000003", product=PACK_100))
    assert debit(shop, 60, "call-1").status_code == 201
    refund = {"revoked_at": NOW_MS - 60_000}
    post_apple(shop, apple_ca, apple_pack(2, "7100000000000003", PACK_100, ntype="REFUND",
                                          **refund))
    assert ledger(shop)[0]["balance"] == -60
    post_apple(shop, apple_ca,
               apple_pack(3, "7100000000000003", PACK_100, ntype="REFUND_REVERSED"),
               apple_pack(4, "7100000000000003", PACK_100, ntype="REFUND_REVERSED"))
    totals, items = ledger(shop)
    assert (totals["balance"], totals["granted"], totals["clawed_back"]) == (40, 200, 100)
    assert [(i["kind"], i["amount"], i["balance_after"]) for i in items] == [
        ("grant", 100, 40), ("clawback", -100, -60), ("debit", -60, 40), ("grant", 100, 100)]
    assert items[0]["reference"] == "7100000000000003"
    assert "reinstated" in items[0]["note"]
    assert reconcile(shop)["discrepancies"] == []


def test_debits_are_idempotent_and_refused_without_cover(shop: RunningApp,
                                                         apple_ca: AppleTestCA) -> None:
    """201 the entry; the same key 200 the same entry; too low 409 with the balance; another
    amount under a used key 422; a blocked account 409; nothing debited by any refusal."""
    post_apple(shop, apple_ca, apple_pack(1, "7100000000000003", product=PACK_100))
    first = debit(shop, 30, "sms-1", note="3 texts")
    assert first.status_code == 201
    entry = first.json()
    assert set(entry) == ENTRY_KEYS
    assert {k: entry[k] for k in ("kind", "amount", "balance_after", "reference", "note")} == {
        "kind": "debit", "amount": -30, "balance_after": 70, "reference": "sms-1",
        "note": "3 texts"}
    again = debit(shop, 30, "sms-1", note="3 texts")
    assert (again.status_code, again.json()) == (200, entry)
    too_much = debit(shop, 71, "sms-2")
    assert too_much.status_code == 409
    assert set(too_much.json()) == {"detail", "balance"}
    assert too_much.json()["balance"] == 70
    assert debit(shop, 5, "sms-1").status_code == 422
    assert debit(shop, 0, "sms-3").status_code == 422
    assert shop.client.post(f"/v1/accounts/{ACCOUNT}/credits/debits", headers=app_headers(),
                            json={"amount": 5}).status_code == 422
    assert shop.client.post(f"/v1/accounts/{ACCOUNT}/block",
                            json={"reason": "abuse"}).status_code == 200
    blocked = debit(shop, 1, "sms-4")
    assert (blocked.status_code, blocked.json()["balance"]) == (409, 70)
    assert "blocked" in blocked.json()["detail"]
    totals, items = ledger(shop)
    assert (totals["balance"], totals["used"], len(items)) == (70, 30, 2)


def test_adjustments_are_admin_only_signed_and_need_a_note(shop: RunningApp,
                                                           apple_ca: AppleTestCA) -> None:
    """An admin adjusts up or down with a note (201 the entry, audited); the app token gets 403, a
    missing note or amount 0 422, an account never seen 404."""
    post_apple(shop, apple_ca, apple_pack(1, "7100000000000004", product=PACK_100))
    path = f"/v1/accounts/{ACCOUNT}/credits/adjustments"
    up = shop.client.post(path, json={"amount": 20, "note": "goodwill after outage"})
    assert up.status_code == 201
    assert {k: up.json()[k] for k in ("kind", "amount", "balance_after", "note")} == {
        "kind": "adjustment", "amount": 20, "balance_after": 120, "note": "goodwill after outage"}
    assert shop.client.post(path, json={"amount": -150, "note": "duplicate grant"}
                            ).status_code == 201
    assert shop.client.post(path, headers=app_headers(),
                            json={"amount": 5, "note": "x"}).status_code == 403
    assert shop.client.post(path, json={"amount": 5}).status_code == 422
    assert shop.client.post(path, json={"amount": 0, "note": "nothing"}).status_code == 422
    assert shop.client.post("/v1/accounts/nobody/credits/adjustments",
                            json={"amount": 5, "note": "typo"}).status_code == 404
    totals, _ = ledger(shop)
    assert (totals["balance"], totals["adjusted"]) == (-30, -130)
    audited = [item for item in shop.client.get("/v1/audit").json()["items"]
               if item["action"] == "credits.adjust"]
    assert [(a["actor"], a["target"]) for a in audited] == [("api", ACCOUNT), ("api", ACCOUNT)]
    assert audited[0]["note"] == "-150 credits: duplicate grant"  # newest first


def test_portal_purchase_grants_once_per_reference(shop: RunningApp) -> None:
    """A portal credit purchase answers 201 with its grant; the same reference again 200 and
    nothing more; the same reference with other details 409."""
    body = {"account_id": ACCOUNT, "product_id": PACK_500, "reference": "web-order-77",
            "quantity": 2, "amount": "19.98", "currency": "EUR"}
    first = shop.client.post("/v1/portal/purchases", json=body)
    assert first.status_code == 201, first.text
    assert {k: first.json()[k] for k in ("channel", "store_id", "product_id", "quantity",
                                         "credits_granted")} == {
        "channel": "portal", "store_id": "web-order-77", "product_id": PACK_500, "quantity": 2,
        "credits_granted": 1000}
    again = shop.client.post("/v1/portal/purchases", json=body)
    assert (again.status_code, again.json()) == (200, first.json())
    other = shop.client.post("/v1/portal/purchases", json={**body, "quantity": 3})
    assert other.status_code == 409
    assert shop.client.post("/v1/portal/purchases", headers=app_headers(),
                            json=body).status_code == 403
    totals, [grant] = ledger(shop)
    assert totals["balance"] == 1000
    assert (grant["channel"], grant["reference"]) == ("portal", "web-order-77")


def google_pack(fake: FakePlay, token: str, *, state: int = 0, quantity: int = 1,
                order: str = "GPA.3311-0000-0000-00001") -> None:
    fake.products[token] = product_purchase("credits_100", order_id=order, purchase_state=state,
                                            quantity=quantity, account_id=ACCOUNT)


def test_google_pending_purchase_grants_when_purchased(
    shop: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A pending Google purchase grants nothing; once Play says purchased it grants its
    quantity's worth, once, however often it is notified."""
    google_pack(fake_play, "gtok-1", state=2, quantity=3)
    pusher.push(one_time_notification("gtok-1", "credits_100", 1, clock.now))
    shop.drain()
    assert ledger(shop)[1] == []
    google_pack(fake_play, "gtok-1", state=0, quantity=3)
    for _ in range(2):
        clock.advance(minutes=1)
        pusher.push(one_time_notification("gtok-1", "credits_100", 1, clock.now))
        shop.drain()
    totals, [grant] = ledger(shop)
    assert (totals["balance"], grant["channel"], grant["reference"]) == (300, "google", "gtok-1")


def test_reconciliation_grants_a_pending_purchase_completed_without_notice(
    shop: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A purchase pending here that Play now shows purchased (its notification lost) is
    reported by a dry run and, in a real run, stored as purchased and granted once."""
    google_pack(fake_play, "gtok-4", state=2)
    pusher.push(one_time_notification("gtok-4", "credits_100", 1, clock.now))
    shop.drain()
    google_pack(fake_play, "gtok-4", state=0)
    clock.advance(minutes=5)
    dry = kinds(reconcile(shop, dry_run=True))
    assert {k: dry["status"][k] for k in ("store_id", "here", "store", "repaired")} == {
        "store_id": "gtok-4", "here": "pending", "store": "purchased", "repaired": False}
    assert ledger(shop)[1] == []
    assert kinds(reconcile(shop))["status"]["repaired"] is True
    clock.advance(minutes=5)
    assert kinds(reconcile(shop)) == {}
    totals, [grant] = ledger(shop)
    assert (totals["balance"], grant["reference"]) == (100, "gtok-4")


def test_google_voided_purchase_claws_back_once(
    shop: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A voided (refunded) Google credit pack claws back its credits once, even when the
    notification comes twice and reconciliation reads the voided list again."""
    google_pack(fake_play, "gtok-2", order="GPA.3311-0000-0000-00002")
    pusher.push(one_time_notification("gtok-2", "credits_100", 1, clock.now))
    shop.drain()
    for _ in range(2):
        clock.advance(minutes=1)
        pusher.push(voided_notification("gtok-2", "GPA.3311-0000-0000-00002", 2, clock.now))
        shop.drain()
    fake_play.voided.append({"purchaseToken": "gtok-2", "orderId": "GPA.3311-0000-0000-00002",
                             "voidedTimeMillis": int(clock.now.timestamp() * 1000)})
    clock.advance(minutes=5)
    assert kinds(reconcile(shop)) == {}
    totals, items = ledger(shop)
    assert (totals["balance"], [i["kind"] for i in items]) == (0, ["clawback", "grant"])


def test_google_partial_refund_claws_back_the_refunded_quantity(
    shop: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A partial (quantity) refund's notification carries no quantity; reconciliation reads it
    from the voided list (reported in a dry run, repaired in a real one) and claws back that
    many packs only."""
    order = "GPA.3311-0000-0000-00003"
    google_pack(fake_play, "gtok-3", quantity=3, order=order)
    pusher.push(one_time_notification("gtok-3", "credits_100", 1, clock.now))
    shop.drain()
    clock.advance(minutes=1)
    pusher.push(voided_notification("gtok-3", order, 2, clock.now, refund_type=2))
    shop.drain()
    assert ledger(shop)[0]["balance"] == 300
    fake_play.voided.append({"purchaseToken": "gtok-3", "orderId": order, "voidedQuantity": 1,
                             "voidedTimeMillis": int(clock.now.timestamp() * 1000)})
    clock.advance(minutes=5)
    dry = kinds(reconcile(shop, dry_run=True))
    assert (dry["credits"]["repaired"], dry["credits"]["store_id"]) == (False, "gtok-3")
    assert ledger(shop)[0]["balance"] == 300
    real = kinds(reconcile(shop))
    assert real["credits"]["repaired"] is True
    totals, items = ledger(shop)
    assert (totals["balance"], items[0]["kind"], items[0]["amount"]) == (200, "clawback", -100)
    clock.advance(minutes=5)
    assert kinds(reconcile(shop)) == {}
    assert ledger(shop)[0]["balance"] == 200


def test_entries_are_listed_newest_first_in_pages(shop: RunningApp) -> None:
    """Entries come newest first; following next_cursor lists each exactly once; a bad cursor
    is 422; an account with no entries has zeros."""
    shop.client.post("/v1/portal/purchases", json={
        "account_id": ACCOUNT, "product_id": PACK_100, "reference": "web-1"})
    for n in range(4):
        assert debit(shop, 1, f"k{n}").status_code == 201
    _, items = ledger(shop)
    assert [i["reference"] for i in items] == ["k3", "k2", "k1", "k0", "web-1"]
    assert len({i["id"] for i in items}) == 5
    assert shop.client.get(f"/v1/accounts/{ACCOUNT}/credits/entries",
                           params={"cursor": "!!"}).status_code == 422
    empty = shop.client.get("/v1/accounts/never-seen/credits", headers=app_headers()).json()
    assert empty == {"account_id": "never-seen", "balance": 0, "granted": 0, "used": 0,
                     "adjusted": 0, "clawed_back": 0}


def test_credit_endpoints_need_a_token(shop: RunningApp) -> None:
    """Without a bearer token the credit endpoints answer 401."""
    bare = httpx.Client(base_url=shop.url)
    assert bare.get(f"/v1/accounts/{ACCOUNT}/credits").status_code == 401
    assert bare.post(f"/v1/accounts/{ACCOUNT}/credits/debits",
                     json={"amount": 1, "idempotency_key": "x"}).status_code == 401
    bare.close()


def test_clock_is_the_services(shop: RunningApp, clock: FakeClock) -> None:
    """Entries are stamped with the service's clock, not the machine's."""
    clock.now = dt.datetime(2026, 11, 5, 8, 30, tzinfo=dt.UTC)
    shop.client.post("/v1/portal/purchases", json={
        "account_id": ACCOUNT, "product_id": PACK_100, "reference": "web-2"})
    [grant] = ledger(shop)[1]
    assert grant["created_at"] == "2026-11-05T08:30:00Z"


def test_reconciliation_finds_and_repairs_missing_grants_and_clawbacks(
    shop: RunningApp, clock: FakeClock
) -> None:
    """A credit purchase stored without its grant and a refund stored without its clawback (as
    before the ledger existed) are reported as `credits` in a dry run, repaired in a real run,
    and not reported again."""
    with transaction(shop.services.sessions) as session:
        record_purchase(session, PurchaseSeen(
            channel=Channel.PORTAL, store_id="web-old", environment="production",
            product_id=PACK_100, kind="consumable", stamp=Stamp(clock.now, "a"),
            account_id=ACCOUNT), clock.now)
        record_purchase(session, PurchaseSeen(
            channel=Channel.APPLE, store_id="7100000000000009", environment="production",
            product_id=PACK_500, kind="consumable", stamp=Stamp(clock.now, "b"),
            account_id=ACCOUNT), clock.now, shop.services.catalog)
        record_refund(session, RefundSeen(
            channel=Channel.APPLE, refund_key="7100000000000009", store_id="7100000000000009",
            refunded_at=clock.now, stamp=Stamp(clock.now, "c"),
            purchase_store_id="7100000000000009"), clock.now, None)
    assert ledger(shop)[0]["balance"] == 500
    dry = reconcile(shop, dry_run=True)["discrepancies"]
    assert sorted((d["kind"], d["store_id"], d["here"], d["repaired"]) for d in dry) == [
        ("credits", "7100000000000009", "no clawback", False),
        ("credits", "web-old", "no grant", False)]
    assert ledger(shop)[0]["balance"] == 500
    real = reconcile(shop)["discrepancies"]
    assert sorted((d["store_id"], d["repaired"]) for d in real) == [
        ("7100000000000009", True), ("web-old", True)]
    totals, _ = ledger(shop)
    assert (totals["balance"], totals["granted"], totals["clawed_back"]) == (100, 600, 500)
    assert reconcile(shop)["discrepancies"] == []


def test_reconciliation_reinstates_the_clawback_of_a_reversed_refund(
    shop: RunningApp, clock: FakeClock
) -> None:
    """A refund stored as reversed while its clawback stands (as before reversals gave credits
    back) is reported as `credits` in a dry run and given back once in a real run."""
    with transaction(shop.services.sessions) as session:
        record_purchase(session, PurchaseSeen(
            channel=Channel.APPLE, store_id="7100000000000010", environment="production",
            product_id=PACK_500, kind="consumable", stamp=Stamp(clock.now, "a"),
            account_id=ACCOUNT), clock.now, shop.services.catalog)
        record_refund(session, RefundSeen(
            channel=Channel.APPLE, refund_key="7100000000000010", store_id="7100000000000010",
            refunded_at=clock.now, stamp=Stamp(clock.now, "b"),
            purchase_store_id="7100000000000010"), clock.now, None,
            catalog=shop.services.catalog)
        record_refund(session, RefundSeen(
            channel=Channel.APPLE, refund_key="7100000000000010", store_id="7100000000000010",
            refunded_at=clock.now, stamp=Stamp(clock.now, "c"), reversed=True,
            purchase_store_id="7100000000000010"), clock.now, None)
    assert ledger(shop)[0]["balance"] == 0
    dry = reconcile(shop, dry_run=True)["discrepancies"]
    assert [(d["kind"], d["store_id"], d["here"], d["repaired"]) for d in dry] == [
        ("credits", "7100000000000010", "clawback not reinstated", False)]
    assert ledger(shop)[0]["balance"] == 0
    assert [d["repaired"] for d in reconcile(shop)["discrepancies"]] == [True]
    totals, _ = ledger(shop)
    assert (totals["balance"], totals["granted"], totals["clawed_back"]) == (500, 1000, 500)
    assert reconcile(shop)["discrepancies"] == []
