"""POST /webhooks/google: what is refused, how, what is kept, and that refusals leave no state."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from reconcile.config import Settings
from reconcile.models import InboxEntry
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN
from tests.fakes.play import FakePlay, subscription_purchase
from tests.support.google import (
    AUDIENCE,
    PUSH_ACCOUNT,
    Pusher,
    b64,
    raw_envelope,
    subscription_notification,
)
from tests.support.oidc import OidcIssuer, push_envelope
from tests.support.server import FakeClock, RunningApp, serve_in_thread

TOKEN = "gpt-webhook-0001"


def purchased(clock: FakeClock, token: str = TOKEN) -> dict[str, Any]:
    return subscription_notification(token, 4, clock.now)


def inbox(app: RunningApp) -> list[InboxEntry]:
    with app.services.sessions() as session:
        return list(session.scalars(select(InboxEntry).order_by(InboxEntry.id)))


def assert_no_state(app: RunningApp, fake: FakePlay) -> None:
    app.drain()
    assert app.client.get("/v1/subscriptions").json()["items"] == []
    assert [entry.status for entry in inbox(app) if entry.status != "rejected"] == []
    assert fake.calls == []


@pytest.fixture
def running(
    make_google_settings: Callable[..., Settings], clock: FakeClock
) -> Iterator[Callable[..., RunningApp]]:
    """Start the app with Google settings overridden as the test needs."""
    started: list[Any] = []

    def start(**overrides: Any) -> RunningApp:
        services = build_services(make_google_settings(**overrides), clock=clock)
        context = serve_in_thread(services, ADMIN_TOKEN)
        started.append((context, services))
        return context.__enter__()

    yield start
    for context, services in reversed(started):
        context.__exit__(None, None, None)
        services.close()


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    """An issuer of this test's own, free to be broken, rotated and counted."""
    with OidcIssuer(kid="own-key-1") as own:
        yield own


def test_accepts_records_and_processes(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A valid push is answered 200 before any Play API call, then processed by the worker."""
    fake_play.subscriptions[TOKEN] = subscription_purchase(now=clock.now, account_id="acct-1")
    response = pusher.push(purchased(clock), "m-1")
    assert response.json() == {"recorded": True, "duplicate": False, "status": "pending"}
    assert fake_play.calls == []
    google_app.drain()
    [sub] = google_app.client.get("/v1/subscriptions").json()["items"]
    assert (sub["store_id"], sub["status"], sub["account_id"]) == (TOKEN, "active", "acct-1")


def test_unconfigured_package_is_404(app: RunningApp, oidc: OidcIssuer) -> None:
    """Without RECONCILE_GOOGLE_PACKAGE_NAME the Google webhook does not exist."""
    response = Pusher(app.client, oidc).post(push_envelope({"testNotification": {}}, "m-1"))
    assert response.status_code == 404


@pytest.mark.parametrize("missing", ["google_push_audience", "google_push_service_account"])
def test_unconfigured_identity_refuses_all(
    running: Callable[..., RunningApp], oidc: OidcIssuer, fake_play: FakePlay, missing: str
) -> None:
    """Without the expected audience or sender configured, every push is 401."""
    app = running(**{missing: None})
    response = Pusher(app.client, oidc).post(push_envelope({"testNotification": {}}, "m-1"))
    assert response.status_code == 401
    assert_no_state(app, fake_play)


TOKEN_FAULTS: dict[str, dict[str, Any]] = {
    "wrong audience": {"audience": "https://other.example/push"},
    "wrong email": {"email": "someone@test-project.iam.gserviceaccount.com"},
    "email not verified": {"email_verified": False},
    "expired": {"now": time.time() - 7200, "expires_in": 3600},
    "issued in the future": {"now": time.time() + 3600},
    "wrong issuer": {"issuer": "https://accounts.example.com"},
    "issuer over http": {"issuer": "http://accounts.google.com"},
    "unpublished key id": {"kid": "not-published"},
}


@pytest.mark.parametrize("fault", TOKEN_FAULTS, ids=list(TOKEN_FAULTS))
def test_token_faults_are_401(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock, fault: str
) -> None:
    """Each fault in the OIDC token is refused with 401 and leaves nothing behind."""
    bearer = pusher.token(**TOKEN_FAULTS[fault])
    response = pusher.post(push_envelope(purchased(clock), "m-1"), bearer=bearer)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert inbox(google_app) == []
    assert_no_state(google_app, fake_play)


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "Bearer a.b"],
)
def test_missing_or_malformed_bearer_is_401(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock,
    authorization: str,
) -> None:
    """No token, another scheme or a token that is not a JWT: 401."""
    envelope = push_envelope(purchased(clock), "m-1")
    if authorization:
        response = pusher.post(envelope, authorization=authorization)
    else:
        response = google_app.client.post("/webhooks/google", json=envelope)
    assert response.status_code == 401
    assert_no_state(google_app, fake_play)


def test_token_signed_by_another_key_is_401(
    google_app: RunningApp, fake_play: FakePlay, clock: FakeClock, oidc: OidcIssuer
) -> None:
    """A token with the published key id but someone else's signature is refused."""
    with OidcIssuer(kid=oidc.kid) as impostor:
        bearer = impostor.token(AUDIENCE, PUSH_ACCOUNT)
    response = Pusher(google_app.client, oidc).post(
        push_envelope(purchased(clock), "m-1"), bearer=bearer)
    assert response.status_code == 401
    assert_no_state(google_app, fake_play)


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_other_algorithms_are_401(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock, alg: str
) -> None:
    """An unsigned or HMAC token with the right claims is refused."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": PUSH_ACCOUNT,
              "email_verified": True, "iat": now, "exp": now + 600}
    forged = f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}.c2ln"
    response = pusher.post(push_envelope(purchased(clock), "m-1"), bearer=forged)
    assert response.status_code == 401
    assert_no_state(google_app, fake_play)


def test_plain_issuer_is_accepted(google_app: RunningApp, pusher: Pusher, clock: FakeClock) -> None:
    """`accounts.google.com` without the scheme is one of Google's two issuer spellings."""
    bearer = pusher.token(issuer="accounts.google.com")
    response = pusher.post(push_envelope(purchased(clock), "m-1"), bearer=bearer)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"message": "x"}', b'{"message": {"data": "e30="}}',
     b'{"message": {"messageId": 7}}', b'{"subscription": "projects/p/subscriptions/s"}'],
)
def test_malformed_envelope_is_400(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, body: bytes
) -> None:
    """An authenticated body that is no push envelope with a messageId: 400, nothing kept."""
    response = pusher.post(body)
    assert response.status_code == 400
    assert inbox(google_app) == []
    assert_no_state(google_app, fake_play)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("%%%not-base64%%%", "data is not base64-encoded JSON"),
        (b64(b"not json"), "data is not base64-encoded JSON"),
        (b64(b"[1, 2]"), "data is not a JSON object"),
        ("", "message has no data"),
        (b64(json.dumps({"packageName": "com.example.reconcile", "eventTimeMillis": "x",
                         "testNotification": {}}).encode()),
         "eventTimeMillis missing or not a number"),
        (b64(json.dumps({"packageName": "com.example.reconcile", "eventTimeMillis": "1",
                         "subscriptionNotification": {"notificationType": 4}}).encode()),
         "purchaseToken missing or too long"),
        (b64(json.dumps({"packageName": "com.example.other", "eventTimeMillis": "1",
                         "testNotification": {}}).encode()),
         "package 'com.example.other' is not ours"),
    ],
    ids=["bad base64", "not json", "not an object", "no data", "bad event time", "no token",
         "wrong package"],
)
def test_unusable_data_is_kept_rejected(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, data: str, reason: str
) -> None:
    """Authentic but unusable data: 200 so Pub/Sub stops, kept as rejected with the reason."""
    response = pusher.post(raw_envelope(data, "m-bad"))
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    [entry] = inbox(google_app)
    assert (entry.notification_id, entry.status, entry.error) == ("m-bad", "rejected", reason)
    assert_no_state(google_app, fake_play)


def test_duplicate_message_id_changes_nothing(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """A redelivered messageId is 200, kept once and read once."""
    fake_play.subscriptions[TOKEN] = subscription_purchase(now=clock.now, acknowledged=True)
    first = pusher.push(purchased(clock), "m-dup")
    second = pusher.push(purchased(clock), "m-dup")
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    google_app.drain()
    assert len(inbox(google_app)) == 1
    assert len(fake_play.calls_named("subscriptionsv2.get")) == 1


def test_event_time_as_number(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """eventTimeMillis may arrive as a JSON number as well as Google's string."""
    fake_play.subscriptions[TOKEN] = subscription_purchase(now=clock.now, acknowledged=True)
    notification = purchased(clock)
    notification["eventTimeMillis"] = int(notification["eventTimeMillis"])
    notification["subscriptionNotification"]["notificationType"] = "4"
    pusher.push(notification, "m-num")
    google_app.drain()
    [entry] = inbox(google_app)
    assert (entry.status, entry.kind, entry.store_time) == ("processed", "SUBSCRIPTION_PURCHASED",
                                                            clock.now)


def test_oversized_body_is_413(google_app: RunningApp, pusher: Pusher) -> None:
    """Bodies over 1 MiB are refused before parsing."""
    assert pusher.post(b"{" + b" " * (1024 * 1024 + 1) + b"}").status_code == 413


def test_certificates_are_cached(
    running: Callable[..., RunningApp], issuer: OidcIssuer, clock: FakeClock
) -> None:
    """Many pushes cost one certificate fetch, not one each."""
    app = running(google_oidc_certs_url=issuer.certs_url)
    pusher = Pusher(app.client, issuer)
    for number in range(5):
        pusher.push(purchased(clock, f"tok-{number}"))
    assert issuer.fetches == 1


def test_certificates_unreachable_is_503_then_recovers(
    running: Callable[..., RunningApp], issuer: OidcIssuer, fake_play: FakePlay,
    clock: FakeClock,
) -> None:
    """While the certificate endpoint fails the push gets 503 (Pub/Sub retries), then 200."""
    app = running(google_oidc_certs_url=issuer.certs_url)
    pusher = Pusher(app.client, issuer)
    issuer.fail_next(1, status=500)
    envelope = push_envelope(purchased(clock), "m-retry")
    assert pusher.post(envelope).status_code == 503
    assert inbox(app) == []
    assert pusher.post(envelope).status_code == 200
    assert [entry.status for entry in inbox(app)] == ["pending"]


def test_storage_down_is_503(
    google_app: RunningApp, pusher: Pusher, fake_play: FakePlay, clock: FakeClock
) -> None:
    """When the push cannot be recorded the answer is 503, so Pub/Sub redelivers."""
    with google_app.services.engine.begin() as connection:
        connection.execute(text("DROP TABLE inbox"))
    response = pusher.post(push_envelope(purchased(clock), "m-lost"))
    assert response.status_code == 503
