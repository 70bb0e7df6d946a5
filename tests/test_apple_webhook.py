"""POST /webhooks/apple: what is refused, how, and that refusals leave nothing behind."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from reconcile.app import create_app
from reconcile.config import APPLE_ROOT_CA_G3, Settings
from reconcile.services import build_services
from tests.conftest import ADMIN_TOKEN
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.server import FakeClock, RunningApp, free_port, serve_in_thread

NOW_MS = int(time.time() * 1000)


def renewal(uuid: str = "11111111-0000-4000-8000-000000000001", **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "notificationType": "DID_RENEW",
        "notificationUUID": uuid,
        "signedDate": NOW_MS,
        "data": {
            "status": 1,
            "transaction": {
                "originalTransactionId": "9001", "transactionId": "9002",
                "productId": "com.example.phone.monthly", "purchaseDate": NOW_MS,
                "expiresDate": NOW_MS + 30 * 86400_000, "type": "Auto-Renewable Subscription",
            },
            "renewal": {"originalTransactionId": "9001", "autoRenewStatus": 1,
                        "autoRenewProductId": "com.example.phone.monthly"},
        },
    }
    body["data"].update(data)
    return body


def assert_nothing_recorded(app: RunningApp) -> None:
    app.drain()
    assert app.client.get("/v1/subscriptions").json()["items"] == []
    assert "reconcile_notifications{" not in app.client.get("/metrics").text
    assert app.client.get("/healthz").status_code == 200


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_accepts_and_records(app: RunningApp, apple_ca: AppleTestCA) -> None:
    """A valid notification is answered 200 and becomes an active subscription."""
    response = app.client.post("/webhooks/apple",
                               json={"signedPayload": sign_notification(apple_ca, renewal())})
    assert response.status_code == 200
    app.drain()
    [sub] = app.client.get("/v1/subscriptions").json()["items"]
    assert sub["store_id"] == "9001"
    assert sub["status"] == "active"


def test_duplicate_uuid_changes_nothing(app: RunningApp, apple_ca: AppleTestCA) -> None:
    """A repeated notificationUUID is 200 and is neither recorded nor applied twice."""
    payload = {"signedPayload": sign_notification(apple_ca, renewal())}
    assert app.client.post("/webhooks/apple", json=payload).json() == {
        "recorded": True, "duplicate": False}
    assert app.client.post("/webhooks/apple", json=payload).json() == {
        "recorded": True, "duplicate": True}
    app.drain()
    [sub] = app.client.get("/v1/subscriptions").json()["items"]
    events = app.client.get(f"/v1/subscriptions/{sub['id']}/events").json()["items"]
    assert len(events) == 1


@pytest.mark.parametrize(
    ("body", "content"),
    [
        (b"", "empty body"),
        (b"not json", "not JSON"),
        (b"[]", "a list"),
        (b'{"signedPayload": 5}', "payload not a string"),
        (b'{"signedPayload": ""}', "empty payload"),
        (b'{"other": "x"}', "missing signedPayload"),
    ],
)
def test_malformed_body_is_400(app: RunningApp, body: bytes, content: str) -> None:
    """A body that is not {"signedPayload": "<JWS>"} is 400 and records nothing."""
    response = app.client.post("/webhooks/apple", content=body,
                               headers={"content-type": "application/json"})
    assert response.status_code == 400, content
    assert_nothing_recorded(app)


@pytest.mark.parametrize("path", ["/webhooks/apple", "/webhooks/google"])
def test_webhooks_take_only_post(app: RunningApp, path: str) -> None:
    """The webhook lane answers other methods 405 with Allow, in FastAPI's error shape, and
    leaves every other path to the application."""
    response = app.client.get(path)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"detail": "Method Not Allowed"}
    assert app.client.get("/webhooks/apple/").status_code == 404
    assert app.client.get("/healthz").status_code == 200
    assert_nothing_recorded(app)


def test_webhook_lane_under_a_root_path(app: RunningApp) -> None:
    """Mounted below a path prefix (`root_path`), the lane still finds the webhooks."""

    async def statuses() -> list[int]:
        transport = httpx.ASGITransport(app=create_app(app.services, run_worker=False),
                                        root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get("/api/webhooks/apple")).status_code,
                    (await client.post("/api/webhooks/apple", content=b"[]")).status_code,
                    (await client.get("/api/healthz")).status_code]

    assert asyncio.run(statuses()) == [405, 400, 200]
    assert_nothing_recorded(app)


def test_webhooks_are_in_the_openapi_document(app: RunningApp) -> None:
    """The lane answers them before FastAPI's routing; the API's document still shows them."""
    paths = app.client.get("/openapi.json").json()["paths"]
    assert {"/webhooks/apple", "/webhooks/google", "/v1/subscriptions"} <= set(paths)
    apple = paths["/webhooks/apple"]["post"]
    assert set(apple["responses"]) == {"200", "400", "401", "404", "413", "503"}
    assert apple["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "signedPayload"]


def test_oversized_body_is_413(app: RunningApp) -> None:
    """A body over 1 MiB is refused with 413 before it is parsed."""
    response = app.client.post("/webhooks/apple",
                               content=b'{"signedPayload": "' + b"a" * (1024 * 1024) + b'"}')
    assert response.status_code == 413
    assert_nothing_recorded(app)


def tampered(signed: str) -> str:
    header, payload, signature = signed.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["data"]["status"] = 5
    return ".".join([header, b64url(claims), signature])


def other_ca(_ca: AppleTestCA, body: dict[str, Any]) -> str:
    return sign_notification(AppleTestCA.create("Impostor"), body)


def alg_none(ca: AppleTestCA, body: dict[str, Any]) -> str:
    return f"{b64url({'alg': 'none', 'x5c': ca.x5c})}.{b64url(body)}."


def hs256(ca: AppleTestCA, body: dict[str, Any]) -> str:
    return jwt.encode(body, "secret-key-material-long-enough-32b", algorithm="HS256",
                      headers={"x5c": ca.x5c})


def empty_x5c(ca: AppleTestCA, body: dict[str, Any]) -> str:
    return jwt.encode(body, ca.leaf_key, algorithm="ES256", headers={"x5c": []})


def short_chain(ca: AppleTestCA, body: dict[str, Any]) -> str:
    return jwt.encode(body, ca.leaf_key, algorithm="ES256", headers={"x5c": ca.x5c[:2]})


Forge = Callable[[AppleTestCA, dict[str, Any]], str]


@pytest.mark.parametrize(
    ("forge", "body"),
    [
        (lambda ca, b: tampered(sign_notification(ca, b)), renewal()),
        (other_ca, renewal()),
        (alg_none, renewal()),
        (hs256, renewal()),
        (empty_x5c, renewal()),
        (short_chain, renewal()),
        (sign_notification, renewal(bundleId="com.someone.else")),
        (sign_notification, renewal(environment="Production", appAppleId=999)),
        (sign_notification, renewal(environment="Xcode")),
        (sign_notification, renewal(environment="LocalTesting")),
    ],
    ids=["tampered-signature", "other-ca", "alg-none", "hs256", "empty-x5c", "short-chain",
         "wrong-bundle", "wrong-app-id-production", "xcode-environment",
         "local-testing-environment"],
)
def test_forgeries_are_401(
    app: RunningApp, apple_ca: AppleTestCA, forge: Forge, body: dict[str, Any]
) -> None:
    """Every forged or foreign payload is 401, leaves no state, and the service stays up."""
    response = app.client.post("/webhooks/apple", json={"signedPayload": forge(apple_ca, body)})
    assert response.status_code == 401, response.text
    assert_nothing_recorded(app)


def test_environment_not_accepted_is_401(
    make_settings: Callable[..., Settings], clock: FakeClock, apple_ca: AppleTestCA
) -> None:
    """With only production accepted, a sandbox notification is refused."""
    services = build_services(make_settings(apple_environments=["production"]), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        response = app.client.post("/webhooks/apple",
                                   json={"signedPayload": sign_notification(apple_ca, renewal())})
        assert response.status_code == 401
        production = renewal(environment="Production")
        production["data"]["transaction"]["environment"] = "Production"
        ok = app.client.post("/webhooks/apple",
                             json={"signedPayload": sign_notification(apple_ca, production)})
        assert ok.status_code == 200
    services.close()


def test_production_without_app_id_is_refused(
    make_settings: Callable[..., Settings], clock: FakeClock, apple_ca: AppleTestCA
) -> None:
    """Without RECONCILE_APPLE_APP_APPLE_ID production notifications cannot be verified: 401,
    with a reason that names the missing app id (not a wrong environment)."""
    services = build_services(make_settings(apple_app_apple_id=None), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        body = sign_notification(apple_ca, renewal(environment="Production"))
        response = app.client.post("/webhooks/apple", json={"signedPayload": body})
        assert response.status_code == 401
        assert response.json() == {"detail": "notification rejected: MISSING_APP_APPLE_ID "
                                   "(production notifications need RECONCILE_APPLE_APP_APPLE_ID,"
                                   " which is not set)"}
    services.close()


def test_unconfigured_apple_is_404(
    make_settings: Callable[..., Settings], clock: FakeClock, apple_ca: AppleTestCA
) -> None:
    """With no bundle id configured the Apple webhook does not exist."""
    services = build_services(make_settings(apple_bundle_id=None), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        body = sign_notification(apple_ca, renewal())
        assert app.client.post("/webhooks/apple", json={"signedPayload": body}).status_code == 404
    services.close()


def test_production_root_rejects_test_chain(
    make_settings: Callable[..., Settings], clock: FakeClock, apple_ca: AppleTestCA
) -> None:
    """With the shipped Apple Root CA - G3 as trust root, a test-CA payload is 401."""
    services = build_services(make_settings(apple_root_certs=[APPLE_ROOT_CA_G3]), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        body = sign_notification(apple_ca, renewal())
        assert app.client.post("/webhooks/apple", json={"signedPayload": body}).status_code == 401
    services.close()


def test_storage_down_is_503(app: RunningApp, apple_ca: AppleTestCA) -> None:
    """When the database cannot record the notification the answer is 5xx so Apple retries."""
    app.services.engine.dispose()
    with app.services.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE inbox RENAME TO inbox_gone")
    response = app.client.post("/webhooks/apple",
                               json={"signedPayload": sign_notification(apple_ca, renewal())})
    assert response.status_code == 503
    with app.services.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE inbox_gone RENAME TO inbox")
    retry = app.client.post("/webhooks/apple",
                            json={"signedPayload": sign_notification(apple_ca, renewal())})
    assert retry.status_code == 200


def test_ocsp_unreachable_is_503(
    make_settings: Callable[..., Settings], clock: FakeClock, tmp_path: Path
) -> None:
    """With OCSP on and the responder unreachable, the answer is 503 so Apple retries later."""
    ca = AppleTestCA.create("OCSP", ocsp_url=f"http://127.0.0.1:{free_port()}/ocsp")
    root = tmp_path / "ocsp-root.der"
    root.write_bytes(ca.root_der)
    services = build_services(
        make_settings(apple_root_certs=[root], apple_online_checks=True), clock=clock
    )
    with serve_in_thread(services, ADMIN_TOKEN) as app:
        body = {"signedPayload": sign_notification(ca, renewal())}
        assert app.client.post("/webhooks/apple", json=body).status_code == 503
        assert app.client.get("/v1/subscriptions").json()["items"] == []
    services.close()
