"""The App Store Server API, narrowed to the calls this service makes, rate limited, retried.

Apple has no API that cancels, refunds or revokes an ordinary subscription; this class exposes
reads and the consumption answer only (and nothing that extends renewal dates: that gives time
away). Every outbound Apple call of the service lives here.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from appstoreserverlibrary.api_client import (
    APIError,
    APIException,
    AppStoreServerAPIClient,
    GetTransactionHistoryVersion,
)
from appstoreserverlibrary.models.ConsumptionRequest import ConsumptionRequest
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.models.HistoryResponse import HistoryResponse
from appstoreserverlibrary.models.NotificationHistoryRequest import NotificationHistoryRequest
from appstoreserverlibrary.models.NotificationHistoryResponse import NotificationHistoryResponse
from appstoreserverlibrary.models.StatusResponse import StatusResponse
from appstoreserverlibrary.models.TransactionHistoryRequest import (
    Order,
    TransactionHistoryRequest,
)
from appstoreserverlibrary.models.TransactionInfoResponse import TransactionInfoResponse

from reconcile.channels.keepalive import Answer, Origin
from reconcile.config import Settings
from reconcile.ratelimit import CallLimiter, TokenBucket

log = logging.getLogger(__name__)
T = TypeVar("T")

# The place in flight of the calls this thread makes (see `AppStoreApi.subscription_statuses`).
_slot = threading.local()
_NO_SLOT: AbstractContextManager[object] = nullcontext()

# The library signs tokens that expire 5 minutes after signing; Apple lets one token serve
# every request until it expires. Reused for 4 minutes, each still has a minute to live.
TOKEN_REUSE_SECONDS = 240.0

# What the connection itself may raise (a timeout, a reset, a malformed answer).
TRANSPORT_ERRORS = (http.client.HTTPException, OSError)

RETRYABLE_ERRORS = {
    APIError.RATE_LIMIT_EXCEEDED,
    APIError.GENERAL_INTERNAL_RETRYABLE,
    APIError.ACCOUNT_NOT_FOUND_RETRYABLE,
    APIError.APP_NOT_FOUND_RETRYABLE,
    APIError.ORIGINAL_TRANSACTION_ID_NOT_FOUND_RETRYABLE,
}


class AppleApiError(Exception):
    """An App Store Server API call failed; `transient` says whether trying later may work."""

    def __init__(self, message: str, *, status: int | None, transient: bool) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


def is_transient(error: Exception) -> bool:
    if isinstance(error, APIException):
        return error.http_status_code >= 500 or error.api_error in RETRYABLE_ERRORS
    return isinstance(error, TRANSPORT_ERRORS)


class _Response:
    """The three things the library reads from a response (`requests.Response`'s names)."""

    def __init__(self, answer: Answer) -> None:
        self.status_code = answer.status
        self.headers = answer.headers
        self._body = answer.body

    def json(self) -> Any:
        return json.loads(self._body)


class PooledClient(AppStoreServerAPIClient):
    """The library's client over kept-alive connections instead of `requests.request`.

    `requests.request` builds a session per call: a new TCP and TLS connection to Apple, and a
    scan of the environment for proxies and .netrc; all in, about 0.7 ms of CPU a call, which
    is what limits a reconciliation's thread pool. `reconcile.channels.keepalive` keeps
    connections alive with the standard library's `http.client` (urllib3 spent about as much
    again on its own bookkeeping: `bench.http_client`). Retries stay ours, so each attempt
    passes the rate limiter. `_execute_request` is private in app-store-server-library 3.x;
    tests/test_apple_api.py pins that it is still the hook.

    The bearer token is reused for TOKEN_REUSE_SECONDS instead of signed per request (the
    library parses the PEM key and signs ES256 on every call: about a third of a status
    read's CPU here). `_generate_token` is private too, and pinned the same way.

    A caller's place in flight (`slot`) is held over the HTTP exchange alone: building the
    request, decoding JSON and structuring the library's models happen outside it.
    """

    def __init__(
        self, *args: Any, timeout_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_seconds = timeout_seconds
        self._origins: dict[str, Origin] = {}
        self._origins_lock = threading.Lock()
        self._clock = clock
        self._token: tuple[str, float] | None = None  # the token, and when to sign anew
        self._token_lock = threading.Lock()

    def _generate_token(self) -> str:
        with self._token_lock:
            now = self._clock()
            if self._token is None or now >= self._token[1]:
                self._token = (super()._generate_token(), now + TOKEN_REUSE_SECONDS)
            return self._token[0]

    def close(self) -> None:
        with self._origins_lock:
            origins, self._origins = list(self._origins.values()), {}
        for origin in origins:
            origin.close()

    def _origin(self, url: urllib.parse.SplitResult) -> Origin:
        # By the URL's own origin: the base URL may have been pointed elsewhere after __init__.
        key = f"{url.scheme}://{url.netloc}"
        with self._origins_lock:
            origin = self._origins.get(key)
            if origin is None:
                try:
                    origin = Origin(key, connect_timeout=min(10.0, self.timeout_seconds),
                                    read_timeout=self.timeout_seconds)
                except ValueError as error:  # a URL or proxy setting it cannot use: say which
                    raise AppleApiError(str(error), status=None, transient=False) from error
                self._origins[key] = origin
            return origin

    def _execute_request(
        self, method: str, url: str, params: Any, headers: Any, json_body: Any, data: Any
    ) -> Any:
        parts = urllib.parse.urlsplit(url)  # the library's base URL and path, no query
        path = parts.path or "/"
        if params:
            path = f"{path}?{urllib.parse.urlencode(params, doseq=True)}"
        sent = dict(headers)
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            sent["Content-Type"] = "application/json"
        origin = self._origin(parts)
        with getattr(_slot, "held", _NO_SLOT):
            answer = origin.request(method, path, sent, data)
        return _Response(answer)


class AppStoreApi:
    """One library client per environment; reads statuses and history, answers consumption."""

    def __init__(
        self,
        clients: dict[str, AppStoreServerAPIClient],
        *,
        calls_per_second: float = 50.0,
        attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        limiter: CallLimiter | None = None,
    ) -> None:
        self._clients = clients
        # `limiter` (the deployment's shared budget) replaces this process's own bucket.
        self._bucket: CallLimiter = limiter or TokenBucket(calls_per_second, sleep=sleep)
        self._attempts = attempts
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls, settings: Settings, *, sleep: Callable[[float], None] = time.sleep,
        limiter: CallLimiter | None = None,
    ) -> AppStoreApi | None:
        """The client the settings describe, or None when no API key is configured."""
        key_path = settings.apple_private_key_path
        if not (settings.apple_key_id and settings.apple_issuer_id and key_path
                and settings.apple_bundle_id):
            return None
        signing_key = Path(key_path).read_bytes()
        clients: dict[str, AppStoreServerAPIClient] = {}
        for name in settings.apple_environments:
            env = Environment.PRODUCTION if name == "production" else Environment.SANDBOX
            client = PooledClient(signing_key, settings.apple_key_id,
                                  settings.apple_issuer_id, settings.apple_bundle_id, env,
                                  timeout_seconds=settings.apple_api_timeout_seconds)
            if settings.apple_api_base_url:
                # Private in app-store-server-library 3.x; tests/test_apple_api.py pins it.
                client._base_url = settings.apple_api_base_url.rstrip("/")
            clients[name] = client
        return cls(clients, calls_per_second=settings.apple_calls_per_second,
                   attempts=settings.apple_api_attempts, sleep=sleep, limiter=limiter)

    def close(self) -> None:
        """Close the kept-alive connections (a later call opens new ones)."""
        for client in self._clients.values():
            if isinstance(client, PooledClient):
                client.close()

    @property
    def environments(self) -> list[str]:
        return list(self._clients)

    def subscription_statuses(
        self, environment: str, transaction_id: str,
        slot: AbstractContextManager[object] = _NO_SLOT,
    ) -> StatusResponse:
        """Get All Subscription Statuses; each HTTP exchange is made inside `slot` (a bound on
        the calls in flight), the rate limit's wait, retries' back-off and decoding outside."""
        statuses: StatusResponse = self._call(
            environment, "get_all_subscription_statuses", transaction_id, slot=slot
        )
        return statuses

    def transaction_info(self, environment: str, transaction_id: str) -> str | None:
        """The signed transaction (JWS, still to verify) Apple holds for `transaction_id`."""
        answer: TransactionInfoResponse = self._call(
            environment, "get_transaction_info", transaction_id
        )
        return answer.signedTransactionInfo

    def transaction_history(self, environment: str, transaction_id: str) -> list[str]:
        """Every signed transaction of the customer behind `transaction_id`, all pages."""
        signed: list[str] = []
        revision: str | None = None
        request = TransactionHistoryRequest(sort=Order.ASCENDING, revoked=None)
        while True:
            page: HistoryResponse = self._call(
                environment, "get_transaction_history", transaction_id, revision, request,
                GetTransactionHistoryVersion.V2,
            )
            signed.extend(page.signedTransactions or [])
            if not page.hasMore or not page.revision or page.revision == revision:
                return signed
            revision = page.revision

    def notification_history(
        self, environment: str, request: NotificationHistoryRequest, page: str | None
    ) -> NotificationHistoryResponse:
        history: NotificationHistoryResponse = self._call(
            environment, "get_notification_history", page, request
        )
        return history

    def send_consumption(
        self, environment: str, transaction_id: str, request: ConsumptionRequest
    ) -> None:
        self._call(environment, "send_consumption_information", transaction_id, request)

    def _call(
        self, environment: str, method: str, *args: Any,
        slot: AbstractContextManager[object] = _NO_SLOT,
    ) -> Any:
        client = self._clients.get(environment)
        if client is None:
            raise AppleApiError(f"no App Store API client for {environment}", status=None,
                                transient=False)
        for attempt in range(1, self._attempts + 1):
            self._bucket.acquire()
            _slot.held = slot
            try:
                return getattr(client, method)(*args)
            except (APIException, *TRANSPORT_ERRORS) as error:
                status = error.http_status_code if isinstance(error, APIException) else None
                transient = is_transient(error)
                if not transient or attempt == self._attempts:
                    raise AppleApiError(f"{method} failed: {_describe(error)}", status=status,
                                        transient=transient) from error
                log.warning("App Store API %s: %s; retrying", method, _describe(error))
                self._sleep(min(30.0, 0.5 * 2**attempt))
            finally:
                _slot.held = _NO_SLOT
        raise AssertionError("unreachable")


def _describe(error: Exception) -> str:
    if isinstance(error, APIException):
        return f"HTTP {error.http_status_code} {error.api_error or error.raw_api_error or ''}"
    return type(error).__name__
