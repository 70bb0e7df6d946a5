"""Hostile input never gets a 5xx (5xx means "transient: retry" to the stores) and a refused
request changes nothing: both webhooks and every admin route with a body or path parameter,
found in the app itself so that new routes are covered without a test edit."""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, literal, select, union_all
from sqlalchemy.engine import Engine

from reconcile.models import Base
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.google import PACKAGE, Pusher
from tests.support.server import RunningApp

NOW_MS = 1_793_534_400_000  # the FakeClock's start
HYPOTHESIS = settings(max_examples=30, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])

NASTY_TEXT = ["\ud800", "x\udfffy", "a\x00b", "\x00", "é", "\U0001d11e", "\u202e", "", " ",
              "9" * 300, "null", "customer_request", "2027-01-01T00:00:00Z"]
texts = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=12),
                  st.tuples(st.text(max_size=4), st.sampled_from(NASTY_TEXT)).map("".join))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), texts)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(texts, inner, max_size=3), max_leaves=8)


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


raw_bodies = st.one_of(
    values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
    st.integers(30, 5000).map(lambda n: nested(n).encode()),
    st.integers(30, 5000).map(lambda n: ('{"signedPayload": ' + nested(n) + "}").encode()),
    st.sampled_from([b"\xff\xfe{}", b'{"reason": "\xff"}', '{"reason": "x"}'.encode("utf-16"),
                     b'{"a": "\\ud800"}', b'{"a": "\\u0000"}']),
)


@pytest.fixture
def watched(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Log records of the service, uvicorn's "Exception in ASGI application" included."""
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    uvicorn.removeHandler(caplog.handler)


def row_counts(engine: Engine) -> dict[str, int]:
    """The number of rows in every table, in one statement."""
    counts = union_all(*(select(literal(table.name), func.count()).select_from(table)
                         for table in Base.metadata.sorted_tables))
    with engine.connect() as connection:
        return dict(connection.execute(counts).tuples().all())


def check(app: RunningApp, caplog: pytest.LogCaptureFixture, before: dict[str, int],
          response: httpx.Response) -> None:
    """No 5xx; a refusal changed nothing; nothing logged a traceback."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert row_counts(app.services.engine) == before
    tracebacks = [f"{r.getMessage()}: {r.exc_info[1]!r}"[:600] for r in caplog.records
                  if r.exc_info]
    assert tracebacks == []


def set_path(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


APPLE = {
    "notificationType": "DID_RENEW", "signedDate": NOW_MS, "version": "2.0",
    "data": {
        "status": 1,
        "transaction": {"originalTransactionId": "8001", "transactionId": "8002",
                        "productId": "com.example.phone.monthly", "purchaseDate": NOW_MS,
                        "expiresDate": NOW_MS + 86_400_000,
                        "type": "Auto-Renewable Subscription", "appAccountToken": "acct-h"},
        "renewal": {"originalTransactionId": "8001", "autoRenewStatus": 1},
    },
}
APPLE_FIELDS = [("notificationType",), ("subtype",), ("signedDate",), ("version",),
                ("notificationUUID",), ("data",), ("data", "status"), ("data", "environment"),
                ("data", "bundleId"), ("data", "appAppleId"), ("data", "transaction"),
                ("data", "transaction", "productId"), ("data", "transaction", "expiresDate"),
                ("data", "transaction", "originalTransactionId"),
                ("data", "transaction", "appAccountToken"), ("data", "transaction", "type"),
                ("data", "renewal", "autoRenewStatus"), ("summary",)]


@HYPOTHESIS
@given(data=st.data())
def test_apple_webhook_never_5xx(
    google_app: RunningApp, apple_ca: AppleTestCA, watched: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    """Raw junk, junk signedPayloads and authentic notifications with a hostile value in any
    field: 4xx, or 200 with the notification kept (as rejected when it can never be used)."""
    kind = data.draw(st.sampled_from(["raw", "payload", "signed"]))
    if kind == "raw":
        body = data.draw(raw_bodies)
    elif kind == "payload":
        body = json.dumps({"signedPayload": data.draw(values)}).encode()
    else:
        field = data.draw(st.sampled_from(APPLE_FIELDS))
        if field == ("data", "transaction"):  # the signed transaction itself is replaced
            field = ("data", "signedTransactionInfo")
        notification = set_path({**APPLE, "notificationUUID": str(data.draw(st.uuids()))},
                                field, data.draw(values))
        if field == ("data", "signedTransactionInfo"):
            del notification["data"]["transaction"]
        body = json.dumps({"signedPayload": sign_notification(apple_ca, notification)}).encode()
    watched.clear()
    before = row_counts(google_app.services.engine)
    response = google_app.client.post("/webhooks/apple", content=body,
                                      headers={"Content-Type": "application/json"})
    check(google_app, watched, before, response)
    google_app.drain()
    check(google_app, watched, before, response)


GOOGLE = {"version": "1.0", "packageName": PACKAGE, "eventTimeMillis": str(NOW_MS),
          "subscriptionNotification": {"version": "1.0", "notificationType": 4,
                                       "purchaseToken": "tok-hostile"}}
GOOGLE_FIELDS = [("packageName",), ("eventTimeMillis",), ("subscriptionNotification",),
                 ("subscriptionNotification", "notificationType"),
                 ("subscriptionNotification", "purchaseToken"), ("oneTimeProductNotification",),
                 ("voidedPurchaseNotification",), ("testNotification",)]
ENVELOPE_FIELDS = [("message", "messageId"), ("message", "data"), ("message", "attributes"),
                   ("message", "publishTime"), ("message",), ("subscription",)]


@HYPOTHESIS
@given(data=st.data())
def test_google_webhook_never_5xx(
    google_app: RunningApp, pusher: Pusher, watched: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    """Authenticated pushes with junk bodies, junk envelopes or hostile notification fields:
    400 when there is no message id, else 200 and kept (as rejected when unusable)."""
    message_id = f"m-{data.draw(st.uuids())}"
    kind = data.draw(st.sampled_from(["raw", "envelope", "data", "notification"]))
    notification: Any = GOOGLE
    if kind == "notification":
        notification = set_path(GOOGLE, data.draw(st.sampled_from(GOOGLE_FIELDS)),
                                data.draw(values))
    encoded = json.dumps(notification).encode()
    if kind == "data":
        encoded = data.draw(raw_bodies)
    envelope: dict[str, Any] = {"message": {"messageId": message_id,
                                            "data": base64.b64encode(encoded).decode()},
                                "subscription": "projects/p/subscriptions/s"}
    if kind == "envelope":
        envelope = set_path(envelope, data.draw(st.sampled_from(ENVELOPE_FIELDS)),
                            data.draw(values))
    body = data.draw(raw_bodies) if kind == "raw" else json.dumps(envelope).encode()
    watched.clear()
    before = row_counts(google_app.services.engine)
    response = pusher.post(body)
    check(google_app, watched, before, response)
    google_app.drain()
    check(google_app, watched, before, response)


def admin_routes(document: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(method, path, body field names) of every /v1 operation of the app's OpenAPI document
    taking a body or a path parameter."""
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            in_path = any(p["in"] == "path" for p in operation.get("parameters", []))
            if path.startswith("/v1/") and (in_path or "requestBody" in operation):
                found.append((method.upper(), path, body_fields(document, operation)))
    return found


def body_fields(document: dict[str, Any], operation: dict[str, Any]) -> list[str]:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = content.get("schema", {})
    for option in [schema, *schema.get("anyOf", [])]:
        if "$ref" in option:
            name = option["$ref"].rsplit("/", 1)[1]
            return sorted(document["components"]["schemas"][name].get("properties", {}))
    return []


def path_text(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@pytest.fixture
def routes(google_app: RunningApp) -> list[tuple[str, str, list[str]]]:
    return admin_routes(google_app.client.get("/openapi.json").json())


@settings(HYPOTHESIS, max_examples=80)
@given(data=st.data())
def test_admin_routes_never_5xx(
    google_app: RunningApp, routes: list[tuple[str, str, list[str]]],
    watched: pytest.LogCaptureFixture, data: st.DataObject,
) -> None:
    """Any route, hostile path parameters, hostile bodies (raw bytes, or the route's own field
    names with hostile values): never 5xx, and a refusal changes nothing."""
    assert len(routes) >= 15
    method, path, fields = data.draw(st.sampled_from(routes))
    for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        given_text = data.draw(st.one_of(texts, st.sampled_from(["sub_x", "acct-h"])))
        path = path.replace(f"{{{name}}}", path_text(given_text) or "x")
    as_fields: bool = data.draw(st.booleans())
    if fields and as_fields:
        body = json.dumps(data.draw(st.dictionaries(st.sampled_from(fields), values,
                                                    max_size=len(fields)))).encode()
    else:
        body = data.draw(raw_bodies)
    content_type = data.draw(st.sampled_from(["application/json", "text/plain", None]))
    headers = {"Content-Type": content_type} if content_type else {}
    watched.clear()
    before = row_counts(google_app.services.engine)
    response = google_app.client.request(method, path, content=body, headers=headers)
    check(google_app, watched, before, response)
