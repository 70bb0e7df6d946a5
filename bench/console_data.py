"""A realistic data set for the support console, and how fast its pages answer on it.

Fills a database with `--accounts` accounts (default 10,000) over the three channels: renewals
with their notifications, cancellations (Apple ones waiting for the customer), plan changes,
refunds and Apple refund requests, one-time purchases, blocks, Google purchases awaiting
acknowledgement, a finished dry-run reconciliation with discrepancies, audit records, and three
console users (alice admin, bob agent, vic viewer; password `demo-password`). Rows are written
with multi-row inserts in batches. Then, unless `--no-time`, it serves the app on a free port,
signs in, and times every console page (20 requests each: median and slowest).

    python -m bench.console_data                                  # a fresh SQLite file, timed
    python -m bench.console_data --database-url sqlite:///demo.db --no-time   # keep it to look at
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from reconcile.audit.models import AuditRecord
from reconcile.config import Settings
from reconcile.console.users import add_user
from reconcile.credits.models import CreditBalance, CreditEntry
from reconcile.db import make_engine, make_sessionmaker, migrate, transaction
from reconcile.models import (
    Account,
    Acknowledgement,
    Discrepancy,
    InboxEntry,
    OutboxEntry,
    Purchase,
    ReconciliationRun,
    Refund,
    StoreId,
    Subscription,
    SubscriptionEvent,
)
from reconcile.notify.models import Delivery, Event, EventCounter, WebhookEndpoint
from reconcile.services import build_services
from reconcile.serving import settle_memory
from tests.support.server import serve_in_thread

PASSWORD = "demo-password"
PRODUCTS = {"apple": ["com.example.phone.monthly", "com.example.phone.yearly"],
            "google": ["phone_monthly", "phone_yearly"],
            "portal": ["portal.monthly", "portal.yearly"]}
KINDS = ["status", "expires_at", "auto_renew", "product", "missing_here", "unknown_at_store",
         "unacknowledged", "refund_not_known"]


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def apple_payload(kind: str, otid: str, txid: str, product: str, at: datetime) -> str:
    """A JWS-shaped payload (the signature is a stand-in: this data never meets a verifier)."""
    millis = int(at.timestamp() * 1000)
    transaction = b64({"originalTransactionId": otid, "transactionId": txid,
                       "productId": product, "purchaseDate": millis, "signedDate": millis})
    body = {"notificationType": kind, "notificationUUID": f"{otid}-{txid}", "signedDate": millis,
            "data": {"signedTransactionInfo": f"e30.{transaction}.c2ln"}}
    return f"e30.{b64(body)}.c2ln"


def google_payload(kind: int, token: str, product: str, at: datetime, n: int) -> str:
    data = {"version": "1.0", "packageName": "com.example.phone",
            "eventTimeMillis": str(int(at.timestamp() * 1000)),
            "subscriptionNotification": {"version": "1.0", "notificationType": kind,
                                         "purchaseToken": token, "subscriptionId": product}}
    return json.dumps({"message": {"data": base64.b64encode(json.dumps(data).encode()).decode(),
                                   "messageId": f"m{n}"}, "subscription": "projects/p/s"})


class Batches:
    """Rows per table, written in multi-row inserts whenever a table's batch fills up."""

    def __init__(self, connection: Connection, size: int = 2000) -> None:
        self.connection = connection
        self.size = size
        self.rows: dict[type, list[dict[str, Any]]] = {}
        self.order = [Account, Subscription, StoreId, InboxEntry, SubscriptionEvent, Purchase,
                      Refund, OutboxEntry, Acknowledgement, AuditRecord, CreditBalance,
                      CreditEntry, Event, Delivery, EventCounter]

    def add(self, model: type, row: dict[str, Any]) -> None:
        self.rows.setdefault(model, []).append(row)
        if len(self.rows[model]) >= self.size:
            self.flush()

    def flush(self) -> None:
        for model in self.order:  # parents first: foreign keys hold at every statement
            rows = self.rows.pop(model, [])
            if rows:
                self.connection.execute(insert(model), rows)


def seed(url: str, accounts: int, now: datetime, rng: random.Random) -> dict[str, Any]:
    """Fill the database; returns a few ids worth looking at."""
    migrate(url)
    engine = make_engine(url)
    picks: dict[str, Any] = {"accounts": [], "store_ids": [], "blocked": [], "apple_action": []}
    inbox_id = event_id = 0
    told = Told()
    with engine.begin() as connection:
        connection.execute(insert(WebhookEndpoint), [{
            "id": endpoint, "url": url, "event_types": None, "description": None,
            "enabled": True, "secret": "whsec_demo", "previous_secret": None,
            "previous_until": None, "disabled_reason": None, "created_at": now,
            "updated_at": now} for endpoint, url in ENDPOINTS])
        batches = Batches(connection)
        for n in range(accounts):
            account = f"acct-{n:06d}"
            blocked = n % 97 == 5
            batches.add(Account, {"account_id": account, "blocked_at": now - timedelta(days=3)
                                  if blocked else None,
                                  "block_reason": "spam texting (acceptable use)" if blocked
                                  else None, "consumption_consent": n % 4 == 0,
                                  "consent_updated_at": None, "credits_purchased": 0,
                                  "credits_used": 0, "updated_at": now})
            channels = [("apple", "google", "portal")[n % 3]]
            if n % 7 == 0:
                channels.append(("google", "portal", "apple")[n % 3])
            for c_index, channel in enumerate(channels):
                sub_id = f"sub_{n:018x}{c_index:06x}"
                product = PRODUCTS[channel][n % 5 == 0]
                yearly = n % 5 == 0
                store_id = (str(2_000_000_000 + n * 10 + c_index) if channel == "apple"
                            else f"gpt{n:06d}{c_index}.AO-J1Oz{rng.getrandbits(64):016x}"
                            if channel == "google" else f"portal_{n:06d}_{c_index}")
                roll = rng.random()
                status = ("active" if roll < 0.72 else "expired" if roll < 0.84
                          else "grace_period" if roll < 0.87 else "billing_retry" if roll < 0.90
                          else "revoked" if roll < 0.92 else "pending" if roll < 0.93
                          else "paused" if channel == "google" and roll < 0.94 else "active")
                cancelled = status == "active" and rng.random() < 0.15
                period = timedelta(days=365 if yearly else 30)
                renewals = rng.randint(1, 12 if not yearly else 2)
                started = now - period * renewals + timedelta(hours=rng.randint(1, 600))
                expires = started + period * renewals
                if status == "expired":
                    expires = now - timedelta(days=rng.randint(1, 90))
                batches.add(Subscription, {
                    "id": sub_id, "channel": channel,
                    "environment": "production", "store_id": store_id, "account_id": account,
                    "product_id": product, "renewal_product_id": product, "status": status,
                    "auto_renew": status in ("active", "grace_period", "billing_retry")
                    and not cancelled and not blocked,
                    "expires_at": expires,
                    "grace_expires_at": expires + timedelta(days=16)
                    if status == "grace_period" else None,
                    "prepaid": False, "last_event_at": now - timedelta(hours=rng.randint(1, 900)),
                    "clock": {}, "created_at": started, "updated_at": now, "version": 1})
                batches.add(StoreId, {"channel": channel, "store_id": store_id,
                                      "subscription_id": sub_id, "created_at": started})
                if c_index == 0 and n % 50 == 0:
                    picks["accounts"].append(account)
                    picks["store_ids"].append(store_id)
                if blocked:
                    picks["blocked"].append(account)
                for r in range(renewals):
                    at = started + period * r
                    if r == renewals - 1 and rng.random() < 0.25:
                        at = now - timedelta(minutes=rng.randint(1, 48 * 60))  # recent traffic
                    inbox_id += 1
                    kind = "SUBSCRIBED" if r == 0 else "DID_RENEW"
                    if channel == "portal":
                        inbox = None
                    else:
                        txid = str(3_000_000_000 + inbox_id)
                        payload = (apple_payload(kind, store_id, txid, product, at)
                                   if channel == "apple"
                                   else google_payload(4 if r == 0 else 2, store_id, product, at,
                                                       inbox_id))
                        inbox = inbox_id
                        if channel == "apple" and "inbox_id" not in picks:
                            picks["inbox_id"] = inbox_id
                        batches.add(InboxEntry, {
                            "id": inbox_id, "channel": channel,
                            "notification_id": f"n{inbox_id}", "kind": kind, "subject": store_id,
                            "environment": "production", "payload": payload, "store_time": at,
                            "received_at": at + timedelta(seconds=2), "status": "processed",
                            "attempts": 1, "next_attempt_at": at, "processed_at": at,
                            "error": None, "lease_owner": None, "lease_until": None})
                    event_id += 1
                    detail: dict[str, Any] = {"store_id": store_id, "fields": {
                        "status": "active", "expires_at": (at + period).isoformat()}}
                    if channel == "apple" and inbox is not None:
                        detail["transaction_id"] = str(3_000_000_000 + inbox_id)
                    if channel == "google":
                        detail["order_id"] = f"GPA.{n:04d}-{c_index}-{r:04d}"
                    batches.add(SubscriptionEvent, {
                        "id": event_id, "subscription_id": sub_id, "source": channel,
                        "kind": kind, "store_time": at, "recorded_at": at + timedelta(seconds=3),
                        "applied": True, "inbox_id": inbox, "detail": detail})
                if cancelled or blocked:
                    state = {"apple": "customer_action_required", "google": "confirmed",
                             "portal": "confirmed"}[channel]
                    batches.add(OutboxEntry, _outbox(
                        channel, "cancel", f"{sub_id}:1", sub_id, account, store_id,
                        {"manage_url": "https://apps.apple.com/account/subscriptions"}
                        if channel == "apple" else {}, state,
                        "policy_block" if blocked else "customer_request", now))
                    if channel == "apple" and not blocked:
                        picks["apple_action"].append(account)
                    batches.add(AuditRecord, {
                        "at": now - timedelta(days=1), "actor": "bob" if n % 2 else "api",
                        "action": "account.block" if blocked else "subscription.cancel",
                        "target": account if blocked else sub_id,
                        "reason": "spam texting" if blocked else "customer asked by email",
                        "note": None})
                if status == "revoked" or rng.random() < 0.01:
                    batches.add(Refund, {
                        "channel": channel, "refund_key": f"{store_id}:r", "store_id": store_id,
                        "subscription_id": sub_id, "purchase_id": None, "account_id": account,
                        "product_id": product, "amount": "9.99", "currency": "USD",
                        "refunded_at": now - timedelta(days=rng.randint(0, 83)),
                        "reversed_at": None, "consumption_answer_sent": channel == "apple",
                        "recorded_at": now})
                    if channel == "apple":
                        batches.add(OutboxEntry, _outbox(
                            "apple", "consumption", f"c{store_id}", sub_id, account,
                            f"{store_id}9", {"original_transaction_id": store_id,
                                             "product_id": product}, "sent", None, now,
                            outcome=rng.choice(["refund_declined", "refunded", None])))
            if n % 5 == 1:
                purchase_channel = channels[0] if channels[0] != "portal" else "apple"
                store = (f"{4_000_000_000 + n}" if purchase_channel == "apple"
                         else f"gpt-product-{n:06d}")
                batches.add(Purchase, {
                    "id": f"pur_{n:024x}", "channel": purchase_channel,
                    "environment": "production", "store_id": store, "account_id": account,
                    "product_id": "credits_500", "kind": "consumable", "quantity": 1,
                    "amount": "4.99", "currency": "USD",
                    "purchased_at": now - timedelta(days=n % 60), "revoked_at": None,
                    "state": "purchased", "consumed": True, "clock": {},
                    "created_at": now - timedelta(days=n % 60), "updated_at": now})
                _credits(batches, told, account, n, store, purchase_channel, now)
                if purchase_channel == "google" and n % 25 == 1:
                    batches.add(Acknowledgement, {
                        "channel": "google", "store_id": store, "product_id": "credits_500",
                        "kind": "consumable",
                        "first_seen_at": now - timedelta(hours=n % 50), "acknowledged_at": None,
                        "attempts": 1, "next_attempt_at": now, "last_error": None})
        for name, value in told.counters().items():
            batches.add(EventCounter, {"name": name, "value": value})
        batches.flush()
        run_id = "rec_demo0000000000000000"
        connection.execute(insert(ReconciliationRun), [{
            "id": run_id, "status": "done", "dry_run": True, "filters": {}, "checked": accounts,
            "checkpoint": {"total": accounts, "phases": [], "phase": 0, "errors": 0},
            "error": None, "started_at": now - timedelta(hours=2),
            "finished_at": now - timedelta(hours=1), "lease_owner": None, "lease_until": None}])
        connection.execute(insert(Discrepancy), [{
            "run_id": run_id, "channel": "apple", "store_id": str(2_000_000_000 + k * 30),
            "subscription_id": f"sub_{k * 3:018x}{0:06x}", "kind": KINDS[k % len(KINDS)],
            "here": "active", "store": "expired", "repaired": False} for k in range(300)])
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        for name, role in (("alice", "admin"), ("bob", "agent"), ("vic", "viewer")):
            add_user(session, name, role, PASSWORD, now)
    engine.dispose()
    picks["run_id"] = run_id
    return picks


ENDPOINTS = [("whe_demo_billing", "https://billing.example.com/hooks/phone"),
             ("whe_demo_crm", "https://crm.example.net/webhooks/reconcile")]


TOLD_AS = {"grant": "credits.granted", "debit": "credits.debited",
           "adjustment": "credits.adjusted"}


class Told:
    """Events told to the business: feed positions and per-account sequences."""

    def __init__(self) -> None:
        self.position = 0
        self.sequences: dict[str, int] = {}

    def event(self, batches: Batches, account: str, kind: str, at: datetime,
              data: dict[str, Any], failing: bool) -> None:
        self.position += 1
        sequence = self.sequences[account] = self.sequences.get(account, 0) + 1
        event_id = f"evt_{self.position:024x}"
        batches.add(Event, {"id": event_id, "position": self.position, "type": kind,
                            "account_id": account, "sequence": sequence,
                            "subscription_id": None, "created_at": at, "data": data})
        for endpoint, _url in ENDPOINTS:
            broken = failing and endpoint == "whe_demo_crm"
            batches.add(Delivery, {
                "endpoint_id": endpoint, "event_id": event_id, "event_type": kind,
                "account_id": account, "position": self.position,
                "status": ("failed" if sequence == 1 else "pending") if broken else "delivered",
                "attempts": 7 if broken and sequence == 1 else 2 if broken else 1,
                "next_attempt_at": at + timedelta(hours=1) if broken else None,
                "last_status_code": 502 if broken else 200,
                "last_error": "HTTP 502" if broken else None, "created_at": at,
                "delivered_at": None if broken else at + timedelta(seconds=1),
                "lease_owner": None, "lease_until": None})

    def counters(self) -> dict[str, int]:
        return {"position": self.position,
                **{f"account:{a}": v for a, v in self.sequences.items()}}


def _credits(batches: Batches, told: Told, account: str, n: int, store: str, channel: str,
             now: datetime) -> None:
    """A credit pack's grant, some use, now and then an agent's adjustment; each told."""
    at = now - timedelta(days=n % 60)
    Step = tuple[str, int, str | None, str | None, str | None, str | None]
    steps: list[Step] = [("grant", 500, channel, store, None, None)]
    steps += [("debit", -(3 + k * 7 % 40), None, f"call-{n}-{k}", f"{3 + k * 7 % 40} minutes",
               None) for k in range(n % 9)]
    if n % 10 == 1:
        steps.append(("adjustment", -20, None, None, "duplicate call charged back by hand",
                      "bob"))
    balance = granted = used = adjusted = 0
    for k, (kind, amount, via, reference, note, actor) in enumerate(steps):
        balance += amount
        granted += amount if kind == "grant" else 0
        used -= amount if kind == "debit" else 0
        adjusted += amount if kind == "adjustment" else 0
        when = at + timedelta(hours=k * 5)
        batches.add(CreditEntry, {
            "account_id": account, "kind": kind, "amount": amount, "balance_after": balance,
            "channel": via, "reference": reference,
            "idempotency_key": reference if kind == "debit" else None, "source": None,
            "note": note, "actor": actor, "created_at": when})
        if kind != "debit" or k == len(steps) - 1:
            told.event(batches, account, TOLD_AS[kind], when,
                       {"amount": amount, "balance_after": balance}, failing=n % 20 == 1)
    batches.add(CreditBalance, {"account_id": account, "balance": balance, "granted": granted,
                                "used": used, "adjusted": adjusted, "clawed_back": 0,
                                "updated_at": now})


def _outbox(channel: str, kind: str, key: str, sub_id: str, account: str, store_id: str,
            payload: dict[str, Any], state: str, reason: str | None, now: datetime,
            outcome: str | None = None) -> dict[str, Any]:
    return {"channel": channel, "kind": kind, "dedupe_key": key, "subscription_id": sub_id,
            "account_id": account, "store_id": store_id, "payload": payload, "state": state,
            "reason": reason, "note": None, "outcome": outcome, "error": None, "attempts": 1,
            "created_at": now - timedelta(days=2), "next_attempt_at": now, "deadline_at": None,
            "sent_at": None, "confirmed_at": None, "lease_owner": None, "lease_until": None}


def time_pages(url: str, picks: dict[str, Any], rounds: int) -> list[tuple[str, float, float]]:
    """(page, median ms, slowest ms) for every console page, over real HTTP."""
    services = build_services(Settings(_env_file=None, database_url=url, admin_token="bench"))
    account = picks["accounts"][len(picks["accounts"]) // 2]
    paths = {
        "overview": "/console",
        "search (account id)": f"/console/search?q={account}",
        "search (store id)": f"/console/search?q={picks['store_ids'][3]}",
        "search (transaction id)": "/console/search?q=3000000777",
        "search (nothing found)": "/console/search?q=no-such-thing",
        "account": f"/console/accounts/{account}",
        "account (blocked)": f"/console/accounts/{picks['blocked'][0]}",
        "account (Apple action)": f"/console/accounts/{picks['apple_action'][0]}",
        "confirm cancel": f"/console/accounts/{account}/confirm/port-out",
        "notification": f"/console/notifications/{picks['inbox_id']}",
        "reconciliations": "/console/reconciliations",
        "reconciliation": f"/console/reconciliations/{picks['run_id']}",
        "reconciliation by kind": f"/console/reconciliations/{picks['run_id']}?kind=status",
        "audit log": "/console/audit",
        "GET /v1/audit": "/v1/audit",
    }
    results = []
    with serve_in_thread(services, "bench") as running:
        # As `reconcile serve` does once started: what exists now (here also the seeded data
        # and this client) stays out of the cycle collector's scans, or a full collection of
        # it pauses whichever request meets it (~200 ms in this process).
        settle_memory()
        client = running.client
        form = client.get("/console/login").text
        token = form.split('name="csrf_token" value="')[1].split('"')[0]
        signed = client.post("/console/login", data={"username": "alice", "password": PASSWORD,
                                                     "csrf_token": token})
        assert signed.status_code == 303, signed.text
        for name, path in paths.items():
            took = []
            for _ in range(rounds):
                started = time.perf_counter()
                answer = client.get(path, follow_redirects=True)
                took.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, (path, answer.status_code)
            results.append((name, statistics.median(took), max(took)))
    services.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-time", action="store_true")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'console.db'}"
    started = time.perf_counter()
    picks = seed(url, args.accounts, datetime.now(UTC).replace(microsecond=0),
                 random.Random(13))
    print(f"seeded {args.accounts} accounts into {url} in {time.perf_counter() - started:.1f} s")
    print(f"sign in as alice / bob / vic with password {PASSWORD!r}; e.g. account "
          f"{picks['accounts'][0]}")
    if args.no_time:
        return
    print(f"{'page':28} {'median ms':>10} {'slowest ms':>11}")
    for name, median, slowest in time_pages(url, picks, args.rounds):
        print(f"{name:28} {median:10.1f} {slowest:11.1f}")


if __name__ == "__main__":
    main()
