"""The purchases fixtures' world: the service with a catalog and an app token, the store side
served by the fakes, and the submissions and notifications a fixture names."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

from tests.fakes.appstore import FakeAppStore, renewal_payload, transaction_payload
from tests.fakes.play import FakePlay, product_purchase, subscription_purchase
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import BUNDLE_ID, sign_notification
from tests.support.google import Pusher, one_time_notification, subscription_notification
from tests.support.oidc import OidcIssuer
from tests.support.receipts import app_receipt
from tests.support.server import FakeClock, RunningApp

CATALOG = Path(__file__).parent.parent.parent / "fixtures" / "catalog" / "phone.toml"

FIXTURES = sorted((Path(__file__).parent.parent.parent / "fixtures" / "purchases").glob("*.json"))
APP_TOKEN = "test-app-token"
DAY_MS = 86_400_000
TRANSACTION_ID = "2000000000001001"
TOKEN = "google-token-0001"


def load(path: Path) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(path.read_text())
    return fixture


class Shop:
    """The running service and the store side of one fixture."""

    def __init__(self, app: RunningApp, fixture: dict[str, Any], ca: AppleTestCA,
                 appstore: FakeAppStore, play: FakePlay, oidc: OidcIssuer,
                 clock: FakeClock) -> None:
        self.app, self.fixture, self.ca = app, fixture, ca
        self.appstore, self.play, self.oidc, self.clock = appstore, play, oidc, clock
        self.now_ms = int(clock.now.timestamp() * 1000)
        self.transactions = self._apple_store()
        self._google_store()

    def _apple_store(self) -> list[dict[str, Any]]:
        store = self.fixture.get("store", {})
        spec = store.get("apple")
        if spec is None:
            return []
        made = [self._transaction(spec, TRANSACTION_ID)]
        for n, extra in enumerate(store.get("apple_extra", []), 1):
            made.append(self._transaction(extra, f"{int(TRANSACTION_ID) + n}"))
        for tx in made:  # one customer bought them all
            self.appstore.customers[tx["transactionId"]] = "customer-1"
        return made

    def _transaction(self, spec: dict[str, Any], tid: str) -> dict[str, Any]:
        kind = spec["type"]
        tx = transaction_payload(
            transaction_id=tid, original_transaction_id=tid,
            product_id=spec["product_id"], bundle_id=spec.get("bundle_id", BUNDLE_ID),
            purchase_date=self.now_ms - DAY_MS, type_=kind,
            expires_date=self.now_ms + spec.get("days_left", 20) * DAY_MS
            if kind == "Auto-Renewable Subscription" else None,
            app_account_token=spec.get("app_account_token"), environment="Sandbox",
            signed_date=self.now_ms,
        )
        if kind == "Auto-Renewable Subscription":
            renewal = renewal_payload(original_transaction_id=tid, product_id=spec["product_id"],
                                      auto_renew_status=spec.get("auto_renew", 1))
            self.appstore.add_subscription(tx, renewal, status=spec.get("status", 1))
        else:
            self.appstore.transactions[tid] = tx
        return tx

    def _google_store(self) -> None:
        spec = self.fixture.get("store", {}).get("google")
        if spec is None:
            return
        expiry = self.clock.now + dt.timedelta(days=spec.get("days_left", 20))
        if spec["kind"] == "subscription":
            self.play.subscriptions[TOKEN] = subscription_purchase(
                spec["product_id"], expiry_time=expiry, account_id=spec.get("account_id"),
                test_purchase=spec.get("test_purchase", False), now=self.clock.now)
        else:
            self.play.products[TOKEN] = product_purchase(
                spec["product_id"], purchase_time=self.clock.now - dt.timedelta(hours=1),
                account_id=spec.get("account_id"), test_purchase=spec.get("test_purchase", False))
        if spec.get("foreign"):
            self.play.foreign_tokens[TOKEN] = "com.example.other"

    def body(self, submit: dict[str, Any]) -> dict[str, Any]:
        """The POST /v1/purchases body for the fixture's form."""
        form = submit["form"]
        body: dict[str, Any] = {"account_id": submit["account_id"]}
        if form in ("subscription", "one_time"):
            spec = self.fixture["store"]["google"]
            return {**body, "channel": "google", "type": form,
                    "purchase_token": submit.get("purchase_token", TOKEN),
                    "product_id": submit.get("product_id", spec["product_id"])}
        body["channel"] = "apple"
        if form == "transaction_id":
            return {**body, "transaction_id": submit.get("transaction_id", TRANSACTION_ID)}
        if form == "app_receipt":
            receipt = submit.get("receipt") or app_receipt(
                [submit.get("transaction_id", TRANSACTION_ID)])
            return {**body, "app_receipt": receipt}
        return {**body, "signed_transaction": self.signed(submit.get("tamper"))}

    def signed(self, tamper: str | None) -> str:
        tx = {**self.transactions[0]}
        if tamper == "other_ca":
            return AppleTestCA.create().sign(tx)
        signed = self.ca.sign(tx)
        if tamper == "payload":
            header, _, signature = signed.split(".")
            forged = {**tx, "expiresDate": tx["expiresDate"] + 365 * DAY_MS}
            payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
            return f"{header}.{payload}.{signature}"
        return signed

    def notify(self) -> None:
        """The store's own notification of the same purchase, processed by the worker."""
        if self.transactions:
            tx = self.transactions[0]
            one_time = tx["type"] != "Auto-Renewable Subscription"
            data: dict[str, Any] = {"transaction": dict(tx)}
            if not one_time:
                data["status"] = 1
                data["renewal"] = {"originalTransactionId": tx["originalTransactionId"],
                                   "productId": tx["productId"], "autoRenewStatus": 1}
            note = {"notificationType": "ONE_TIME_CHARGE" if one_time else "SUBSCRIBED",
                    "notificationUUID": "99999999-0000-4000-8000-000000000001",
                    "signedDate": self.now_ms - DAY_MS + 1000, "data": data}
            if not one_time:
                note["subtype"] = "INITIAL_BUY"
            response = self.app.client.post(
                "/webhooks/apple", json={"signedPayload": sign_notification(self.ca, note)})
        else:
            spec = self.fixture["store"]["google"]
            if spec["kind"] == "subscription":
                message = subscription_notification(TOKEN, 4, self.clock.now)
            else:
                message = one_time_notification(TOKEN, spec["product_id"], 1, self.clock.now)
            response = Pusher(self.app.client, self.oidc).push(message)
        assert response.status_code == 200, response.text
        self.app.drain()

    def submit(self, submit: dict[str, Any]) -> Any:
        return self.app.client.post("/v1/purchases", json=self.body(submit),
                                    headers={"Authorization": f"Bearer {APP_TOKEN}"})

    def balance(self, account: str) -> int:
        answer = self.app.client.get(f"/v1/accounts/{account}/credits")
        assert answer.status_code == 200, answer.text
        balance: int = answer.json()["balance"]
        return balance

    def entitlements(self, account: str) -> dict[str, bool]:
        items = self.app.client.get(f"/v1/accounts/{account}/entitlements").json()["items"]
        return {item["entitlement"]: item["active"] for item in items}


