"""The narrow Google Play Developer API client the service uses, and nothing more.

It wraps google-api-python-client and exposes reads, cancel, acknowledge, consume and the list
of voided purchases. Nothing here refunds, revokes or defers: those calls simply do not exist
on this class, so no code path in the service can reach them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httplib2
from google.auth.credentials import Credentials
from google.auth.exceptions import GoogleAuthError
from google.oauth2 import service_account
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from reconcile.ratelimit import CallLimiter, RateLimiter

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/androidpublisher"
CANCELLATION_TYPES = frozenset(
    {"USER_REQUESTED_STOP_RENEWALS", "DEVELOPER_REQUESTED_STOP_PAYMENTS"}
)
# 410: expired more than 60 days ago or token invalid; 400/404: never valid for us.
PERMANENT_STATUSES = frozenset({400, 404, 410})
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

Json = dict[str, Any]


class PlayPermanentError(Exception):
    """Google answered that this call can never succeed (400, 404, 410)."""

    def __init__(self, call: str, status: int, reason: str) -> None:
        super().__init__(f"{call}: Google answered {status} {reason}")
        self.call = call
        self.status = status
        self.reason = reason


class PlayUnavailable(Exception):
    """The call did not succeed after retries (5xx, 429, timeouts, auth trouble): try later."""


class PlayClient:
    """androidpublisher v3, limited to the calls that never refund, revoke or defer."""

    def __init__(
        self,
        package_name: str,
        credentials: Credentials,
        *,
        api_endpoint: str | None = None,
        limiter: CallLimiter | None = None,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.package_name = package_name
        self.credentials = credentials
        self.api_endpoint = api_endpoint
        self.limiter = limiter or RateLimiter(1200)
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep
        # httplib2 connections are not thread-safe: one service object per thread.
        self._local = threading.local()
        self._built: list[Any] = []
        self._lock = threading.Lock()

    @classmethod
    def from_key_file(cls, package_name: str, key_file: Path, **options: Any) -> PlayClient:
        """A client authenticated by a service-account JSON key (its `token_uri` is honoured)."""
        credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            str(key_file), scopes=[SCOPE]
        )
        return cls(package_name, credentials, **options)

    def get_subscription(self, token: str) -> Json:
        """purchases.subscriptionsv2.get: the SubscriptionPurchaseV2 behind `token`."""
        return self._call("subscriptionsv2.get", lambda api: api.purchases().subscriptionsv2().get(
            packageName=self.package_name, token=token))

    def cancel(self, token: str, cancellation_type: str) -> None:
        """purchases.subscriptionsv2.cancel: stop renewals; access lasts until expiry."""
        if cancellation_type not in CANCELLATION_TYPES:
            raise ValueError(f"unknown cancellation type {cancellation_type!r}")
        body = {"cancellationContext": {"cancellationType": cancellation_type}}
        self._call("subscriptionsv2.cancel", lambda api: api.purchases().subscriptionsv2().cancel(
            packageName=self.package_name, token=token, body=body))

    def acknowledge_subscription(self, product_id: str, token: str) -> None:
        """purchases.subscriptions.acknowledge, so Google does not refund the purchase."""
        self._call("subscriptions.acknowledge",
                   lambda api: api.purchases().subscriptions().acknowledge(
                       packageName=self.package_name, subscriptionId=product_id, token=token,
                       body={}))

    def get_product(self, product_id: str, token: str) -> Json:
        """purchases.products.get: the ProductPurchase behind a one-time purchase token."""
        return self._call("products.get", lambda api: api.purchases().products().get(
            packageName=self.package_name, productId=product_id, token=token))

    def acknowledge_product(self, product_id: str, token: str) -> None:
        """purchases.products.acknowledge for a non-consumable one-time product."""
        self._call("products.acknowledge", lambda api: api.purchases().products().acknowledge(
            packageName=self.package_name, productId=product_id, token=token, body={}))

    def consume_product(self, product_id: str, token: str) -> None:
        """purchases.products.consume for a consumable (it acknowledges too)."""
        self._call("products.consume", lambda api: api.purchases().products().consume(
            packageName=self.package_name, productId=product_id, token=token))

    def list_voided(
        self, start_time: datetime, end_time: datetime, page_token: str | None = None
    ) -> Json:
        """purchases.voidedpurchases.list (subscriptions included), one page."""
        params: Json = {
            "packageName": self.package_name, "type": 1, "maxResults": 1000,
            # Partial (quantity) refunds of multi-quantity purchases, each with voidedQuantity.
            "includeQuantityBasedPartialRefund": True,
            "startTime": str(int(start_time.timestamp() * 1000)),
            "endTime": str(int(end_time.timestamp() * 1000)),
        }
        if page_token:
            params["token"] = page_token
        return self._call("voidedpurchases.list",
                          lambda api: api.purchases().voidedpurchases().list(**params))

    def close(self) -> None:
        with self._lock:
            built, self._built = self._built, []
        for service in built:
            service.close()

    def _service(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            transport = httplib2.Http(timeout=self.timeout_seconds)
            http = AuthorizedHttp(self.credentials, http=transport)
            options = {"api_endpoint": self.api_endpoint} if self.api_endpoint else None
            service = build("androidpublisher", "v3", http=http, static_discovery=True,
                            cache_discovery=False, client_options=options)
            self._local.service = service
            with self._lock:
                self._built.append(service)
        return service

    def _call(self, name: str, request: Callable[[Any], Any]) -> Json:
        problem = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
            self.limiter.acquire()
            try:
                # Retries are ours (num_retries=0) so each attempt passes the rate limiter.
                answer = request(self._service()).execute(num_retries=0)
            except HttpError as error:
                status = int(error.resp.status)
                reason = _reason(error)
                if status in PERMANENT_STATUSES:
                    raise PlayPermanentError(name, status, reason) from error
                if status not in TRANSIENT_STATUSES:
                    # 401/403: the service account lacks Play Console access. Loud, retried.
                    log.error("Play API %s answered %s %s", name, status, reason)
                    raise PlayUnavailable(f"{name}: Google answered {status} {reason}") from error
                problem = f"Google answered {status} {reason}"
            except (OSError, httplib2.HttpLib2Error, GoogleAuthError) as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                return answer if isinstance(answer, dict) else {}
        raise PlayUnavailable(f"{name}: {problem} after {self.retries + 1} attempts")


def _reason(error: HttpError) -> str:
    details = error.error_details
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("reason", ""))
    return str(error.reason or "")
