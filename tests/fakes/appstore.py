"""A local fake of the App Store Server API over real HTTP, for the real `AppStoreServerAPIClient`.

Point a client at it with `client._base_url = fake.url`. Payloads live as plain dicts and are signed
with the test CA when answered, so the service's `SignedDataVerifier` (given `ca.root_der`) accepts
them. Every request is recorded; any request that would cancel, refund, revoke or extend is recorded
as a violation, because the service's policy forbids them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.local_server import LocalServer
from tests.support.apple_ca import AppleTestCA
from tests.support.windows import most_in_window

JSON = dict[str, Any]
Query = dict[str, list[str]]

DEFAULT_BUNDLE_ID = "com.example.app"
DEFAULT_PRODUCT_ID = "com.example.premium.monthly"
DEFAULT_GROUP_ID = "21000000"
AUDIENCE = "appstoreconnect-v1"
MAX_TOKEN_LIFETIME_S = 3600
DAY_MS = 86_400_000

# Codes and messages from the library's APIError enum (Apple's documented error objects).
ERROR_MESSAGES: dict[int, str] = {
    4000000: "Invalid request.",
    4000005: "Invalid request revision.",
    4000006: "Invalid transaction id.",
    4000012: "Start date too far in past.",
    4000013: "Start date after end date.",
    4000014: "Invalid pagination token.",
    4000015: "Invalid start date.",
    4000016: "Invalid end date.",
    4000018: "Invalid notification type.",
    4000019: "Multiple filters supplied.",
    4000021: "Invalid sort.",
    4000022: "Invalid product type.",
    4000026: "Invalid in-app ownership type.",
    4000030: "Invalid revoked.",
    4000031: "Invalid status.",
    4000035: "Invalid customer consented value. The customer must consent.",
    4000036: "Invalid delivery status.",
    4000041: "Invalid sample content provided.",
    4000183: "Invalid appAccountToken value. Must be a UUID.",
    4040001: "Account not found.",
    4040002: "Account not found. Please try again.",
    4040005: "Original transaction id not found.",
    4040006: "Original transaction id not found. Please try again.",
    4040010: "Transaction id not found.",
    4290000: "Rate limit exceeded.",
    5000000: "An unknown error occurred.",
    5000001: "An unknown error occurred. Please try again.",
}
DEFAULT_ERROR_CODES: dict[int, int] = {
    400: 4000000,
    404: 4040010,
    429: 4290000,
    500: 5000000,
    503: 5000001,
}

PRODUCT_TYPES = {
    "AUTO_RENEWABLE": "Auto-Renewable Subscription",
    "NON_RENEWABLE": "Non-Renewing Subscription",
    "CONSUMABLE": "Consumable",
    "NON_CONSUMABLE": "Non-Consumable",
}
DELIVERY_STATUSES = frozenset({
    "DELIVERED", "UNDELIVERED_QUALITY_ISSUE", "UNDELIVERED_WRONG_ITEM",
    "UNDELIVERED_SERVER_OUTAGE", "UNDELIVERED_OTHER",
})
REFUND_PREFERENCES = frozenset({"DECLINE", "GRANT_FULL", "GRANT_PRORATED"})
FORBIDDEN_WORDS = ("refund", "revoke", "cancel", "extend")
REFUND_LOOKUP = re.compile(r"/inApps/v\d+/refund/lookup/[^/]+")


def now_ms() -> int:
    """The current time in integer milliseconds since the epoch, as Apple writes dates."""
    return time.time_ns() // 1_000_000


def _transaction_id() -> str:
    return f"2000000{secrets.randbelow(10**9):09d}"


def transaction_payload(
    *,
    transaction_id: str | None = None,
    original_transaction_id: str | None = None,
    product_id: str = DEFAULT_PRODUCT_ID,
    bundle_id: str = DEFAULT_BUNDLE_ID,
    purchase_date: int | None = None,
    original_purchase_date: int | None = None,
    expires_date: int | None = None,
    period_days: int = 30,
    type_: str = "Auto-Renewable Subscription",
    app_account_token: str | None = None,
    in_app_ownership_type: str = "PURCHASED",
    transaction_reason: str = "PURCHASE",
    subscription_group_identifier: str = DEFAULT_GROUP_ID,
    price: int = 9990,
    currency: str = "USD",
    storefront: str = "USA",
    environment: str = "Sandbox",
    signed_date: int | None = None,
    **extra: Any,
) -> JSON:
    """A decoded JWSTransaction dict; `signedDate` is left for the signer unless given."""
    tx_id = transaction_id or _transaction_id()
    purchased = purchase_date if purchase_date is not None else now_ms()
    payload: JSON = {
        "transactionId": tx_id,
        "originalTransactionId": original_transaction_id or tx_id,
        "bundleId": bundle_id,
        "productId": product_id,
        "purchaseDate": purchased,
        "originalPurchaseDate": (
            original_purchase_date if original_purchase_date is not None else purchased
        ),
        "quantity": 1,
        "type": type_,
        "inAppOwnershipType": in_app_ownership_type,
        "transactionReason": transaction_reason,
        "environment": environment,
        "storefront": storefront,
        "storefrontId": "143441",
        "price": price,
        "currency": currency,
    }
    if type_ == "Auto-Renewable Subscription":
        payload["subscriptionGroupIdentifier"] = subscription_group_identifier
        payload["webOrderLineItemId"] = _transaction_id()
        payload["expiresDate"] = (
            expires_date if expires_date is not None else purchased + period_days * DAY_MS
        )
    elif expires_date is not None:
        payload["expiresDate"] = expires_date
    if app_account_token is not None:
        payload["appAccountToken"] = app_account_token
    if signed_date is not None:
        payload["signedDate"] = signed_date
    payload.update(extra)
    return payload


def renewal_payload(
    *,
    original_transaction_id: str,
    product_id: str = DEFAULT_PRODUCT_ID,
    auto_renew_product_id: str | None = None,
    auto_renew_status: int = 1,
    is_in_billing_retry_period: bool = False,
    grace_period_expires_date: int | None = None,
    renewal_date: int | None = None,
    expiration_intent: int | None = None,
    recent_subscription_start_date: int | None = None,
    renewal_price: int | None = 9990,
    currency: str = "USD",
    environment: str = "Sandbox",
    signed_date: int | None = None,
    **extra: Any,
) -> JSON:
    """A decoded JWSRenewalInfo dict; `signedDate` is left for the signer unless given."""
    payload: JSON = {
        "originalTransactionId": original_transaction_id,
        "productId": product_id,
        "autoRenewProductId": auto_renew_product_id or product_id,
        "autoRenewStatus": auto_renew_status,
        "isInBillingRetryPeriod": is_in_billing_retry_period,
        "environment": environment,
        "currency": currency,
    }
    optional = {
        "gracePeriodExpiresDate": grace_period_expires_date,
        "renewalDate": renewal_date,
        "expirationIntent": expiration_intent,
        "recentSubscriptionStartDate": recent_subscription_start_date,
        "renewalPrice": renewal_price,
        "signedDate": signed_date,
    }
    payload.update({k: v for k, v in optional.items() if v is not None})
    payload.update(extra)
    return payload


def notification_payload(
    notification_type: str,
    subtype: str | None = None,
    *,
    transaction: JSON | None = None,
    renewal: JSON | None = None,
    status: int | None = None,
    bundle_id: str = DEFAULT_BUNDLE_ID,
    environment: str = "Sandbox",
    app_apple_id: int | None = None,
    signed_date: int | None = None,
    notification_uuid: str | None = None,
) -> JSON:
    """A decoded notification dict whose nested transaction/renewal stay dicts until signed."""
    data: JSON = {"bundleId": bundle_id, "environment": environment}
    if app_apple_id is not None:
        data["appAppleId"] = app_apple_id
    if transaction is not None:
        data["signedTransactionInfo"] = transaction
    if renewal is not None:
        data["signedRenewalInfo"] = renewal
    if status is not None:
        data["status"] = status
    payload: JSON = {
        "notificationType": notification_type,
        "notificationUUID": notification_uuid or str(uuid.uuid4()),
        "version": "2.0",
        "data": data,
    }
    if subtype is not None:
        payload["subtype"] = subtype
    if signed_date is not None:
        payload["signedDate"] = signed_date
    return payload


def sign_notification(ca: AppleTestCA, payload: JSON) -> str:
    """Sign a notification dict, signing nested transaction/renewal dicts first."""
    outer = {k: v for k, v in payload.items() if k != "sendAttempts"}
    outer.setdefault("signedDate", now_ms())
    data = outer.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for key in ("signedTransactionInfo", "signedRenewalInfo"):
            nested = data.get(key)
            if isinstance(nested, dict):
                data[key] = ca.sign({"signedDate": outer["signedDate"], **nested})
        outer["data"] = data
    return ca.sign(outer)


@dataclass
class SubscriptionGroupItem:
    """A subscription's newest transaction, renewal info and status (1..5), as Apple reports it."""

    transaction: JSON
    renewal: JSON
    status: int = 1
    group_id: str | None = None


@dataclass(frozen=True)
class Call:
    """One request the fake received."""

    method: str
    path: str
    query: Query
    body: Any
    at: float
    authorization: str | None = None


@dataclass
class _Fault:
    path_substring: str
    status: int
    remaining: int
    error_code: int | None


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None


class _ApiError(Exception):
    def __init__(self, status: int, code: int) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def _error(status: int, code: int | None) -> _Response:
    if code is None:
        return _Response(status, b"Error", "text/plain")
    message = ERROR_MESSAGES.get(code, "Error.")
    # The library only parses error bodies whose content-type is exactly "application/json".
    return _Response(status, json.dumps({"errorCode": code, "errorMessage": message}).encode(),
                     "application/json")


def _ok(body: JSON, status: int = 200) -> _Response:
    return _Response(status, json.dumps(body).encode(), "application/json")


def _encode_token(offset: int) -> str:
    raw = json.dumps({"offset": offset, "n": secrets.token_hex(4)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str | None) -> int | None:
    """The offset a token encodes, 0 for no token, None for a token this fake never issued."""
    if token is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        offset = json.loads(raw)["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    return offset if isinstance(offset, int) and offset >= 0 else None


def _first(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _is_violation(method: str, path: str) -> bool:
    lowered = path.lower()
    if method == "GET" and REFUND_LOOKUP.fullmatch(path):
        return False
    return any(word in lowered for word in FORBIDDEN_WORDS)


def _transaction_of(notification: JSON) -> JSON | None:
    data = notification.get("data")
    if not isinstance(data, dict):
        return None
    nested = data.get("signedTransactionInfo")
    if isinstance(nested, dict):
        return nested
    if isinstance(nested, str):
        try:
            decoded: JSON = jwt.decode(nested, options={"verify_signature": False})
            return decoded
        except jwt.PyJWTError:
            return None
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeAppStore


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        response = self.server.fake._dispatch(
            self.command, self.path, self.headers.get("Authorization"), raw
        )
        self.send_response(response.status)
        if response.content_type is not None:
            self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


Route = tuple[str, re.Pattern[str], Callable[[str, Query, Any], _Response]]


class FakeAppStore(LocalServer):
    """The App Store Server API endpoints the service uses, served from mutable in-memory state."""

    def __init__(
        self,
        ca: AppleTestCA,
        bundle_id: str,
        environment: str = "Sandbox",
        *,
        api_public_key: ec.EllipticCurvePublicKey | None = None,
        key_id: str | None = None,
        issuer_id: str | None = None,
        app_apple_id: int | None = None,
        page_size: int = 20,
        history_max_age_days: int | None = 180,
    ) -> None:
        self.ca = ca
        self.bundle_id = bundle_id
        self.environment = environment
        self.api_public_key = api_public_key
        self.key_id = key_id
        self.issuer_id = issuer_id
        self.app_apple_id = app_apple_id
        self.page_size = page_size
        self.history_max_age_days = history_max_age_days
        self.latency: float = 0.0  # seconds from a request's arrival to its answer
        self.lock = threading.RLock()
        self.subscriptions: dict[str, list[SubscriptionGroupItem]] = {}
        self.notifications: list[JSON] = []
        self.transactions: dict[str, JSON] = {}
        # Transaction id -> customer: Get Transaction History answers all of one customer's
        # transactions (every product); without an entry a customer is one original id.
        self.customers: dict[str, str] = {}
        self.refunds: dict[str, list[JSON]] = {}
        self.consumption_requests: list[tuple[str, JSON]] = []
        self.app_account_token_requests: list[tuple[str, str]] = []
        self.calls: list[Call] = []
        self.unexpected: list[Call] = []
        self.violations: list[Call] = []
        self.auth_failures: list[tuple[Call, str]] = []
        self.server_errors: list[BaseException] = []
        self._faults: list[_Fault] = []
        super().__init__()
        self.thread_name = "fake-appstore"
        tx = r"(?P<id>[^/]+)"
        self._routes: list[Route] = [
            ("GET", re.compile(rf"/inApps/v1/subscriptions/{tx}"), self._get_statuses),
            ("POST", re.compile(r"/inApps/v1/notifications/history"), self._notification_history),
            ("GET", re.compile(rf"/inApps/v1/transactions/{tx}"), self._transaction_info),
            ("GET", re.compile(rf"/inApps/v[12]/history/{tx}"), self._transaction_history),
            ("PUT", re.compile(rf"/inApps/v2/transactions/consumption/{tx}"), self._consumption_v2),
            ("PUT", re.compile(rf"/inApps/v1/transactions/consumption/{tx}"), self._consumption_v1),
            ("GET", re.compile(rf"/inApps/v2/refund/lookup/{tx}"), self._refund_history),
            ("PUT", re.compile(rf"/inApps/v1/transactions/{tx}/appAccountToken"),
             self._set_app_account_token),
        ]

    # Lifecycle

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`: set it as the API client's base URL."""
        return self.origin

    def _make_server(self) -> _Server:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        return server

    # Test controls

    def add_subscription(
        self, transaction: JSON, renewal: JSON | None = None, status: int = 1
    ) -> str:
        """Store (or replace) a subscription's status under its original transaction id."""
        original_id = str(transaction["originalTransactionId"])
        if renewal is None:
            renewal = renewal_payload(
                original_transaction_id=original_id,
                product_id=str(transaction.get("productId", DEFAULT_PRODUCT_ID)),
                environment=self.environment,
            )
        with self.lock:
            self.subscriptions[original_id] = [SubscriptionGroupItem(transaction, renewal, status)]
            self.transactions.setdefault(str(transaction["transactionId"]), transaction)
        return original_id

    def add_notification(
        self, payload: JSON, send_attempts: list[JSON] | None = None
    ) -> JSON:
        """Append a notification to the history, stamping `signedDate` and attempts if missing."""
        entry = dict(payload)
        entry.setdefault("signedDate", now_ms())
        entry.setdefault("notificationUUID", str(uuid.uuid4()))
        if send_attempts is not None:
            entry["sendAttempts"] = send_attempts
        with self.lock:
            self.notifications.append(entry)
        return entry

    def fail_next(
        self, path_substring: str, status: int, times: int = 1, error_code: int | None = None
    ) -> None:
        """Answer the next `times` requests whose path contains `path_substring` with an error."""
        code = error_code if error_code is not None else DEFAULT_ERROR_CODES.get(status)
        with self.lock:
            self._faults.append(_Fault(path_substring, status, times, code))

    def calls_to(self, path_substring: str, method: str | None = None) -> list[Call]:
        """Recorded calls whose path contains `path_substring` (and whose method matches)."""
        with self.lock:
            return [
                c for c in self.calls
                if path_substring in c.path and (method is None or c.method == method)
            ]

    def max_calls_in_window(self, window_seconds: float) -> int:
        """The most calls that arrived within any interval of `window_seconds`."""
        with self.lock:
            times = [c.at for c in self.calls]
        return most_in_window(times, window_seconds)

    def assert_clean(self, *, include_unexpected: bool = False) -> None:
        """Raise AssertionError listing every forbidden (cancel/refund/revoke/extend) call."""
        with self.lock:
            bad = list(self.violations)
            if include_unexpected:
                bad += [c for c in self.unexpected if c not in bad]
        if bad:
            listing = "\n".join(f"  {c.method} {c.path} body={c.body!r}" for c in bad)
            raise AssertionError(f"forbidden or unexpected App Store API calls:\n{listing}")

    # Request handling

    def _dispatch(
        self, method: str, raw_path: str, authorization: str | None, raw_body: bytes
    ) -> _Response:
        split = urlsplit(raw_path)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        body: Any = None
        body_invalid = False
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body_invalid = True
        call = Call(method, path, query, body, time.monotonic(), authorization)
        route = next(
            ((m, r, h) for m, r, h in self._routes if m == method and r.fullmatch(path)), None
        )
        with self.lock:
            self.calls.append(call)
            if _is_violation(method, path):
                self.violations.append(call)
            if route is None:
                self.unexpected.append(call)
            fault = next(
                (f for f in self._faults if f.remaining > 0 and f.path_substring in path), None
            )
            if fault is not None:
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
            answer_at = call.at + self.latency
        response = self._answer(call, route, fault, authorization, body_invalid)
        # Latency is the store's whole answer time: its own work (checking the token, signing)
        # is part of it, not added to it.
        wait = answer_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return response

    def _answer(
        self, call: Call, route: Route | None, fault: _Fault | None, authorization: str | None,
        body_invalid: bool,
    ) -> _Response:
        path, query, body = call.path, call.query, call.body
        if fault is not None:
            return _error(fault.status, fault.error_code)
        reason = self._auth_problem(authorization)
        if reason is not None:
            with self.lock:
                self.auth_failures.append((call, reason))
            # Apple answers a rejected token with a bare text body: the library sees no errorCode.
            return _Response(401, b"Unauthenticated", "text/plain")
        if route is None:
            return _Response(404, b"Not Found", "text/plain")
        if body_invalid:
            return _error(400, 4000000)
        _, pattern, handler = route
        match = pattern.fullmatch(path)
        assert match is not None
        ident = unquote(match.groupdict().get("id") or "")
        try:
            with self.lock:
                return handler(ident, query, body)
        except _ApiError as e:
            return _error(e.status, e.code)
        except Exception as e:  # a bug in the fake must not hang the client
            with self.lock:
                self.server_errors.append(e)
            return _error(500, 5000000)

    def _auth_problem(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return "missing bearer token"
        token = authorization.removeprefix("Bearer ").strip()
        try:
            header = jwt.get_unverified_header(token)
            if self.api_public_key is not None:
                claims = jwt.decode(
                    token, self.api_public_key, algorithms=["ES256"],
                    options={"verify_aud": False, "verify_exp": False},
                )
            else:
                claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            return f"bad token: {e}"
        problems = {
            "alg is not ES256": header.get("alg") != "ES256",
            "kid missing": not header.get("kid"),
            "kid mismatch": self.key_id is not None and header.get("kid") != self.key_id,
            "aud mismatch": claims.get("aud") != AUDIENCE,
            "bid mismatch": claims.get("bid") != self.bundle_id,
            "iss missing": not claims.get("iss"),
            "iss mismatch": self.issuer_id is not None and claims.get("iss") != self.issuer_id,
        }
        for problem, present in problems.items():
            if present:
                return problem
        exp = claims.get("exp")
        now = time.time()
        if not isinstance(exp, int) or exp <= now:
            return "expired or missing exp"
        if exp > now + MAX_TOKEN_LIFETIME_S + 60:
            return "exp more than an hour ahead"
        return None

    # State views

    def _all_transactions(self) -> list[JSON]:
        seen: dict[str, JSON] = {}
        for tx in self.transactions.values():
            seen.setdefault(str(tx.get("transactionId")), tx)
        for items in self.subscriptions.values():
            for item in items:
                seen.setdefault(str(item.transaction.get("transactionId")), item.transaction)
        for refunded in self.refunds.values():
            for tx in refunded:
                seen.setdefault(str(tx.get("transactionId")), tx)
        return list(seen.values())

    def _original_id_for(self, any_id: str) -> str | None:
        if any_id in self.subscriptions or any_id in self.refunds:
            return any_id
        for tx in self._all_transactions():
            if any_id in (tx.get("transactionId"), tx.get("originalTransactionId")):
                return str(tx.get("originalTransactionId", any_id))
        return None

    def _sign_transaction(self, tx: JSON) -> str:
        payload = {"bundleId": self.bundle_id, "environment": self.environment, **tx}
        payload.setdefault("signedDate", now_ms())
        return self.ca.sign(payload)

    def _sign_renewal(self, renewal: JSON) -> str:
        payload = {"environment": self.environment, **renewal}
        payload.setdefault("signedDate", now_ms())
        return self.ca.sign(payload)

    def _base(self) -> JSON:
        body: JSON = {"environment": self.environment, "bundleId": self.bundle_id}
        if self.app_apple_id is not None:
            body["appAppleId"] = self.app_apple_id
        return body

    def _page(self, items: list[Any], token: str | None, bad_token_code: int) -> tuple[
        list[Any], str, bool
    ]:
        offset = _decode_token(token)
        if offset is None or offset > len(items):
            raise _ApiError(400, bad_token_code)
        end = offset + self.page_size
        return items[offset:end], _encode_token(min(end, len(items))), end < len(items)

    # Endpoints

    def _get_statuses(self, any_id: str, query: Query, body: Any) -> _Response:
        original_id = self._original_id_for(any_id)
        if original_id is None or original_id not in self.subscriptions:
            raise _ApiError(404, 4040010)
        try:
            wanted = {int(s) for s in query.get("status", [])}
        except ValueError:
            raise _ApiError(400, 4000031) from None
        if not wanted <= {1, 2, 3, 4, 5}:
            raise _ApiError(400, 4000031)
        groups: dict[str, list[JSON]] = {}
        for item in self.subscriptions[original_id]:
            if wanted and item.status not in wanted:
                continue
            group = item.group_id or str(
                item.transaction.get("subscriptionGroupIdentifier", DEFAULT_GROUP_ID)
            )
            groups.setdefault(group, []).append({
                "originalTransactionId": str(
                    item.transaction.get("originalTransactionId", original_id)
                ),
                "status": item.status,
                "signedTransactionInfo": self._sign_transaction(item.transaction),
                "signedRenewalInfo": self._sign_renewal(item.renewal),
            })
        data = [
            {"subscriptionGroupIdentifier": g, "lastTransactions": items}
            for g, items in groups.items()
        ]
        return _ok({**self._base(), "data": data})

    def _notification_history(self, _: str, query: Query, body: Any) -> _Response:
        if not isinstance(body, dict):
            raise _ApiError(400, 4000000)
        start, end = body.get("startDate"), body.get("endDate")
        if not isinstance(start, int):
            raise _ApiError(400, 4000015)
        if not isinstance(end, int):
            raise _ApiError(400, 4000016)
        if start >= end:
            raise _ApiError(400, 4000013)
        if (
            self.history_max_age_days is not None
            and start < now_ms() - self.history_max_age_days * DAY_MS
        ):
            raise _ApiError(400, 4000012)
        notification_type = body.get("notificationType")
        subtype = body.get("notificationSubtype")
        transaction_id = body.get("transactionId")
        if transaction_id is not None and (notification_type or subtype):
            raise _ApiError(400, 4000019)
        if subtype is not None and notification_type is None:
            raise _ApiError(400, 4000018)
        customer = self._original_id_for(str(transaction_id)) if transaction_id else None
        for entry in self.notifications:
            entry.setdefault("signedDate", now_ms())
            entry.setdefault("notificationUUID", str(uuid.uuid4()))

        def keep(entry: JSON) -> bool:
            if not start <= entry["signedDate"] < end:
                return False
            if notification_type is not None and entry.get("notificationType") != notification_type:
                return False
            if subtype is not None and entry.get("subtype") != subtype:
                return False
            if body.get("onlyFailures") and any(
                a.get("sendAttemptResult") == "SUCCESS" for a in self._attempts(entry)
            ):
                return False
            if transaction_id is not None:
                tx = _transaction_of(entry) or {}
                ids = {tx.get("transactionId"), tx.get("originalTransactionId")}
                return transaction_id in ids or (customer is not None and customer in ids)
            return True

        matching = sorted(
            (e for e in self.notifications if keep(e)), key=lambda e: int(e["signedDate"])
        )
        page, token, has_more = self._page(matching, _first(query, "paginationToken"), 4000014)
        history = [
            {"signedPayload": self._sign_notification(e), "sendAttempts": self._attempts(e)}
            for e in page
        ]
        response: JSON = {"notificationHistory": history, "hasMore": has_more}
        if has_more:
            response["paginationToken"] = token
        return _ok(response)

    def _attempts(self, entry: JSON) -> list[JSON]:
        attempts = entry.get("sendAttempts")
        if attempts is None:
            return [{"attemptDate": entry["signedDate"], "sendAttemptResult": "SUCCESS"}]
        return list(attempts)

    def _sign_notification(self, entry: JSON) -> str:
        payload = dict(entry)
        data = payload.get("data")
        if isinstance(data, dict):
            data = {"bundleId": self.bundle_id, "environment": self.environment, **data}
            env = {"environment": self.environment}
            defaults = {"signedTransactionInfo": {"bundleId": self.bundle_id, **env},
                        "signedRenewalInfo": env}
            for key, fill in defaults.items():
                nested = data.get(key)
                if isinstance(nested, dict):
                    data[key] = {**fill, **nested}
            payload["data"] = data
        return sign_notification(self.ca, payload)

    def _transaction_info(self, transaction_id: str, query: Query, body: Any) -> _Response:
        tx = self.transactions.get(transaction_id)
        if tx is None:
            candidates = self._all_transactions()
            tx = next((t for t in candidates if t.get("transactionId") == transaction_id), None)
            if tx is None:
                originals = [
                    t for t in candidates if t.get("originalTransactionId") == transaction_id
                ]
                tx = min(originals, key=lambda t: int(t.get("purchaseDate", 0)), default=None)
        if tx is None:
            raise _ApiError(404, 4040010)
        return _ok({"signedTransactionInfo": self._sign_transaction(tx)})

    def _transaction_history(self, any_id: str, query: Query, body: Any) -> _Response:
        original_id = self._original_id_for(any_id)
        if original_id is None:
            raise _ApiError(404, 4040010)
        customer = self.customers.get(any_id)
        txs = [t for t in self._all_transactions()
               if t.get("originalTransactionId") == original_id
               or (customer is not None and self.customers.get(str(t.get("transactionId")))
                   == customer)]
        txs = self._filter_history(txs, query)
        page, revision, has_more = self._page(txs, _first(query, "revision"), 4000005)
        return _ok({
            **self._base(),
            "revision": revision,
            "hasMore": has_more,
            "signedTransactions": [self._sign_transaction(t) for t in page],
        })

    def _filter_history(self, txs: Iterable[JSON], query: Query) -> list[JSON]:
        result = list(txs)
        product_ids = query.get("productId")
        if product_ids:
            result = [t for t in result if t.get("productId") in product_ids]
        product_types = query.get("productType")
        if product_types:
            if any(p not in PRODUCT_TYPES for p in product_types):
                raise _ApiError(400, 4000022)
            types = {PRODUCT_TYPES[p] for p in product_types}
            result = [t for t in result if t.get("type") in types]
        ownership = _first(query, "inAppOwnershipType")
        if ownership is not None:
            if ownership not in ("PURCHASED", "FAMILY_SHARED"):
                raise _ApiError(400, 4000026)
            result = [t for t in result if t.get("inAppOwnershipType") == ownership]
        revoked = _first(query, "revoked")
        if revoked is not None:
            if revoked.lower() not in ("true", "false"):
                raise _ApiError(400, 4000030)
            want = revoked.lower() == "true"
            result = [t for t in result if ("revocationDate" in t) == want]
        try:
            start = int(_first(query, "startDate") or 0)
            end = int(_first(query, "endDate") or 2**62)
        except ValueError:
            raise _ApiError(400, 4000015) from None
        result = [t for t in result if start <= int(t.get("purchaseDate", 0)) < end]
        sort = _first(query, "sort") or "ASCENDING"
        if sort not in ("ASCENDING", "DESCENDING"):
            raise _ApiError(400, 4000021)
        result.sort(key=lambda t: int(t.get("purchaseDate", 0)), reverse=sort == "DESCENDING")
        return result

    def _consumption_v2(self, transaction_id: str, query: Query, body: Any) -> _Response:
        if not isinstance(body, dict):
            raise _ApiError(400, 4000000)
        if body.get("customerConsented") is not True:
            raise _ApiError(400, 4000035)
        if not isinstance(body.get("sampleContentProvided"), bool):
            raise _ApiError(400, 4000041)
        if body.get("deliveryStatus") not in DELIVERY_STATUSES:
            raise _ApiError(400, 4000036)
        percentage = body.get("consumptionPercentage")
        if percentage is not None and (
            not isinstance(percentage, int) or not 0 <= percentage <= 100_000
        ):
            raise _ApiError(400, 4000000)
        preference = body.get("refundPreference")
        if preference is not None and preference not in REFUND_PREFERENCES:
            raise _ApiError(400, 4000000)
        self.consumption_requests.append((transaction_id, body))
        return _Response(202)

    def _consumption_v1(self, transaction_id: str, query: Query, body: Any) -> _Response:
        if not isinstance(body, dict):
            raise _ApiError(400, 4000000)
        if body.get("customerConsented") is not True:
            raise _ApiError(400, 4000035)
        self.consumption_requests.append((transaction_id, body))
        return _Response(202)

    def _refund_history(self, any_id: str, query: Query, body: Any) -> _Response:
        original_id = self._original_id_for(any_id)
        if original_id is None:
            raise _ApiError(404, 4040010)
        refunded = sorted(
            self.refunds.get(any_id) or self.refunds.get(original_id) or [],
            key=lambda t: int(t.get("revocationDate", 0)),
        )
        page, revision, has_more = self._page(refunded, _first(query, "revision"), 4000005)
        return _ok({
            "signedTransactions": [self._sign_transaction(t) for t in page],
            "revision": revision,
            "hasMore": has_more,
        })

    def _set_app_account_token(self, original_id: str, query: Query, body: Any) -> _Response:
        token = body.get("appAccountToken") if isinstance(body, dict) else None
        try:
            uuid.UUID(str(token))
        except ValueError:
            raise _ApiError(400, 4000183) from None
        matching = [
            t for t in self._all_transactions() if t.get("originalTransactionId") == original_id
        ]
        if not matching:
            raise _ApiError(404, 4040005)
        for tx in matching:
            tx["appAccountToken"] = str(token)
        self.app_account_token_requests.append((original_id, str(token)))
        return _Response(200)
