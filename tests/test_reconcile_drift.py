"""The pure comparison behind every state discrepancy: (ours, the store's) -> findings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconcile.reconciliation.drift import changes, drift
from reconcile.state import Channel, Observation, Stamp, Status, SubscriptionState

T = datetime(2026, 11, 1, tzinfo=UTC)
EXPIRY = datetime(2026, 12, 1, tzinfo=UTC)
FIELDS = ("status", "product_id", "renewal_product_id", "auto_renew", "expires_at",
          "grace_expires_at")
HERE = SubscriptionState(
    status=Status.ACTIVE, product_id="monthly", renewal_product_id="monthly", auto_renew=True,
    expires_at=EXPIRY, clock={name: Stamp(T, "webhook") for name in FIELDS},
)


def truth(at: datetime, **fields: Any) -> Observation:
    values: dict[str, Any] = {"status": "active", "product_id": "monthly",
                              "renewal_product_id": "monthly", "auto_renew": True,
                              "expires_at": EXPIRY, "grace_expires_at": None}
    values.update(fields)
    return Observation(Channel.APPLE, "1", Stamp(at, "status"), "STATUS", "sandbox", values)


LATER = T + timedelta(hours=1)
CASES: list[tuple[str, Observation, list[tuple[str, str | None, str | None]]]] = [
    ("same values", truth(LATER), []),
    ("status", truth(LATER, status="expired"), [("status", "active", "expired")]),
    ("grace is part of the expiry", truth(LATER, status="grace_period",
                                          grace_expires_at=EXPIRY + timedelta(days=16)),
     [("status", "active", "grace_period"),
      ("expires_at", "2026-12-01T00:00:00Z",
       "2026-12-01T00:00:00Z (grace until 2026-12-17T00:00:00Z)")]),
    ("renewal off", truth(LATER, auto_renew=False), [("auto_renew", "on", "off")]),
    ("waiting downgrade", truth(LATER, renewal_product_id="weekly"),
     [("product", "monthly", "monthly (renews as weekly)")]),
    ("older truth is not drift", truth(T - timedelta(hours=1), status="expired",
                                       auto_renew=False), []),
]


@pytest.mark.parametrize(("case", "store", "expected"), CASES, ids=[c[0] for c in CASES])
def test_drift(case: str, store: Observation, expected: list[tuple[str, str, str]]) -> None:
    """Drift is exactly what `apply` would change, named by kind with both sides' values."""
    assert drift(HERE, store) == expected
    assert changes(HERE, store) == bool(expected)


def test_a_new_stamp_alone_is_no_change() -> None:
    """Truth that only restates our values changes no value, so nothing needs writing."""
    assert not changes(HERE, truth(LATER))
    assert changes(HERE, truth(LATER, account_id="acct"))
