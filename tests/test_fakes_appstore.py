"""The App Store fake answers the real `AppStoreServerAPIClient` the way Apple does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from appstoreserverlibrary.api_client import (
    APIError,
    APIException,
    AppStoreServerAPIClient,
    GetTransactionHistoryVersion,
)
from appstoreserverlibrary.models.ConsumptionRequest import ConsumptionRequest
from appstoreserverlibrary.models.DeliveryStatus import DeliveryStatus
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.models.NotificationHistoryRequest import NotificationHistoryRequest
from appstoreserverlibrary.models.NotificationTypeV2 import NotificationTypeV2
from appstoreserverlibrary.models.RefundPreference import RefundPreference
from appstoreserverlibrary.models.Status import Status
from appstoreserverlibrary.models.TransactionHistoryRequest import TransactionHistoryRequest
from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import APPLE_ISSUER_ID, APPLE_KEY_ID
from tests.fakes.appstore import (
    DAY_MS,
    FakeAppStore,
    SubscriptionGroupItem,
    notification_payload,
    now_ms,
    renewal_payload,
    transaction_payload,
)
from tests.support.apple_ca import AppleTestCA

BUNDLE_ID = "com.example.reconcile"
KEY_ID = APPLE_KEY_ID
ISSUER_ID = APPLE_ISSUER_ID


@pytest.fixture(scope="module")
def ca() -> AppleTestCA:
    """One test CA for the module: generating keys is the slow part."""
    return AppleTestCA.create()


@pytest.fixture(scope="module")
def api_key() -> ec.EllipticCurvePrivateKey:
    """The App Store Server API key (.p8 equivalent) the client signs its bearer tokens with."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def fake(ca: AppleTestCA, api_key: ec.EllipticCurvePrivateKey) -> Iterator[FakeAppStore]:
    """A running fake that verifies the client's bearer token against the API key."""
    with FakeAppStore(
        ca, BUNDLE_ID, api_public_key=api_key.public_key(), key_id=KEY_ID, issuer_id=ISSUER_ID
    ) as store:
        yield store


def _client(
    fake: FakeAppStore, key: ec.EllipticCurvePrivateKey, bundle_id: str = BUNDLE_ID
) -> AppStoreServerAPIClient:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    client = AppStoreServerAPIClient(pem, KEY_ID, ISSUER_ID, bundle_id, Environment.SANDBOX)
    client._base_url = fake.url
    return client


@pytest.fixture
def client(fake: FakeAppStore, api_key: ec.EllipticCurvePrivateKey) -> AppStoreServerAPIClient:
    """The real library client, pointed at the fake."""
    return _client(fake, api_key)


@pytest.fixture
def verifier(ca: AppleTestCA) -> SignedDataVerifier:
    """The verifier the service uses, trusting the test root, offline."""
    return SignedDataVerifier([ca.root_der], False, Environment.SANDBOX, BUNDLE_ID)


def test_subscription_statuses_decode_and_verify(
    fake: FakeAppStore, client: AppStoreServerAPIClient, verifier: SignedDataVerifier
) -> None:
    """get_all_subscription_statuses returns signed data the service's verifier accepts."""
    account = str(uuid.uuid4())
    tx = transaction_payload(
        transaction_id="2000000111", bundle_id=BUNDLE_ID, app_account_token=account
    )
    renewal = renewal_payload(original_transaction_id="2000000111", auto_renew_status=0)
    fake.subscriptions["2000000111"] = [SubscriptionGroupItem(tx, renewal, status=4)]

    response = client.get_all_subscription_statuses("2000000111")

    assert response.environment == Environment.SANDBOX
    assert response.bundleId == BUNDLE_ID
    assert response.data is not None
    assert len(response.data) == 1
    group = response.data[0]
    assert group.subscriptionGroupIdentifier == tx["subscriptionGroupIdentifier"]
    assert group.lastTransactions is not None
    last = group.lastTransactions[0]
    assert last.status == Status.BILLING_GRACE_PERIOD
    assert last.originalTransactionId == "2000000111"
    assert last.signedTransactionInfo is not None
    assert last.signedRenewalInfo is not None
    decoded_tx = verifier.verify_and_decode_signed_transaction(last.signedTransactionInfo)
    assert decoded_tx.transactionId == "2000000111"
    assert decoded_tx.appAccountToken == account
    assert decoded_tx.expiresDate == tx["expiresDate"]
    assert decoded_tx.signedDate is not None
    assert abs(decoded_tx.signedDate - now_ms()) < 60_000
    decoded_renewal = verifier.verify_and_decode_renewal_info(last.signedRenewalInfo)
    assert decoded_renewal.autoRenewStatus is not None
    assert decoded_renewal.autoRenewStatus.value == 0
    call = fake.calls[-1]
    assert (call.method, call.path) == ("GET", "/inApps/v1/subscriptions/2000000111")
    fake.assert_clean(include_unexpected=True)


def test_statuses_resolve_any_transaction_id_and_filter_by_status(
    fake: FakeAppStore, client: AppStoreServerAPIClient
) -> None:
    """A renewal's transaction id finds its subscription, and the status query filters."""
    renewal_tx = transaction_payload(
        transaction_id="2000000222", original_transaction_id="2000000200", bundle_id=BUNDLE_ID
    )
    fake.add_subscription(renewal_tx, status=1)

    found = client.get_all_subscription_statuses("2000000222")
    filtered = client.get_all_subscription_statuses("2000000200", [Status.EXPIRED])

    assert found.data is not None
    assert found.data[0].lastTransactions is not None
    assert found.data[0].lastTransactions[0].originalTransactionId == "2000000200"
    assert filtered.data == []
    assert fake.calls[-1].query == {"status": ["2"]}


def test_notification_history_paginates_and_filters_by_date(
    fake: FakeAppStore, client: AppStoreServerAPIClient, verifier: SignedDataVerifier
) -> None:
    """get_notification_history pages with paginationToken and keeps only the date window."""
    fake.page_size = 2
    now = now_ms()
    for i in range(5):
        tx = transaction_payload(transaction_id=f"20000003{i}", bundle_id=BUNDLE_ID)
        fake.add_notification(notification_payload(
            "DID_RENEW", transaction=tx, status=1, bundle_id=BUNDLE_ID,
            signed_date=now - (10 - i) * DAY_MS,
        ))
    fake.add_notification(notification_payload(
        "SUBSCRIBED", "INITIAL_BUY", bundle_id=BUNDLE_ID, signed_date=now - 30 * DAY_MS,
    ))
    request = NotificationHistoryRequest(startDate=now - 20 * DAY_MS, endDate=now)

    pages = []
    token: str | None = None
    while True:
        page = client.get_notification_history(token, request)
        pages.append(page)
        if not page.hasMore:
            break
        token = page.paginationToken
        assert token is not None

    assert [len(p.notificationHistory or []) for p in pages] == [2, 2, 1]
    items = [item for p in pages for item in p.notificationHistory or []]
    decoded = [verifier.verify_and_decode_notification(i.signedPayload or "") for i in items]
    assert [d.rawNotificationType for d in decoded] == ["DID_RENEW"] * 5
    assert [d.signedDate for d in decoded] == sorted(d.signedDate or 0 for d in decoded)
    assert decoded[0].data is not None
    assert decoded[0].data.signedTransactionInfo is not None
    nested = verifier.verify_and_decode_signed_transaction(decoded[0].data.signedTransactionInfo)
    assert nested.transactionId == "200000030"
    assert items[0].sendAttempts is not None
    assert items[0].sendAttempts[0].rawSendAttemptResult == "SUCCESS"


def test_notification_history_filters_failures_type_and_transaction(
    fake: FakeAppStore, client: AppStoreServerAPIClient, verifier: SignedDataVerifier
) -> None:
    """onlyFailures, notificationType and transactionId narrow the history as Apple does."""
    now = now_ms()
    tx = transaction_payload(transaction_id="2000000400", bundle_id=BUNDLE_ID)
    other = transaction_payload(transaction_id="2000000401", bundle_id=BUNDLE_ID)
    failed = fake.add_notification(
        notification_payload("DID_RENEW", transaction=tx, bundle_id=BUNDLE_ID),
        send_attempts=[{"attemptDate": now, "sendAttemptResult": "TIMED_OUT"}],
    )
    fake.add_notification(notification_payload("EXPIRED", "VOLUNTARY", transaction=other,
                                                bundle_id=BUNDLE_ID))
    start, end = now - DAY_MS, now + DAY_MS

    failures = client.get_notification_history(
        None, NotificationHistoryRequest(startDate=start, endDate=end, onlyFailures=True)
    )
    expired = client.get_notification_history(None, NotificationHistoryRequest(
        startDate=start, endDate=end, notificationType=NotificationTypeV2.EXPIRED
    ))
    by_tx = client.get_notification_history(
        None, NotificationHistoryRequest(startDate=start, endDate=end, transactionId="2000000400")
    )

    assert failures.notificationHistory is not None
    assert len(failures.notificationHistory) == 1
    only = verifier.verify_and_decode_notification(
        failures.notificationHistory[0].signedPayload or ""
    )
    assert only.notificationUUID == failed["notificationUUID"]
    assert expired.notificationHistory is not None
    assert len(expired.notificationHistory) == 1
    assert by_tx.notificationHistory is not None
    assert len(by_tx.notificationHistory) == 1


def test_notification_history_rejects_bad_windows(
    fake: FakeAppStore, client: AppStoreServerAPIClient
) -> None:
    """A start after the end, or older than Apple's 180 days, is a 400 like Apple's."""
    now = now_ms()
    with pytest.raises(APIException) as after:
        client.get_notification_history(
            None, NotificationHistoryRequest(startDate=now, endDate=now)
        )
    with pytest.raises(APIException) as old:
        client.get_notification_history(
            None, NotificationHistoryRequest(startDate=now - 200 * DAY_MS, endDate=now)
        )
    assert after.value.api_error == APIError.START_DATE_AFTER_END_DATE
    assert old.value.api_error == APIError.START_DATE_TOO_FAR_IN_PAST


def test_consumption_information_is_recorded(
    fake: FakeAppStore, client: AppStoreServerAPIClient
) -> None:
    """send_consumption_information reaches the v2 path and the fake records its body."""
    client.send_consumption_information("2000000500", ConsumptionRequest(
        customerConsented=True,
        sampleContentProvided=False,
        deliveryStatus=DeliveryStatus.DELIVERED,
        refundPreference=RefundPreference.DECLINE,
    ))

    assert fake.consumption_requests == [("2000000500", {
        "customerConsented": True,
        "sampleContentProvided": False,
        "deliveryStatus": "DELIVERED",
        "refundPreference": "DECLINE",
    })]
    assert fake.calls[-1].method == "PUT"
    assert fake.calls[-1].path == "/inApps/v2/transactions/consumption/2000000500"
    fake.assert_clean(include_unexpected=True)


def test_consumption_without_consent_is_rejected(
    fake: FakeAppStore, client: AppStoreServerAPIClient
) -> None:
    """customerConsented other than true is refused with Apple's error and not recorded."""
    with pytest.raises(APIException) as raised:
        client.send_consumption_information("2000000501", ConsumptionRequest(
            customerConsented=False,
            sampleContentProvided=False,
            deliveryStatus=DeliveryStatus.DELIVERED,
        ))

    assert raised.value.http_status_code == 400
    assert raised.value.api_error == APIError.INVALID_CUSTOMER_CONSENTED
    assert fake.consumption_requests == []


def test_rate_limit_surfaces_as_api_exception(
    fake: FakeAppStore, client: AppStoreServerAPIClient
) -> None:
    """An injected 429 reaches the caller as RATE_LIMIT_EXCEEDED, then the next call succeeds."""
    fake.add_subscription(transaction_payload(transaction_id="2000000600", bundle_id=BUNDLE_ID))
    fake.fail_next("/inApps/v1/subscriptions/", 429)

    with pytest.raises(APIException) as raised:
        client.get_all_subscription_statuses("2000000600")

    assert raised.value.http_status_code == 429
    assert raised.value.api_error == APIError.RATE_LIMIT_EXCEEDED
    assert raised.value.raw_api_error == 4290000
    assert client.get_all_subscription_statuses("2000000600").data


def test_retryable_fault_code_can_be_chosen(
    fake: FakeAppStore, client: AppStoreServerAPIClient
) -> None:
    """fail_next with an explicit code yields that APIError (here GENERAL_INTERNAL_RETRYABLE)."""
    fake.fail_next("/history/", 500, times=2, error_code=5000001)

    for _ in range(2):
        with pytest.raises(APIException) as raised:
            client.get_transaction_info("unused")  # path does not match: a normal 404
        assert raised.value.api_error == APIError.TRANSACTION_ID_NOT_FOUND
        with pytest.raises(APIException) as raised:
            client.get_transaction_history(
                "2000000700", None, TransactionHistoryRequest(), GetTransactionHistoryVersion.V2
            )
        assert raised.value.http_status_code == 500
        assert raised.value.api_error == APIError.GENERAL_INTERNAL_RETRYABLE


def test_unknown_transaction_is_404(client: AppStoreServerAPIClient) -> None:
    """An id the fake does not know answers 404 TRANSACTION_ID_NOT_FOUND."""
    with pytest.raises(APIException) as raised:
        client.get_all_subscription_statuses("9999999999")

    assert raised.value.http_status_code == 404
    assert raised.value.api_error == APIError.TRANSACTION_ID_NOT_FOUND
    assert raised.value.error_message == "Transaction id not found."


def test_transaction_info_history_and_refunds(
    fake: FakeAppStore, client: AppStoreServerAPIClient, verifier: SignedDataVerifier
) -> None:
    """Transaction info, v2 history (paged by revision) and refund lookup all verify."""
    fake.page_size = 2
    start = now_ms() - 90 * DAY_MS
    for i in range(3):
        tx = transaction_payload(
            transaction_id=f"20000008{i}", original_transaction_id="200000080",
            bundle_id=BUNDLE_ID, purchase_date=start + i * 30 * DAY_MS,
        )
        fake.transactions[tx["transactionId"]] = tx
    refunded = dict(fake.transactions["200000081"], revocationDate=now_ms(), revocationReason=0)
    fake.refunds["200000080"] = [refunded]

    info = client.get_transaction_info("200000082")
    first = client.get_transaction_history(
        "200000082", None, TransactionHistoryRequest(), GetTransactionHistoryVersion.V2
    )
    second = client.get_transaction_history(
        "200000082", first.revision, TransactionHistoryRequest(), GetTransactionHistoryVersion.V2
    )
    refunds = client.get_refund_history("200000082", None)

    assert info.signedTransactionInfo is not None
    assert verifier.verify_and_decode_signed_transaction(
        info.signedTransactionInfo
    ).transactionId == "200000082"
    assert first.hasMore is True
    assert second.hasMore is False
    ids = [
        verifier.verify_and_decode_signed_transaction(s).transactionId
        for page in (first, second) for s in page.signedTransactions or []
    ]
    assert ids == ["200000080", "200000081", "200000082"]
    assert refunds.signedTransactions is not None
    assert len(refunds.signedTransactions) == 1
    decoded = verifier.verify_and_decode_signed_transaction(refunds.signedTransactions[0])
    assert decoded.transactionId == "200000081"
    assert decoded.revocationDate is not None
    fake.assert_clean(include_unexpected=True)


def test_bad_bearer_token_is_401(
    fake: FakeAppStore, api_key: ec.EllipticCurvePrivateKey
) -> None:
    """A token signed by another key, for another bundle, or missing, is refused with 401."""
    fake.add_subscription(transaction_payload(transaction_id="2000000900", bundle_id=BUNDLE_ID))
    wrong_key = _client(fake, ec.generate_private_key(ec.SECP256R1()))
    wrong_bundle = _client(fake, api_key, bundle_id="com.example.other")

    for bad in (wrong_key, wrong_bundle):
        with pytest.raises(APIException) as raised:
            bad.get_all_subscription_statuses("2000000900")
        assert raised.value.http_status_code == 401
    bare = requests.get(f"{fake.url}/inApps/v1/subscriptions/2000000900", timeout=5)

    assert bare.status_code == 401
    assert [reason for _, reason in fake.auth_failures] == [
        "bad token: Signature verification failed", "bid mismatch", "missing bearer token",
    ]


def test_forbidden_and_unknown_calls_are_recorded(
    fake: FakeAppStore, client: AppStoreServerAPIClient
) -> None:
    """Extend (and any refund/revoke/cancel path) is a violation; unknown paths answer 404."""
    auth = {"Authorization": f"Bearer {client._generate_token()}"}
    extend = requests.put(
        f"{fake.url}/inApps/v1/subscriptions/extend/2000001000",
        json={"extendByDays": 7, "extendReasonCode": 1, "requestIdentifier": "x"},
        headers=auth, timeout=5,
    )
    revoke = requests.post(f"{fake.url}/inApps/v1/subscriptions/2000001000/revoke",
                           headers=auth, timeout=5)
    with pytest.raises(APIException):
        client.get_refund_history("unknown", None)

    assert (extend.status_code, revoke.status_code) == (404, 404)
    assert [c.path for c in fake.violations] == [
        "/inApps/v1/subscriptions/extend/2000001000", "/inApps/v1/subscriptions/2000001000/revoke",
    ]
    assert len(fake.unexpected) == 2
    with pytest.raises(AssertionError, match="extend/2000001000"):
        fake.assert_clean()


def test_latency_and_call_window(fake: FakeAppStore, client: AppStoreServerAPIClient) -> None:
    """Latency delays answers and max_calls_in_window counts calls in a sliding window."""
    fake.add_subscription(transaction_payload(transaction_id="2000001100", bundle_id=BUNDLE_ID))
    fake.latency = 0.05
    started = time.monotonic()
    for _ in range(3):
        client.get_all_subscription_statuses("2000001100")

    assert time.monotonic() - started >= 0.15
    assert fake.max_calls_in_window(10.0) == 3
    assert fake.max_calls_in_window(0.001) == 1
