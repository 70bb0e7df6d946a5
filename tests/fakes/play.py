"""A local fake of the Google Play Developer API (androidpublisher v3) over real HTTP.

Routing is built from the discovery document bundled with google-api-python-client, so every
path and HTTP method is exactly the one the real client sends. Only the calls the service may
make are served; the ones that refund, revoke or defer are recorded as violations and refused.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import googleapiclient

from tests.fakes.local_server import LocalServer
from tests.support.windows import most_in_window

JsonDict = dict[str, Any]

SUBSCRIPTIONSV2_GET = "androidpublisher.purchases.subscriptionsv2.get"
SUBSCRIPTIONSV2_CANCEL = "androidpublisher.purchases.subscriptionsv2.cancel"
SUBSCRIPTIONS_ACKNOWLEDGE = "androidpublisher.purchases.subscriptions.acknowledge"
PRODUCTS_GET = "androidpublisher.purchases.products.get"
PRODUCTS_ACKNOWLEDGE = "androidpublisher.purchases.products.acknowledge"
PRODUCTS_CONSUME = "androidpublisher.purchases.products.consume"
PRODUCTSV2_GET = "androidpublisher.purchases.productsv2.getproductpurchasev2"
VOIDED_LIST = "androidpublisher.purchases.voidedpurchases.list"
ORDERS_GET = "androidpublisher.orders.get"
ORDERS_BATCHGET = "androidpublisher.orders.batchget"
ORDERS_REVIEWREFUND = "androidpublisher.orders.reviewrefund"
TOKEN_CALL_NAME = "oauth2.token"

FORBIDDEN_METHODS = frozenset(
    {
        "androidpublisher.purchases.subscriptionsv2.revoke",
        "androidpublisher.purchases.subscriptionsv2.defer",
        "androidpublisher.purchases.subscriptions.defer",
        "androidpublisher.purchases.subscriptions.revoke",
        "androidpublisher.purchases.subscriptions.refund",
        "androidpublisher.orders.refund",
        "androidpublisher.externaltransactions.refundexternaltransaction",
    }
)
_FORBIDDEN_VERB = re.compile(r":(revoke|refund|defer|refundexternaltransaction)$")

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SUBSCRIPTION_KIND = "androidpublisher#subscriptionPurchaseV2"
PRODUCT_KIND = "androidpublisher#productPurchase"
PRODUCT_V2_KIND = "androidpublisher#productPurchaseV2"
VOIDED_KIND = "androidpublisher#voidedPurchase"
PRODUCT_TYPE_SUBSCRIPTION = 1
PRODUCT_TYPE_ONE_TIME = 2
_VOIDED_PAGE_MAX = 1000
_VOIDED_WINDOW_MS = 30 * 24 * 3600 * 1000

_REASONS = {
    400: "invalid",
    401: "authError",
    403: "permissionDenied",
    404: "notFound",
    409: "conflict",
    410: "subscriptionPurchaseNoLongerAvailable",
    429: "rateLimitExceeded",
}
_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    400: "Invalid Value",
    401: "Request had invalid authentication credentials.",
    403: "The current user has insufficient permissions to perform the requested operation.",
    404: "The requested entity was not found.",
    409: "The operation was aborted.",
    410: "The subscription purchase is no longer available for query because it has been "
    "expired for too long.",
    429: "Rate limit exceeded.",
}


@dataclass(frozen=True)
class Call:
    """One HTTP request the fake received, with the discovery method id it resolved to."""

    method: str
    name: str
    path: str
    query: dict[str, str]
    body: JsonDict | None
    at: float
    status: int = 0
    bearer: str | None = None
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    suffix: str
    status: int
    remaining: int
    reason: str | None
    message: str | None


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    query_multi: dict[str, list[str]]
    body: JsonDict | None


_Answer = tuple[int, JsonDict]


@dataclass(frozen=True)
class _Route:
    http_method: str
    pattern: re.Pattern[str]
    name: str


def google_error(status: int, message: str | None = None, reason: str | None = None) -> JsonDict:
    """Build the JSON error body Google APIs answer with for `status`."""
    default_reason = "backendError" if status >= 500 else _REASONS.get(status, "failedPrecondition")
    text = message or _MESSAGES.get(status, "Backend Error" if status >= 500 else "Error")
    error: JsonDict = {
        "code": status,
        "message": text,
        "errors": [
            {"message": text, "domain": "androidpublisher", "reason": reason or default_reason}
        ],
    }
    if status in _STATUSES:
        error["status"] = _STATUSES[status]
    return {"error": error}


def rfc3339(value: dt.datetime | str) -> str:
    """Render an aware datetime as Google does (UTC, milliseconds, `Z`); strings pass through."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC datetime")
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _token_not_found() -> tuple[int, JsonDict]:
    return 404, google_error(404, "The purchase token was not found.")


def _now_rfc3339() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


def _now_millis() -> int:
    return time.time_ns() // 1_000_000


@functools.cache
def _routes() -> tuple[_Route, ...]:
    document = Path(str(googleapiclient.__file__)).parent / (
        "discovery_cache/documents/androidpublisher.v3.json"
    )
    discovery = json.loads(document.read_text(encoding="utf-8"))
    routes: list[_Route] = []

    def walk(resources: JsonDict) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                flat = method.get("flatPath") or method["path"]
                parts = re.split(r"(\{[^}]+\})", flat)
                regex = "".join(
                    f"(?P<{part[1:-1].lstrip('+')}>[^/:]+)"
                    if part.startswith("{")
                    else re.escape(part)
                    for part in parts
                )
                routes.append(
                    _Route(method["httpMethod"], re.compile(f"/{regex}"), method["id"])
                )
            walk(resource.get("resources", {}))

    walk(discovery["resources"])
    return tuple(routes)


def _resolve(http_method: str, path: str) -> tuple[str, dict[str, str]]:
    for route in _routes():
        match = route.pattern.fullmatch(path)
        if match and route.http_method == http_method:
            return route.name, {k: unquote(v) for k, v in match.groupdict().items()}
    return "", {}


def _encode_cursor(state: JsonDict) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> JsonDict:
    padded = token + "=" * (-len(token) % 4)
    state = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(state, dict):
        raise ValueError("page token is not an object")
    return state


def _jwt_claims(assertion: str) -> JsonDict:
    parts = assertion.split(".")
    if len(parts) != 3:
        raise ValueError("assertion is not a JWT")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
    if not isinstance(claims, dict):
        raise ValueError("JWT payload is not an object")
    return claims


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakePlay) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out (the latency tests) closed its end: not a fake error.
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        at = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake = self.server.fake
        try:
            status, payload, delay = fake._answer(
                method, self.path, raw, self.headers.get("Authorization"), at
            )
        except Exception as exc:
            fake._record_error(f"{method} {self.path}: {exc!r}")
            status, payload, delay = 500, google_error(500, f"fake crashed: {exc!r}"), 0.0
        if delay > 0:
            time.sleep(delay)
        data = b"" if status == 204 else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakePlay(LocalServer):
    """The androidpublisher v3 purchase endpoints and an OAuth2 token endpoint, on 127.0.0.1."""

    def __init__(
        self,
        *,
        package_name: str | None = None,
        latency: float = 0.0,
        accept_any_bearer: bool = True,
        strict_voided_window: bool = False,
    ) -> None:
        """Create a stopped fake; `package_name` set means other packages answer 404."""
        self.package_name = package_name
        self.latency = latency
        self.accept_any_bearer = accept_any_bearer
        self.strict_voided_window = strict_voided_window
        self.lock = threading.RLock()
        self.subscriptions: dict[str, JsonDict] = {}
        self.products: dict[str, JsonDict] = {}
        self.products_v2: dict[str, JsonDict] = {}
        self.orders: dict[str, JsonDict] = {}
        self.voided: list[JsonDict] = []
        self.calls: list[Call] = []
        self.violations: list[Call] = []
        self.unexpected: list[Call] = []
        self.errors: list[str] = []
        # Tokens another app's purchases carry: Google refuses them under our package name.
        self.foreign_tokens: dict[str, str] = {}
        self.token_requests: list[JsonDict] = []
        self.issued_tokens: list[str] = []
        self._faults: list[_Fault] = []
        super().__init__()
        self.thread_name = "fake-play"
        self._handlers: dict[str, Callable[[_Request], _Answer]] = {
            SUBSCRIPTIONSV2_GET: self._subscriptionsv2_get,
            SUBSCRIPTIONSV2_CANCEL: self._subscriptionsv2_cancel,
            SUBSCRIPTIONS_ACKNOWLEDGE: self._subscriptions_acknowledge,
            PRODUCTS_GET: self._products_get,
            PRODUCTS_ACKNOWLEDGE: self._products_acknowledge,
            PRODUCTS_CONSUME: self._products_consume,
            PRODUCTSV2_GET: self._productsv2_get,
            VOIDED_LIST: self._voided_list,
            ORDERS_GET: self._orders_get,
            ORDERS_BATCHGET: self._orders_batchget,
        }

    def _make_server(self) -> _Server:
        return _Server(self)

    @property
    def token_uri(self) -> str:
        """OAuth2 token endpoint, for a service-account key's `token_uri`."""
        return self.url + "token"

    def fail_next(
        self,
        name_suffix: str,
        status: int,
        times: int = 1,
        *,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next `times` calls whose method id ends with `name_suffix` answer `status`."""
        with self.lock:
            self._faults.append(_Fault(name_suffix, status, times, reason, message))

    def calls_named(self, suffix: str) -> list[Call]:
        """Recorded calls whose discovery method id ends with `suffix`."""
        with self.lock:
            return [call for call in self.calls if call.name.endswith(suffix)]

    def max_calls_in_window(self, window_seconds: float) -> int:
        """Most API calls that arrived within any span of `window_seconds`."""
        with self.lock:
            times = [call.at for call in self.calls]
        return most_in_window(times, window_seconds)

    def assert_clean(self, *, allow_unexpected: bool = False) -> None:
        """Raise AssertionError if a forbidden, unknown or crashing call was made."""
        with self.lock:
            problems = [f"FORBIDDEN {c.name or '?'} {c.method} {c.path}" for c in self.violations]
            if not allow_unexpected:
                problems += [f"UNEXPECTED {c.method} {c.path}" for c in self.unexpected]
            problems += [f"FAKE ERROR {error}" for error in self.errors]
        if problems:
            raise AssertionError("FakePlay saw bad calls:\n" + "\n".join(problems))

    def reset(self) -> None:
        """Forget all state, recorded calls and pending faults."""
        with self.lock:
            for store in (self.subscriptions, self.products, self.products_v2, self.orders):
                store.clear()
            for log in (self.voided, self.calls, self.violations, self.unexpected):
                log.clear()
            self.errors.clear()
            self.token_requests.clear()
            self._faults.clear()

    def _record_error(self, error: str) -> None:
        with self.lock:
            self.errors.append(error)

    def _answer(
        self, method: str, raw_path: str, raw: bytes, authorization: str | None, at: float
    ) -> tuple[int, JsonDict, float]:
        split = urlsplit(raw_path)
        if split.path == "/token" and method == "POST":
            status, payload = self._token(raw)
            return status, payload, 0.0
        query_multi = parse_qs(split.query, keep_blank_values=True)
        query = {key: values[-1] for key, values in query_multi.items()}
        bearer = None
        if authorization and authorization.startswith("Bearer "):
            bearer = authorization.removeprefix("Bearer ").strip() or None
        name, params = _resolve(method, split.path)
        body: JsonDict | None = None
        status, payload = 0, {}
        if raw:
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                body = decoded
            else:
                status, payload = 400, google_error(400, "Request body is not a JSON object.")
        forbidden = self._is_forbidden(name, split.path, body)
        with self.lock:
            if status == 0 or forbidden:
                status, payload = self._route(
                    _Request(method, split.path, params, query, query_multi, body), name, bearer
                )
            call = Call(method, name, split.path, query, body, at, status, bearer, params)
            self.calls.append(call)
            if forbidden:
                self.violations.append(call)
            elif status == 404 and (not name or name not in self._handlers):
                self.unexpected.append(call)
            payload = copy.deepcopy(payload)
        return status, payload, self.latency

    def _is_forbidden(self, name: str, path: str, body: JsonDict | None) -> bool:
        if name in FORBIDDEN_METHODS or _FORBIDDEN_VERB.search(path):
            return True
        return name == ORDERS_REVIEWREFUND and (body or {}).get("refundPreference") == "APPROVE"

    def _route(self, request: _Request, name: str, bearer: str | None) -> _Answer:
        if self._is_forbidden(name, request.path, request.body):
            return 403, google_error(
                403, f"FakePlay: {name or request.path} refunds, revokes or defers: forbidden."
            )
        if not request.path.startswith("/androidpublisher/"):
            return 404, google_error(404, f"FakePlay: no route for {request.path}.")
        handler = self._handlers.get(name)
        if handler is None:
            return 404, google_error(404, f"FakePlay: {name or request.path} is not served.")
        if bearer is None or not (self.accept_any_bearer or bearer in self.issued_tokens):
            return 401, google_error(401)
        package = request.params.get("packageName")
        if self.package_name is not None and package != self.package_name:
            return 404, google_error(404, f"No application was found for {package}.")
        if request.params.get("token") in self.foreign_tokens:
            return 400, google_error(400, "The purchase token does not match the package name.",
                                     "purchaseTokenDoesNotMatchPackageName")
        for fault in self._faults:
            if name.endswith(fault.suffix) and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault.status, google_error(fault.status, fault.message, fault.reason)
        return handler(request)

    def _token(self, raw: bytes) -> _Answer:
        form = {key: values[-1] for key, values in parse_qs(raw.decode()).items()}
        with self.lock:
            if form.get("grant_type") != JWT_BEARER_GRANT:
                return 400, {
                    "error": "unsupported_grant_type",
                    "error_description": f"grant_type {form.get('grant_type')!r}",
                }
            try:
                claims = _jwt_claims(form.get("assertion", ""))
            except ValueError as exc:
                return 400, {"error": "invalid_grant", "error_description": str(exc)}
            self.token_requests.append(claims)
            for fault in self._faults:
                if TOKEN_CALL_NAME.endswith(fault.suffix) and fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    error = "internal_failure" if fault.status >= 500 else "invalid_grant"
                    return fault.status, {
                        "error": error,
                        "error_description": fault.message or "injected",
                    }
            token = f"fake-token-{len(self.issued_tokens) + 1}"
            self.issued_tokens.append(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def _subscription(self, request: _Request) -> JsonDict | None:
        return self.subscriptions.get(request.params["token"])

    def _subscriptionsv2_get(self, request: _Request) -> _Answer:
        record = self._subscription(request)
        if record is None:
            return _token_not_found()
        return 200, {"kind": SUBSCRIPTION_KIND, **record}

    def _subscriptionsv2_cancel(self, request: _Request) -> _Answer:
        record = self._subscription(request)
        if record is None:
            return _token_not_found()
        context = (request.body or {}).get("cancellationContext") or {}
        kind = context.get("cancellationType") if isinstance(context, dict) else None
        if kind not in ("USER_REQUESTED_STOP_RENEWALS", "DEVELOPER_REQUESTED_STOP_PAYMENTS"):
            return 400, google_error(400, "cancellationContext.cancellationType is required.")
        line_items: list[JsonDict] = record.get("lineItems", [])
        if any("prepaidPlan" in item for item in line_items):
            return 400, google_error(400, "Prepaid subscriptions cannot be canceled.")
        state = record.get("subscriptionState")
        if state in (
            "SUBSCRIPTION_STATE_PENDING",
            "SUBSCRIPTION_STATE_EXPIRED",
            "SUBSCRIPTION_STATE_PENDING_PURCHASE_CANCELED",
        ):
            return 400, google_error(400, f"A subscription in {state} cannot be canceled.")
        record["subscriptionState"] = "SUBSCRIPTION_STATE_CANCELED"
        for item in line_items:
            item.setdefault("autoRenewingPlan", {})["autoRenewEnabled"] = False
        record.pop("pausedStateContext", None)
        if kind == "USER_REQUESTED_STOP_RENEWALS":
            record["canceledStateContext"] = {
                "userInitiatedCancellation": {"cancelTime": _now_rfc3339()}
            }
        else:
            record["canceledStateContext"] = {"developerInitiatedCancellation": {}}
        return 200, {}

    def _subscriptions_acknowledge(self, request: _Request) -> _Answer:
        record = self._subscription(request)
        if record is None:
            return _token_not_found()
        product_ids = {item.get("productId") for item in record.get("lineItems", [])}
        if request.params["subscriptionId"] not in product_ids:
            return 400, google_error(
                400, f"The subscription {request.params['subscriptionId']} does not match."
            )
        record["acknowledgementState"] = "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
        record.pop("outOfAppPurchaseContext", None)
        account = ((request.body or {}).get("externalAccountIds") or {}).get("obfuscatedAccountId")
        if account:
            identifiers = record.setdefault("externalAccountIdentifiers", {})
            identifiers.setdefault("obfuscatedExternalAccountId", account)
        return 200, {}

    def _product(self, request: _Request) -> JsonDict | None:
        record = self.products.get(request.params["token"])
        if record is None or record.get("productId", request.params["productId"]) != (
            request.params["productId"]
        ):
            return None
        return record

    def _products_get(self, request: _Request) -> _Answer:
        record = self._product(request)
        if record is None:
            return _token_not_found()
        return 200, {"kind": PRODUCT_KIND, **record}

    def _products_acknowledge(self, request: _Request) -> _Answer:
        record = self._product(request)
        if record is None:
            return _token_not_found()
        record["acknowledgementState"] = 1
        return 200, {}

    def _products_consume(self, request: _Request) -> _Answer:
        record = self._product(request)
        if record is None:
            return _token_not_found()
        record["consumptionState"] = 1
        record["acknowledgementState"] = 1
        return 200, {}

    def _productsv2_get(self, request: _Request) -> _Answer:
        token = request.params["token"]
        if token in self.products_v2:
            return 200, {"kind": PRODUCT_V2_KIND, **self.products_v2[token]}
        record = self.products.get(token)
        if record is None:
            return _token_not_found()
        return 200, product_purchase_v2_from_v1(record)

    def _voided_list(self, request: _Request) -> _Answer:
        query = request.query
        now = _now_millis()
        try:
            if query.get("token"):
                cursor = _decode_cursor(query["token"])
                start, end = int(cursor["start"]), int(cursor["end"])
                kind, partial, offset = int(cursor["type"]), bool(cursor["partial"]), int(
                    cursor["offset"]
                )
            else:
                start = int(query.get("startTime") or now - _VOIDED_WINDOW_MS)
                end = int(query.get("endTime") or now)
                kind = int(query.get("type") or 0)
                partial = query.get("includeQuantityBasedPartialRefund", "false") == "true"
                offset = 0
            size = min(int(query.get("maxResults") or _VOIDED_PAGE_MAX), _VOIDED_PAGE_MAX)
        except (ValueError, KeyError, TypeError):
            return 400, google_error(400, "Invalid voided purchases query or page token.")
        if kind not in (0, 1) or size < 1:
            return 400, google_error(400, "Invalid Value")
        if self.strict_voided_window and not query.get("token"):
            if start < now - _VOIDED_WINDOW_MS - 60_000:
                return 400, google_error(400, "startTime is more than 30 days in the past.")
            if end > now + 60_000:
                return 400, google_error(400, "endTime is in the future.")
        selected: list[JsonDict] = []
        for entry in sorted(self.voided, key=lambda e: int(e.get("voidedTimeMillis", 0))):
            product_type = entry.get("kind")
            if not isinstance(product_type, int):
                product_type = (
                    PRODUCT_TYPE_SUBSCRIPTION
                    if entry.get("purchaseToken") in self.subscriptions
                    else PRODUCT_TYPE_ONE_TIME
                )
            if kind == 0 and product_type != PRODUCT_TYPE_ONE_TIME:
                continue
            if "voidedQuantity" in entry and not partial:
                continue
            if not start <= int(entry.get("voidedTimeMillis", 0)) <= end:
                continue
            shown = {k: v for k, v in entry.items() if k != "kind"}
            for millis in ("voidedTimeMillis", "purchaseTimeMillis"):
                if millis in shown:
                    shown[millis] = str(shown[millis])
            selected.append({"kind": VOIDED_KIND, **shown})
        page = selected[offset : offset + size]
        answer: JsonDict = {
            "pageInfo": {
                "totalResults": len(selected),
                "resultPerPage": len(page),
                "startIndex": offset,
            }
        }
        if page:
            answer["voidedPurchases"] = page
        if offset + size < len(selected):
            next_state = {
                "start": start, "end": end, "type": kind, "partial": partial,
                "offset": offset + size,
            }
            answer["tokenPagination"] = {"nextPageToken": _encode_cursor(next_state)}
        return 200, answer

    def _orders_get(self, request: _Request) -> _Answer:
        order = self.orders.get(request.params["orderId"])
        if order is None:
            return 404, google_error(404, "The order was not found.")
        return 200, dict(order)

    def _orders_batchget(self, request: _Request) -> _Answer:
        order_ids = request.query_multi.get("orderIds", [])
        if not order_ids or any(order_id not in self.orders for order_id in order_ids):
            return 404, google_error(404, "An order was not found.")
        return 200, {"orders": [self.orders[order_id] for order_id in order_ids]}


def product_purchase_v2_from_v1(record: JsonDict) -> JsonDict:
    """Derive the `productsv2.getproductpurchasev2` shape from a `products.get` record."""
    states = {0: "PURCHASED", 1: "CANCELLED", 2: "PENDING"}
    purchase_state = states.get(record.get("purchaseState", 0), "PURCHASE_STATE_UNSPECIFIED")
    offer: JsonDict = {
        "quantity": record.get("quantity", 1),
        "refundableQuantity": record.get("refundableQuantity", record.get("quantity", 1)),
        "consumptionState": "CONSUMPTION_STATE_CONSUMED"
        if record.get("consumptionState") == 1
        else "CONSUMPTION_STATE_YET_TO_BE_CONSUMED",
    }
    answer: JsonDict = {
        "kind": PRODUCT_V2_KIND,
        "productLineItem": [{"productId": record.get("productId"), "productOfferDetails": offer}],
        "purchaseStateContext": {"purchaseState": purchase_state},
        "acknowledgementState": "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
        if record.get("acknowledgementState") == 1
        else "ACKNOWLEDGEMENT_STATE_PENDING",
    }
    copied = ("orderId", "regionCode", "obfuscatedExternalAccountId", "obfuscatedExternalProfileId")
    for key in copied:
        if key in record:
            answer[key] = record[key]
    if record.get("purchaseState", 0) == 0 and "purchaseTimeMillis" in record:
        millis = int(record["purchaseTimeMillis"])
        answer["purchaseCompletionTime"] = rfc3339(
            dt.datetime.fromtimestamp(millis / 1000, dt.UTC)
        )
    if record.get("purchaseType") == 0:
        answer["testPurchaseContext"] = {"fopType": "TEST"}
    return answer


_CANCEL_CONTEXTS = {
    "user": "userInitiatedCancellation",
    "system": "systemInitiatedCancellation",
    "developer": "developerInitiatedCancellation",
    "replacement": "replacementCancellation",
}


def subscription_purchase(
    product_id: str = "premium_monthly",
    *,
    state: str = "SUBSCRIPTION_STATE_ACTIVE",
    acknowledged: bool = False,
    expiry_time: dt.datetime | str | None = None,
    start_time: dt.datetime | str | None = None,
    auto_renew: bool | None = None,
    prepaid: bool = False,
    allow_extend_after_time: dt.datetime | str | None = None,
    base_plan_id: str = "monthly",
    offer_id: str | None = None,
    order_id: str | None = "GPA.3311-2402-4141-10001",
    account_id: str | None = None,
    linked_purchase_token: str | None = None,
    region_code: str = "US",
    test_purchase: bool = False,
    canceled: Literal["user", "system", "developer", "replacement"] | None = None,
    cancel_time: dt.datetime | str | None = None,
    auto_resume_time: dt.datetime | str | None = None,
    deferred_product_id: str | None = None,
    extra: JsonDict | None = None,
    now: dt.datetime | None = None,
) -> JsonDict:
    """Build a realistic SubscriptionPurchaseV2 JSON object as `subscriptionsv2.get` returns it."""
    now = now if now is not None else dt.datetime.now(dt.UTC)
    expiry = expiry_time if expiry_time is not None else now + dt.timedelta(days=30)
    expiry_dt = dt.datetime.fromisoformat(expiry) if isinstance(expiry, str) else expiry
    if auto_renew is None:
        auto_renew = state not in (
            "SUBSCRIPTION_STATE_CANCELED",
            "SUBSCRIPTION_STATE_EXPIRED",
            "SUBSCRIPTION_STATE_PENDING_PURCHASE_CANCELED",
        )
    item: JsonDict = {"productId": product_id, "expiryTime": rfc3339(expiry)}
    if prepaid:
        plan: JsonDict = {}
        if allow_extend_after_time is not None:
            plan["allowExtendAfterTime"] = rfc3339(allow_extend_after_time)
        elif state != "SUBSCRIPTION_STATE_EXPIRED":
            plan["allowExtendAfterTime"] = rfc3339(expiry_dt - dt.timedelta(days=3))
        item["prepaidPlan"] = plan
    else:
        item["autoRenewingPlan"] = {"autoRenewEnabled": auto_renew}
    offer: JsonDict = {"basePlanId": base_plan_id}
    if offer_id is not None:
        offer["offerId"] = offer_id
    item["offerDetails"] = offer
    if order_id is not None and state != "SUBSCRIPTION_STATE_PENDING":
        item["latestSuccessfulOrderId"] = order_id
    if deferred_product_id is not None:
        item["deferredItemReplacement"] = {"productId": deferred_product_id}
    purchase: JsonDict = {
        "kind": SUBSCRIPTION_KIND,
        "regionCode": region_code,
        "subscriptionState": state,
        "acknowledgementState": "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
        if acknowledged
        else "ACKNOWLEDGEMENT_STATE_PENDING",
        "lineItems": [item],
    }
    if state != "SUBSCRIPTION_STATE_PENDING":
        start = start_time if start_time is not None else expiry_dt - dt.timedelta(days=30)
        purchase["startTime"] = rfc3339(start)
    if linked_purchase_token is not None:
        purchase["linkedPurchaseToken"] = linked_purchase_token
    if account_id is not None:
        purchase["externalAccountIdentifiers"] = {"obfuscatedExternalAccountId": account_id}
    # Google always sends these contexts with these states, so a bare `state=` stays realistic.
    if canceled is None and state == "SUBSCRIPTION_STATE_CANCELED":
        canceled = "user"
    if canceled is not None:
        context: JsonDict = {}
        if canceled == "user":
            context["cancelTime"] = rfc3339(cancel_time if cancel_time is not None else now)
        purchase["canceledStateContext"] = {_CANCEL_CONTEXTS[canceled]: context}
    if auto_resume_time is None and state == "SUBSCRIPTION_STATE_PAUSED":
        auto_resume_time = expiry_dt + dt.timedelta(days=30)
    if auto_resume_time is not None:
        purchase["pausedStateContext"] = {"autoResumeTime": rfc3339(auto_resume_time)}
    if test_purchase:
        purchase["testPurchase"] = {}
    if extra:
        purchase.update(extra)
    return purchase


def product_purchase(
    product_id: str = "credits_100",
    *,
    order_id: str = "GPA.3311-2402-4141-20001",
    purchase_time: dt.datetime | None = None,
    purchase_state: int = 0,
    acknowledged: bool = False,
    consumed: bool = False,
    quantity: int = 1,
    account_id: str | None = None,
    region_code: str = "US",
    test_purchase: bool = False,
) -> JsonDict:
    """Build a ProductPurchase JSON object as `purchases.products.get` returns it."""
    when = purchase_time if purchase_time is not None else dt.datetime.now(dt.UTC)
    purchase: JsonDict = {
        "kind": PRODUCT_KIND,
        "productId": product_id,
        "orderId": order_id,
        "purchaseTimeMillis": str(int(when.timestamp() * 1000)),
        "purchaseState": purchase_state,
        "consumptionState": 1 if consumed else 0,
        "acknowledgementState": 1 if acknowledged else 0,
        "quantity": quantity,
        "regionCode": region_code,
    }
    if account_id is not None:
        purchase["obfuscatedExternalAccountId"] = account_id
    if test_purchase:
        purchase["purchaseType"] = 0
    return purchase


__all__ = [
    "FORBIDDEN_METHODS",
    "Call",
    "FakePlay",
    "google_error",
    "product_purchase",
    "product_purchase_v2_from_v1",
    "rfc3339",
    "subscription_purchase",
]
