"""The narrow Play client over the real google-api-python-client, and its rate limiter."""

from __future__ import annotations

import datetime as dt
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconcile.channels.google_play import PlayClient, PlayPermanentError, PlayUnavailable
from reconcile.ratelimit import RateLimiter
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.google import PACKAGE, write_service_account
from tests.support.windows import most_in_window

SAFE_METHODS = {
    "get_subscription", "cancel", "acknowledge_subscription", "get_product",
    "acknowledge_product", "consume_product", "list_voided", "close", "from_key_file",
}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def play(
    fake_play: FakePlay, service_account_key: str, tmp_path: Path, sleeps: list[float]
) -> Iterator[PlayClient]:
    """A PlayClient authenticated by a key file whose token_uri is the fake's."""
    key = write_service_account(tmp_path / "sa.json", service_account_key, fake_play.token_uri)
    client = PlayClient.from_key_file(PACKAGE, key, api_endpoint=fake_play.url, retries=2,
                                      sleep=sleeps.append, timeout_seconds=2)
    yield client
    client.close()


def test_only_safe_calls_exist() -> None:
    """The client has no method that could refund, revoke or defer anything."""
    public = {name for name, _ in inspect.getmembers(PlayClient) if not name.startswith("_")}
    assert public == SAFE_METHODS
    assert not [n for n in public if any(w in n for w in ("refund", "revoke", "defer"))]


def test_reads_with_the_key_files_token_uri(fake_play: FakePlay, play: PlayClient) -> None:
    """Reads go to the configured endpoint with a token from the key file's token_uri."""
    fake_play.subscriptions["t"] = subscription_purchase()
    assert play.get_subscription("t")["subscriptionState"] == "SUBSCRIPTION_STATE_ACTIVE"
    assert len(fake_play.token_requests) == 1
    assert fake_play.calls[0].bearer == "fake-token-1"


def test_transient_errors_retry_with_backoff(
    fake_play: FakePlay, play: PlayClient, sleeps: list[float]
) -> None:
    """503 and 429 are retried with growing pauses; success returns the answer."""
    fake_play.subscriptions["t"] = subscription_purchase()
    fake_play.fail_next("subscriptionsv2.get", 503)
    fake_play.fail_next("subscriptionsv2.get", 429)
    play.get_subscription("t")
    assert [c.status for c in fake_play.calls] == [503, 429, 200]
    assert len(sleeps) == 2
    assert sleeps[1] > sleeps[0]


def test_retries_run_out(fake_play: FakePlay, play: PlayClient) -> None:
    """After the configured retries a persisting 5xx is PlayUnavailable (try again later)."""
    fake_play.subscriptions["t"] = subscription_purchase()
    fake_play.fail_next("subscriptionsv2.get", 502, times=3)
    with pytest.raises(PlayUnavailable, match="502"):
        play.get_subscription("t")
    assert len(fake_play.calls) == 3


@pytest.mark.parametrize("status", [400, 404, 410])
def test_permanent_errors_are_not_retried(
    fake_play: FakePlay, play: PlayClient, status: int
) -> None:
    """400, 404 and 410 are final: raised at once with Google's status and reason."""
    fake_play.subscriptions["t"] = subscription_purchase()
    fake_play.fail_next("subscriptionsv2.get", status)
    with pytest.raises(PlayPermanentError) as raised:
        play.get_subscription("t")
    assert raised.value.status == status
    assert len(fake_play.calls) == 1


def test_permission_trouble_is_unavailable_not_permanent(
    fake_play: FakePlay, play: PlayClient
) -> None:
    """403 (service account lacks Play Console access) is loud and retried later, not dropped."""
    fake_play.subscriptions["t"] = subscription_purchase()
    fake_play.fail_next("subscriptionsv2.get", 403)
    with pytest.raises(PlayUnavailable, match="403"):
        play.get_subscription("t")
    assert len(fake_play.calls) == 1


def test_timeouts_are_transient(fake_play: FakePlay, service_account_key: str,
                                tmp_path: Path) -> None:
    """A Play API slower than the timeout is retried, then reported unavailable."""
    key = write_service_account(tmp_path / "sa.json", service_account_key, fake_play.token_uri)
    client = PlayClient.from_key_file(PACKAGE, key, api_endpoint=fake_play.url, retries=1,
                                      sleep=lambda _: None, timeout_seconds=0.2)
    fake_play.subscriptions["t"] = subscription_purchase()
    fake_play.latency = 0.5
    with pytest.raises(PlayUnavailable, match="attempts"):
        client.get_subscription("t")
    client.close()


def test_cancel_acknowledge_consume_and_voided(fake_play: FakePlay, play: PlayClient) -> None:
    """The write calls reach Google's paths; an unknown cancellation type never leaves."""
    fake_play.subscriptions["t"] = subscription_purchase("premium_monthly")
    play.acknowledge_subscription("premium_monthly", "t")
    play.cancel("t", "USER_REQUESTED_STOP_RENEWALS")
    with pytest.raises(ValueError, match="cancellation type"):
        play.cancel("t", "REFUND")
    record = fake_play.subscriptions["t"]
    assert record["subscriptionState"] == "SUBSCRIPTION_STATE_CANCELED"
    assert record["acknowledgementState"] == "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
    now = dt.datetime.now(dt.UTC)
    fake_play.voided.append({"purchaseToken": "t", "orderId": "GPA.1", "kind": 1,
                             "voidedTimeMillis": int(now.timestamp() * 1000) - 1000})
    page = play.list_voided(now - dt.timedelta(days=1), now)
    assert [v["purchaseToken"] for v in page["voidedPurchases"]] == ["t"]
    assert [c.name.removeprefix("androidpublisher.purchases.") for c in fake_play.calls] == [
        "subscriptions.acknowledge", "subscriptionsv2.cancel", "voidedpurchases.list"]


def test_threads_share_the_client(fake_play: FakePlay, play: PlayClient) -> None:
    """Many threads read at once through their own transports without errors."""
    for n in range(8):
        fake_play.subscriptions[f"t{n}"] = subscription_purchase()
    failures: list[BaseException] = []

    def read(n: int) -> None:
        try:
            for _ in range(5):
                play.get_subscription(f"t{n}")
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(fake_play.calls_named("subscriptionsv2.get")) == 40


@pytest.mark.parametrize("per_minute", [1, 7, 120, 3000])
def test_rate_never_exceeded_in_any_window(per_minute: int) -> None:
    """However many callers queue at once, no 60-second window holds more than the quota."""
    limiter = RateLimiter(per_minute, clock=lambda: 0.0, sleep=lambda _: None)
    slots = [limiter.acquire() for _ in range(per_minute * 3 + 5)]
    assert most_in_window(slots, 60.0) <= per_minute
    # ... and the quota is used, not wasted.
    assert (len(slots) - 1) / slots[-1] * 60 >= 0.8 * per_minute


def test_rate_limiter_is_thread_safe() -> None:
    """Concurrent callers get distinct slots that respect the quota."""
    limiter = RateLimiter(60, clock=lambda: 0.0, sleep=lambda _: None)
    slots: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(25):
            wait = limiter.acquire()
            with lock:
                slots.append(wait)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    waited = [slot for slot in slots if slot > 0]
    assert len(slots) - len(waited) == limiter.burst
    assert len(set(waited)) == len(waited)
    assert most_in_window(slots, 60.0) <= 60
