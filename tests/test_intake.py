"""Group-commit intake: a batch of notifications goes in as a few multi-row statements."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from reconcile.db import make_engine, make_sessionmaker, transaction
from reconcile.models import InboxEntry
from webhooks.intake import Incoming, Intake, insert_entries

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def incoming(n: int, channel: str = "apple") -> Incoming:
    return Incoming(channel=channel, notification_id=f"n-{n}", kind="DID_RENEW",
                    payload=f"payload-{n}", store_time=NOW, subject=f"s-{n % 7}",
                    environment="sandbox")


def test_batches_report_new_and_known_entries(database_url: str) -> None:
    """Every size crossing the statements' chunk sizes; repeats inside a batch and across
    batches are duplicates; the same id on another channel is new; each row keeps its fields."""
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    try:
        first = [incoming(n) for n in range(70)] + [incoming(3), incoming(69)]
        with transaction(sessions) as session:
            assert insert_entries(session, [(i, NOW) for i in first]) == [True] * 70 + [False] * 2
        second = [incoming(n) for n in range(65, 135)] + [incoming(1, channel="google")]
        with transaction(sessions) as session:
            assert insert_entries(session, [(i, NOW) for i in second]) == (
                [False] * 5 + [True] * 65 + [True])
        with sessions() as session:
            rows = session.scalars(select(InboxEntry).order_by(InboxEntry.id)).all()
        assert len(rows) == 136
        assert {(r.channel, r.notification_id) for r in rows} == (
            {("apple", f"n-{n}") for n in range(135)} | {("google", "n-1")})
        row = next(r for r in rows if r.notification_id == "n-42")
        assert (row.kind, row.payload, row.subject, row.environment, row.status) == (
            "DID_RENEW", "payload-42", "s-0", "sandbox", "pending")
        assert row.store_time == NOW
        assert row.received_at == NOW
        assert row.next_attempt_at == NOW
        assert row.processed_at is None
    finally:
        engine.dispose()


def test_intake_answers_each_request_after_its_commit(database_url: str) -> None:
    """Submitted notifications resolve to new / duplicate once committed."""
    engine = make_engine(database_url)
    intake = Intake(make_sessionmaker(engine))
    try:
        futures = [intake.submit(incoming(n % 40), NOW) for n in range(100)]
        outcomes = [future.result(10) for future in futures]
        assert outcomes.count(True) == 40
        assert outcomes[:40] == [True] * 40
    finally:
        intake.close()
        engine.dispose()


def test_intake_signals_only_new_work(database_url: str) -> None:
    """The worker is woken by a commit that recorded something to process; not by a repeat, not
    by a notification kept only as rejected."""
    engine = make_engine(database_url)
    woken: list[int] = []
    intake = Intake(make_sessionmaker(engine), on_recorded=lambda: woken.append(1))
    try:
        assert intake.submit(incoming(1), NOW).result(10)
        assert woken == [1]
        assert not intake.submit(incoming(1), NOW).result(10)
        rejected = Incoming(channel="google", notification_id="bad", kind="UNKNOWN",
                            payload="{}", status="rejected", error="not a notification")
        assert intake.submit(rejected, NOW).result(10)
        assert woken == [1]
    finally:
        intake.close()
        engine.dispose()
