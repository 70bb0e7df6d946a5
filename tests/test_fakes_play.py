"""The real google-api-python-client and google-auth against FakePlay and OidcIssuer."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import google.auth.transport.requests
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import id_token, service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tests.fakes.play import (
    FakePlay,
    product_purchase,
    subscription_purchase,
)
from tests.support.oidc import OidcIssuer, push_envelope

PACKAGE = "com.example.reconcile"
SCOPE = "https://www.googleapis.com/auth/androidpublisher"


class _Credentials(service_account.Credentials):
    """Service-account credentials that skip google-auth's background access-boundary lookup."""

    def _is_regional_access_boundary_lookup_required(self) -> bool:
        return False


@pytest.fixture(scope="module")
def service_account_key() -> str:
    """A throwaway RSA key in PEM, as a service-account JSON key carries it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def fake() -> Iterator[FakePlay]:
    """A running FakePlay for one test."""
    with FakePlay(package_name=PACKAGE) as play:
        yield play


@pytest.fixture
def play(fake: FakePlay, service_account_key: str) -> Iterator[Any]:
    """The real androidpublisher v3 client, authenticated through the fake's token endpoint."""
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-key",
        "private_key": service_account_key,
        "client_email": "reconcile@test-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": fake.token_uri,
    }
    credentials = _Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        info, scopes=[SCOPE]
    )
    service = build(
        "androidpublisher",
        "v3",
        credentials=credentials,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": fake.url},
    )
    yield service
    service.close()


def test_get_acknowledge_cancel(fake: FakePlay, play: Any) -> None:
    """A subscription is read, acknowledged and cancelled, each through the exact Google path."""
    expiry = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    fake.subscriptions["tok-1"] = subscription_purchase(
        "premium_monthly", expiry_time=expiry, account_id="acct-1"
    )
    subs = play.purchases().subscriptionsv2()

    got = subs.get(packageName=PACKAGE, token="tok-1").execute()
    assert got["kind"] == "androidpublisher#subscriptionPurchaseV2"
    assert got["lineItems"][0]["expiryTime"] == "2030-01-01T00:00:00.000Z"
    assert got["externalAccountIdentifiers"] == {"obfuscatedExternalAccountId": "acct-1"}
    assert got["acknowledgementState"] == "ACKNOWLEDGEMENT_STATE_PENDING"

    play.purchases().subscriptions().acknowledge(
        packageName=PACKAGE, subscriptionId="premium_monthly", token="tok-1", body={}
    ).execute()
    subs.cancel(
        packageName=PACKAGE,
        token="tok-1",
        body={"cancellationContext": {"cancellationType": "USER_REQUESTED_STOP_RENEWALS"}},
    ).execute()

    record = fake.subscriptions["tok-1"]
    assert record["acknowledgementState"] == "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
    assert record["subscriptionState"] == "SUBSCRIPTION_STATE_CANCELED"
    assert record["lineItems"][0]["autoRenewingPlan"]["autoRenewEnabled"] is False
    assert "userInitiatedCancellation" in record["canceledStateContext"]
    assert [c.name.rsplit(".", 2)[-2:] for c in fake.calls] == [
        ["subscriptionsv2", "get"], ["subscriptions", "acknowledge"], ["subscriptionsv2", "cancel"]
    ]
    assert fake.calls[2].path == (
        f"/androidpublisher/v3/applications/{PACKAGE}/purchases/subscriptionsv2/tokens/tok-1:cancel"
    )
    assert fake.calls[0].query == {"alt": "json"}
    assert {c.bearer for c in fake.calls} == {"fake-token-1"}
    assert fake.token_requests[0]["scope"] == SCOPE
    fake.assert_clean()


def test_refusals_google_would_make(fake: FakePlay, play: Any) -> None:
    """Unknown tokens, prepaid cancellation and a wrong subscription id answer Google's errors."""
    fake.subscriptions["prepaid"] = subscription_purchase("top_up", prepaid=True)
    subs = play.purchases().subscriptionsv2()
    body = {"cancellationContext": {"cancellationType": "DEVELOPER_REQUESTED_STOP_PAYMENTS"}}

    with pytest.raises(HttpError) as missing:
        subs.get(packageName=PACKAGE, token="nope").execute()
    assert missing.value.status_code == 404
    with pytest.raises(HttpError) as prepaid:
        subs.cancel(packageName=PACKAGE, token="prepaid", body=body).execute()
    assert prepaid.value.status_code == 400
    with pytest.raises(HttpError) as wrong_id:
        play.purchases().subscriptions().acknowledge(
            packageName=PACKAGE, subscriptionId="monthly", token="prepaid", body={}
        ).execute()
    assert wrong_id.value.status_code == 400
    with pytest.raises(HttpError) as other_app:
        subs.get(packageName="com.other.app", token="prepaid").execute()
    assert other_app.value.status_code == 404
    assert fake.subscriptions["prepaid"]["subscriptionState"] == "SUBSCRIPTION_STATE_ACTIVE"
    fake.assert_clean()


def test_products_acknowledge_consume(fake: FakePlay, play: Any) -> None:
    """One-time products are read, acknowledged and consumed; productsv2 reflects the changes."""
    fake.products["ptok"] = product_purchase("credits_100", account_id="acct-2")
    products = play.purchases().products()

    got = products.get(packageName=PACKAGE, productId="credits_100", token="ptok").execute()
    assert (got["acknowledgementState"], got["consumptionState"]) == (0, 0)
    products.acknowledge(
        packageName=PACKAGE, productId="credits_100", token="ptok", body={}
    ).execute()
    products.consume(packageName=PACKAGE, productId="credits_100", token="ptok").execute()

    assert fake.products["ptok"]["acknowledgementState"] == 1
    assert fake.products["ptok"]["consumptionState"] == 1
    v2 = play.purchases().productsv2().getproductpurchasev2(
        packageName=PACKAGE, token="ptok"
    ).execute()
    assert v2["acknowledgementState"] == "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
    offer = v2["productLineItem"][0]["productOfferDetails"]
    assert offer["consumptionState"] == "CONSUMPTION_STATE_CONSUMED"
    assert [c.name.rsplit(".", 1)[1] for c in fake.calls_named("")] == [
        "get", "acknowledge", "consume", "getproductpurchasev2"
    ]
    fake.assert_clean()


def test_voided_purchases_filter_and_paginate(fake: FakePlay, play: Any) -> None:
    """Voided purchases honour the time window, the type and token pagination."""
    base = 1_800_000_000_000
    for i in range(5):
        fake.voided.append(
            {
                "purchaseToken": f"v{i}",
                "orderId": f"GPA.0000-0000-0000-0000{i}",
                "purchaseTimeMillis": base - 86_400_000,
                "voidedTimeMillis": base + i * 1000,
                "voidedSource": 0,
                "voidedReason": 1,
                "kind": 1 if i % 2 else 2,
            }
        )
    voided = play.purchases().voidedpurchases()
    window = {"startTime": str(base), "endTime": str(base + 3000)}

    one_time = voided.list(packageName=PACKAGE, **window).execute()
    assert [v["purchaseToken"] for v in one_time["voidedPurchases"]] == ["v0", "v2"]
    assert "tokenPagination" not in one_time

    seen: list[str] = []
    request = voided.list(packageName=PACKAGE, type=1, maxResults=3, **window)
    while request is not None:
        page = request.execute()
        seen += [v["purchaseToken"] for v in page.get("voidedPurchases", [])]
        next_token = page.get("tokenPagination", {}).get("nextPageToken")
        request = (
            voided.list(packageName=PACKAGE, type=1, maxResults=3, token=next_token)
            if next_token
            else None
        )
    assert seen == ["v0", "v1", "v2", "v3"]
    assert page["voidedPurchases"][0]["voidedTimeMillis"] == str(base + 3000)
    assert page["voidedPurchases"][0]["kind"] == "androidpublisher#voidedPurchase"
    assert fake.calls_named("voidedpurchases.list")[1].query["maxResults"] == "3"
    fake.assert_clean()


def test_fault_injection_and_retries(fake: FakePlay, play: Any) -> None:
    """An injected 503 is retried by execute(num_retries=2); an injected 410 surfaces as such."""
    fake.subscriptions["tok"] = subscription_purchase()
    fake.fail_next("subscriptionsv2.get", 503)
    request = play.purchases().subscriptionsv2().get(packageName=PACKAGE, token="tok")
    request._sleep = lambda seconds: None
    assert request.execute(num_retries=2)["subscriptionState"] == "SUBSCRIPTION_STATE_ACTIVE"
    assert [c.status for c in fake.calls_named("subscriptionsv2.get")] == [503, 200]

    fake.fail_next("subscriptionsv2.get", 410)
    with pytest.raises(HttpError) as gone:
        play.purchases().subscriptionsv2().get(packageName=PACKAGE, token="tok").execute()
    assert gone.value.status_code == 410
    assert gone.value.error_details[0]["reason"] == "subscriptionPurchaseNoLongerAvailable"
    fake.assert_clean()


def test_revoke_is_recorded_as_a_violation(fake: FakePlay, play: Any) -> None:
    """A refunding call is refused with 403 and makes assert_clean fail."""
    fake.subscriptions["tok"] = subscription_purchase()
    with pytest.raises(HttpError) as refused:
        play.purchases().subscriptionsv2().revoke(
            packageName=PACKAGE, token="tok", body={"revocationContext": {"fullRefund": {}}}
        ).execute()
    assert refused.value.status_code == 403
    assert [c.name for c in fake.violations] == [
        "androidpublisher.purchases.subscriptionsv2.revoke"
    ]
    assert fake.subscriptions["tok"]["subscriptionState"] == "SUBSCRIPTION_STATE_ACTIVE"
    with pytest.raises(AssertionError, match=r"subscriptionsv2\.revoke"):
        fake.assert_clean()


def test_bearer_required_and_rate_observed(fake: FakePlay) -> None:
    """API calls without a bearer token answer 401; call rate is measured over a window."""
    url = f"{fake.url}androidpublisher/v3/applications/{PACKAGE}/purchases/subscriptionsv2/tokens/x"
    with pytest.raises(urllib.error.HTTPError) as unauthenticated:
        urllib.request.urlopen(url, timeout=5)
    assert unauthenticated.value.code == 401
    unauthenticated.value.close()
    assert fake.calls[0].bearer is None
    assert fake.max_calls_in_window(60.0) == 1
    fake.assert_clean()


def test_oidc_issuer_tokens_verify_with_google_auth() -> None:
    """OidcIssuer tokens verify with google-auth against its certs URL; unknown kids do not."""
    audience = "https://reconcile.example/webhooks/google"
    email = "pubsub-push@test-project.iam.gserviceaccount.com"
    with OidcIssuer() as issuer:
        request = google.auth.transport.requests.Request()
        claims = id_token.verify_token(
            issuer.token(audience, email), request, audience=audience, certs_url=issuer.certs_url
        )
        assert (claims["iss"], claims["email"], claims["email_verified"]) == (
            "https://accounts.google.com", email, True
        )
        assert issuer.fetches == 1
        with pytest.raises(ValueError, match="key id"):
            id_token.verify_token(
                issuer.token(audience, email, kid="unpublished"),
                request,
                audience=audience,
                certs_url=issuer.certs_url,
            )

    envelope = push_envelope({"version": "1.0", "packageName": PACKAGE}, "m-1")
    message = envelope["message"]
    assert json.loads(base64.b64decode(message["data"]))["packageName"] == PACKAGE
    assert message["messageId"] == message["message_id"] == "m-1"
    assert message["publishTime"].endswith("Z")
