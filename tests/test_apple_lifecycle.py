"""Whole Apple lifecycles: the final state depends on what happened, not on delivery order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from reconcile.channels.apple import AppleProcessor, Envelope
from reconcile.channels.apple_normalise import normalise
from reconcile.config import Settings
from reconcile.db import migrate
from reconcile.ingest import ingest
from reconcile.models import Subscription
from reconcile.outcomes import Normalised
from reconcile.services import build_services
from reconcile.state import SubscriptionState, apply
from reconcile.views import present
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.server import FakeClock, RunningApp

DAY = 86_400_000
T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z
OTX = "3000000000000001"
MONTHLY, LITE = "com.example.phone.monthly", "com.example.phone.monthly.lite"
ACCOUNT = "0f8fad5b-d9cb-469f-a165-70867728950e"


def note(n: int, ntype: str, subtype: str | None, at: int, status: int, tx: dict[str, Any],
         renewal: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "notificationType": ntype, "notificationUUID": f"33333333-0000-4000-8000-{n:012d}",
        "signedDate": at, "data": {"status": status, "transaction": tx, "renewal": renewal},
    }
    if subtype:
        body["subtype"] = subtype
    return body


def tx(tid: str, start: int, product: str = MONTHLY, **extra: Any) -> dict[str, Any]:
    return {"originalTransactionId": OTX, "transactionId": tid, "productId": product,
            "purchaseDate": start, "expiresDate": start + 30 * DAY, "price": 9990,
            "currency": "USD", "type": "Auto-Renewable Subscription",
            "appAccountToken": ACCOUNT, **extra}


def renewal(auto: int = 1, product: str = MONTHLY, **extra: Any) -> dict[str, Any]:
    return {"originalTransactionId": OTX, "autoRenewStatus": auto, "productId": MONTHLY,
            "autoRenewProductId": product, **extra}


P1, P2, P3 = T0, T0 + 30 * DAY, T0 + 60 * DAY
LIFECYCLE = [
    note(1, "SUBSCRIBED", "INITIAL_BUY", P1 + 5, 1, tx("1", P1), renewal()),
    note(2, "DID_CHANGE_RENEWAL_PREF", "DOWNGRADE", P1 + 3 * DAY, 1, tx("1", P1), renewal(1, LITE)),
    note(3, "DID_CHANGE_RENEWAL_PREF", None, P1 + 4 * DAY, 1, tx("1", P1), renewal()),
    note(4, "DID_RENEW", None, P2 + 5, 1, tx("2", P2), renewal()),
    note(5, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED", P2 + DAY, 1, tx("2", P2),
         renewal(0)),
    note(6, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_ENABLED", P2 + 2 * DAY, 1, tx("2", P2),
         renewal(1)),
    note(7, "DID_FAIL_TO_RENEW", "GRACE_PERIOD", P3 + 5, 4, tx("2", P2),
         renewal(1, gracePeriodExpiresDate=P3 + 16 * DAY, isInBillingRetryPeriod=True)),
    note(8, "DID_RENEW", "BILLING_RECOVERY", P3 + 2 * DAY, 1, tx("3", P3), renewal()),
    note(9, "REFUND", None, P3 + 3 * DAY, 1, tx("1", P1, revocationDate=P3 + 3 * DAY - 60_000),
         renewal()),
    note(10, "DID_CHANGE_RENEWAL_STATUS", "AUTO_RENEW_DISABLED", P3 + 4 * DAY, 1, tx("3", P3),
         renewal(0)),
]


def decoded(app_ca: AppleTestCA, processor: AppleProcessor) -> list[Normalised]:
    assert processor.verifier is not None
    return [normalise(processor.decode(Envelope.of(
                processor.verifier.verify(sign_notification(app_ca, n)))))
            for n in LIFECYCLE]


def fold(outcomes: list[Normalised]) -> SubscriptionState:
    state = SubscriptionState()
    for outcome in outcomes:
        if outcome.subscription is not None:
            state = apply(state, outcome.subscription)
    return state


def test_lifecycle_over_http(app: RunningApp, apple_ca: AppleTestCA) -> None:
    """The ordered lifecycle ends active on the monthly plan with renewal off and one refund."""
    for notification in LIFECYCLE:
        body = {"signedPayload": sign_notification(apple_ca, notification)}
        assert app.client.post("/webhooks/apple", json=body).status_code == 200
    app.drain()
    [sub] = app.client.get("/v1/subscriptions").json()["items"]
    assert {k: sub[k] for k in ("status", "product_id", "renewal_product_id", "auto_renew",
                                "expires_at", "grace_expires_at", "account_id")} == {
        "status": "active", "product_id": MONTHLY, "renewal_product_id": MONTHLY,
        "auto_renew": False, "expires_at": "2026-12-20T14:13:20Z", "grace_expires_at": None,
        "account_id": ACCOUNT,
    }
    events = app.client.get(f"/v1/subscriptions/{sub['id']}/events").json()["items"]
    assert len(events) == len(LIFECYCLE)
    [refund] = app.client.get("/v1/refunds").json()["items"]
    assert refund["store_id"] == "1"


def lifecycle_with_duplicates() -> st.SearchStrategy[list[int]]:
    indices = list(range(len(LIFECYCLE)))
    return st.lists(st.sampled_from(indices), max_size=8).flatmap(
        lambda extra: st.permutations(indices + extra)
    )


def test_any_order_same_state(
    settings: Settings, clock: FakeClock, apple_ca: AppleTestCA
) -> None:
    """Any permutation of the lifecycle, with duplicates, folds to the ordered state."""
    services = build_services(settings, clock=clock)
    assert services.apple is not None
    outcomes = decoded(apple_ca, AppleProcessor(services.apple))
    services.close()
    ordered = fold(outcomes)

    @hypothesis_settings(max_examples=300, deadline=None)
    @given(lifecycle_with_duplicates())
    def check(order: list[int]) -> None:
        assert fold([outcomes[i] for i in order]) == ordered

    check()



def test_any_order_same_state_in_the_database(
    make_settings: Callable[..., Settings], clock: FakeClock, apple_ca: AppleTestCA,
    tmp_path_factory: Any,
) -> None:
    """Through the real ingest path and database, shuffled deliveries give the same rows."""
    services = build_services(make_settings(), clock=clock)
    assert services.apple is not None
    outcomes = decoded(apple_ca, AppleProcessor(services.apple))
    services.close()
    results: dict[str, Any] = {}

    def final_state(order: list[int]) -> dict[str, Any]:
        url = f"sqlite:///{tmp_path_factory.mktemp('perm') / 'db.sqlite'}"
        migrate(url)
        run = build_services(make_settings(database_url=url), clock=clock)
        with run.sessions() as session, session.begin():
            for i in order:
                ingest(session, outcomes[i], source="apple", now=clock())
        with run.sessions() as session:
            [row] = session.query(Subscription).all()
            [view] = present(session, [row], clock())
        run.close()
        return {k: v for k, v in view.items() if k not in ("id", "updated_at")}

    results["ordered"] = final_state(list(range(len(LIFECYCLE))))

    @hypothesis_settings(max_examples=15, deadline=None)
    @given(lifecycle_with_duplicates())
    def check(order: list[int]) -> None:
        assert final_state(order) == results["ordered"]

    check()
