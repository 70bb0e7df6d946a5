"""The service's App Store Server API client, over real HTTP against the fake App Store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from appstoreserverlibrary.models.ConsumptionRequest import ConsumptionRequest
from appstoreserverlibrary.models.DeliveryStatus import DeliveryStatus
from appstoreserverlibrary.models.RefundPreference import RefundPreference

from reconcile.channels.apple_api import AppleApiError, AppStoreApi
from reconcile.config import Settings
from tests.fakes.appstore import FakeAppStore, renewal_payload, transaction_payload
from tests.support.apple_payloads import BUNDLE_ID


def api(make_settings: Callable[..., Settings], overrides: dict[str, Any]) -> AppStoreApi:
    client = AppStoreApi.from_settings(make_settings(**overrides))
    assert client is not None
    client._sleep = lambda _seconds: None
    return client


def test_base_url_override_reaches_the_fake(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore,
) -> None:
    """RECONCILE_APPLE_API_BASE_URL sends calls to the configured host (the private attribute
    the library keeps its base URL in still works)."""
    tx = transaction_payload(original_transaction_id="5001", transaction_id="5001",
                             bundle_id=BUNDLE_ID)
    fake_appstore.add_subscription(tx, renewal_payload(original_transaction_id="5001"))
    statuses = api(make_settings, apple_api_settings).subscription_statuses("sandbox", "5001")
    assert statuses.data is not None
    last = statuses.data[0].lastTransactions
    assert last is not None
    assert last[0].originalTransactionId == "5001"
    assert [c.path for c in fake_appstore.calls] == ["/inApps/v1/subscriptions/5001"]


def test_no_key_means_no_client(make_settings: Callable[..., Settings]) -> None:
    """Without an API key configured the service makes no Apple API calls at all."""
    assert AppStoreApi.from_settings(make_settings()) is None


def test_rate_limit_is_retried(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore,
) -> None:
    """A 429 is retried with backoff and the call then succeeds."""
    tx = transaction_payload(original_transaction_id="5002", transaction_id="5002",
                             bundle_id=BUNDLE_ID)
    fake_appstore.add_subscription(tx, renewal_payload(original_transaction_id="5002"))
    fake_appstore.fail_next("/inApps/v1/subscriptions", 429, times=2)
    api(make_settings, apple_api_settings).subscription_statuses("sandbox", "5002")
    assert len(fake_appstore.calls_to("/inApps/v1/subscriptions/5002")) == 3


def test_unknown_transaction_is_permanent(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore,
) -> None:
    """A 404 for an unknown id is not retried and is reported as permanent."""
    with pytest.raises(AppleApiError) as raised:
        api(make_settings, apple_api_settings).subscription_statuses("sandbox", "nope")
    assert raised.value.status == 404
    assert not raised.value.transient
    assert len(fake_appstore.calls) == 1


def test_consumption_answer_is_sent(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore,
) -> None:
    """A consumption answer reaches Apple with consent and the decline preference."""
    request = ConsumptionRequest(customerConsented=True, sampleContentProvided=False,
                                 deliveryStatus=DeliveryStatus.DELIVERED,
                                 refundPreference=RefundPreference.DECLINE)
    api(make_settings, apple_api_settings).send_consumption("sandbox", "5003", request)
    [(transaction_id, body)] = fake_appstore.consumption_requests
    assert transaction_id == "5003"
    assert body["customerConsented"] is True
    assert body["refundPreference"] == "DECLINE"


def test_calls_share_one_connection_pool(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore,
) -> None:
    """The library still sends through `_execute_request`, which our client overrides to use
    kept-alive connections (one pool per origin, built once, towards the overridden base URL)
    instead of a new session per call. Reuse itself: tests/test_keepalive.py."""
    from appstoreserverlibrary.api_client import AppStoreServerAPIClient

    from reconcile.channels.apple_api import PooledClient

    assert "_execute_request" in vars(AppStoreServerAPIClient)
    for original in ("5004", "5005"):
        tx = transaction_payload(original_transaction_id=original, transaction_id=original,
                                 bundle_id=BUNDLE_ID)
        fake_appstore.add_subscription(tx, renewal_payload(original_transaction_id=original))
    client = api(make_settings, apple_api_settings)
    client.subscription_statuses("sandbox", "5004")
    sandbox = client._clients["sandbox"]
    assert isinstance(sandbox, PooledClient)
    [(origin_url, pool)] = sandbox._origins.items()
    assert origin_url == fake_appstore.url.rstrip("/")
    client.subscription_statuses("sandbox", "5005")
    assert sandbox._origins == {origin_url: pool}
    assert len(fake_appstore.calls_to("/inApps/v1/subscriptions/")) == 2


def test_one_bearer_token_serves_calls_until_it_is_renewed(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore,
) -> None:
    """The bearer token is signed once and reused (Apple allows it until it expires), and a new
    one is signed TOKEN_REUSE_SECONDS later, while the old one still has time to live. The fake
    checks every token's signature and expiry. `_generate_token` is the library's hook."""
    from appstoreserverlibrary.api_client import BaseAppStoreServerAPIClient

    from reconcile.channels.apple_api import TOKEN_REUSE_SECONDS, PooledClient

    assert "_generate_token" in vars(BaseAppStoreServerAPIClient)
    tx = transaction_payload(original_transaction_id="5006", transaction_id="5006",
                             bundle_id=BUNDLE_ID)
    fake_appstore.add_subscription(tx, renewal_payload(original_transaction_id="5006"))
    client = api(make_settings, apple_api_settings)
    sandbox = client._clients["sandbox"]
    assert isinstance(sandbox, PooledClient)
    now = [1000.0]
    sandbox._clock = lambda: now[0]
    for step in (0.0, 1.0, TOKEN_REUSE_SECONDS - 2, 1.5, 0.0):
        now[0] += step
        client.subscription_statuses("sandbox", "5006")
    tokens = [c.authorization for c in fake_appstore.calls]
    assert len(tokens) == 5
    assert all(tokens)
    assert tokens[:3] == [tokens[0]] * 3
    assert tokens[3] != tokens[0]
    assert tokens[4] == tokens[3]
    assert not fake_appstore.unexpected
    assert not fake_appstore.violations


def test_a_call_holds_its_place_in_flight_over_each_http_exchange_only(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore,
) -> None:
    """Reconciliation bounds the calls in flight with the `slot` it hands over: each HTTP
    attempt is made inside it, while the rate limit's wait, a retry's back-off and the
    answer's decoding are not (they would hold a place without a call out)."""
    tx = transaction_payload(original_transaction_id="5007", transaction_id="5007",
                             bundle_id=BUNDLE_ID)
    fake_appstore.add_subscription(tx, renewal_payload(original_transaction_id="5007"))
    fake_appstore.fail_next("/inApps/v1/subscriptions", 429, times=1)
    seen: list[str] = []

    class Slot:
        def __enter__(self) -> None:
            seen.append("enter")

        def __exit__(self, *_exc: object) -> None:
            seen.append(f"exit after {len(fake_appstore.calls)} calls")

    class Limiter:
        def acquire(self) -> float:
            seen.append("rate limit")
            return 0.0

    client = AppStoreApi.from_settings(make_settings(**apple_api_settings), limiter=Limiter())
    assert client is not None
    client._sleep = lambda _seconds: seen.append("back-off")
    statuses = client.subscription_statuses("sandbox", "5007", slot=Slot())
    assert statuses.data is not None
    assert seen == ["rate limit", "enter", "exit after 1 calls", "back-off",
                    "rate limit", "enter", "exit after 2 calls"]
    seen.clear()
    client.subscription_statuses("sandbox", "5007")  # no slot handed over: none is held
    assert seen == ["rate limit"]


def test_an_unusable_proxy_setting_is_a_clear_permanent_error(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any],
    fake_appstore: FakeAppStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only http:// proxies are supported: another scheme names the variable, is not retried
    and sends nothing."""
    monkeypatch.setenv("http_proxy", "socks5://proxy.internal:1080")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(AppleApiError, match="http_proxy must be an http:// proxy URL") as raised:
        api(make_settings, apple_api_settings).subscription_statuses("sandbox", "5007")
    assert not raised.value.transient
    assert fake_appstore.calls == []
