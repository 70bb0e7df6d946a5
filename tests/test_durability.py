"""Accepted input is never lost: a real server process killed right after answering."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from reconcile.config import Settings
from reconcile.db import make_engine, make_sessionmaker
from reconcile.models import InboxEntry
from reconcile.services import build_services
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.process import service_env, start_service, stop_service
from tests.support.server import FakeClock

pytestmark = pytest.mark.slow


def renewal(i: int) -> dict[str, Any]:
    start = 1_790_000_000_000 + i * 1000
    return {
        "notificationType": "DID_RENEW",
        "notificationUUID": f"22222222-0000-4000-8000-{i:012d}",
        "signedDate": start,
        "data": {
            "status": 1,
            "transaction": {
                "originalTransactionId": f"77{i:06d}", "transactionId": f"78{i:06d}",
                "productId": "com.example.phone.monthly", "purchaseDate": start,
                "expiresDate": start + 30 * 86400_000, "type": "Auto-Renewable Subscription",
            },
            "renewal": {"originalTransactionId": f"77{i:06d}", "autoRenewStatus": 1},
        },
    }


def test_killed_right_after_200_loses_nothing(
    database_url: str, apple_root_file: Path, apple_ca: AppleTestCA, settings: Settings,
) -> None:
    """Every notification answered 200 is in the inbox after SIGKILL, and is processed later."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the multi-process PostgreSQL variant lives in test_postgres_processes")
    # A worker poll far in the future keeps the child's worker from racing the kill.
    env = service_env(database_url, apple_root_file, RECONCILE_WORKER_POLL_SECONDS="3600")
    process, url = start_service(env)
    payloads = [sign_notification(apple_ca, renewal(i)) for i in range(30)]
    accepted = 0
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            for payload in payloads:
                assert client.post("/webhooks/apple",
                                   json={"signedPayload": payload}).status_code == 200
                accepted += 1
            process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        stop_service(process)  # reaps it and removes its log
    assert accepted == 30

    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        assert session.scalar(select(func.count()).select_from(InboxEntry)) == 30
    engine.dispose()

    # An hour after the crash: any lease the killed worker held has run out.
    clock = FakeClock(datetime.now(UTC) + timedelta(hours=1))
    services = build_services(settings, clock=clock)
    services.worker().drain()
    with services.sessions() as session:
        statuses = session.scalars(select(InboxEntry.status)).all()
    services.close()
    assert statuses == ["processed"] * 30
