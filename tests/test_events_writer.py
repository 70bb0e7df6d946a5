"""The event writer: the bulk path emits what `ingest` emits, sequences stay gapless under
concurrent writers, the feed never skips a late commit, and the sweep tells time-only changes."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from reconcile.db import transaction
from reconcile.ingest import ingest
from reconcile.ingest_many import ingest_many
from reconcile.notify import service as notify
from reconcile.notify.access import due_accounts
from reconcile.notify.models import Event
from reconcile.notify.sweep import EntitlementSweep
from reconcile.outcomes import Normalised
from reconcile.state import Channel, Observation, Stamp
from tests.support.events import NOW, active, emitting_sessions, events_after, observe, top


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    with emitting_sessions(database_url) as made:
        yield made


def _note(prefix: str, store: str, minute: int, **fields: Any) -> Normalised:
    stamp = Stamp(NOW - timedelta(hours=2) + timedelta(minutes=minute), f"{store}:{minute}")
    account = fields.pop("account", "a1")
    return Normalised(kind="TEST", subscription=Observation(
        channel=Channel.APPLE, store_id=f"{prefix}-{store}", stamp=stamp, kind="TEST",
        environment="sandbox", fields={**fields, "account_id": f"{prefix}-{account}"}))


def _batch(prefix: str) -> list[tuple[int, Normalised]]:
    """Renewal then cancellation of one plan, a new plan, a billing failure, a duplicate."""
    later = NOW + timedelta(days=60)
    return [
        (1, _note(prefix, "known", 10, expires_at=later)),
        (2, _note(prefix, "known", 11, auto_renew=False)),
        (3, _note(prefix, "new", 1, account="a2", **{
            k: v for k, v in active().items() if k != "account_id"})),
        (4, _note(prefix, "failing", 12, account="a3", status="billing_retry")),
        (5, _note(prefix, "same", 0, account="a4", **{
            k: v for k, v in active().items() if k != "account_id"})),
    ]


def _seed(session: Session, prefix: str) -> None:
    for store, account in (("known", "a1"), ("failing", "a3"), ("same", "a4")):
        ingest(session, _note(prefix, store, 0, account=account, **{
            k: v for k, v in active().items() if k != "account_id"}), source="apple", now=NOW)


def _shape(events: list[Event], prefix: str) -> list[str]:
    """The events with ids and the prefix made neutral, so two runs compare equal."""
    names: dict[str, str] = {}

    def neutral(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"sub_{len(names)}")

    return [re.sub(r"sub_[0-9a-f]{24}", neutral, json.dumps(
        [e.type, e.account_id, e.sequence, e.subscription_id, e.data], sort_keys=True
    ).replace(prefix, "P")) for e in events]


def test_the_bulk_path_emits_exactly_what_ingest_emits(sessions: sessionmaker[Session]) -> None:
    """One batch through `ingest_many` and the same batch through `ingest`, one outcome at a
    time in the worker's order, leave the same events (types, accounts, sequences, data)."""
    shapes = []
    for prefix, bulk in (("bulk", True), ("single", False)):
        with transaction(sessions) as session:
            _seed(session, prefix)
        with transaction(sessions) as session:
            start = top(session)
        with transaction(sessions) as session:
            items = _batch(prefix)
            if bulk:
                assert ingest_many(session, items, source="apple", now=NOW) == {1, 2, 3, 4, 5}
            else:
                for inbox_id, outcome in sorted(items, key=lambda item: (
                        item[1].subscription.store_id if item[1].subscription else "",
                        item[0])):
                    ingest(session, outcome, source="apple", now=NOW, inbox_id=inbox_id)
        with transaction(sessions) as session:
            shapes.append(_shape(events_after(session, start), prefix))
    assert shapes[0] == shapes[1]
    assert [tuple(json.loads(s)[:2]) for s in shapes[0]] == [
        ("subscription.billing_issue", "P-a3"),
        ("subscription.renewed", "P-a1"), ("subscription.renewal_disabled", "P-a1"),
        ("subscription.started", "P-a2"),
        ("entitlement.granted", "P-a2"), ("entitlement.granted", "P-a2"),
        ("entitlement.revoked", "P-a3"), ("entitlement.revoked", "P-a3")]


def test_the_generic_emit_numbers_events_at_commit_and_a_rollback_leaves_no_gap(
    sessions: sessionmaker[Session],
) -> None:
    """`emit` (what the credits ledger calls) gives the account's next sequence at commit; a
    rolled-back transaction takes no number; an unknown type is refused."""
    with pytest.raises(ValueError, match="unknown event type"), transaction(sessions) as session:
        notify.emit(session, type="credits.spent", account_id="acct", data={}, now=NOW)
    def failing() -> None:
        with transaction(sessions) as session:
            notify.emit(session, type="credits.granted", account_id="acct", data={}, now=NOW)
            raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        failing()
    with transaction(sessions) as session:
        for amount in (5, -2):
            notify.emit(session, type="credits.debited", account_id="acct",
                        data={"entry": {"amount": amount}}, now=NOW)
    with transaction(sessions) as session:
        found = [notify.event_json(e) for e in events_after(session, 0)]
    assert [(e["type"], e["sequence"], e["data"]) for e in found] == [
        ("credits.debited", 1, {"entry": {"amount": 5}}),
        ("credits.debited", 2, {"entry": {"amount": -2}})]
    assert set(found[0]) == {"id", "type", "created_at", "account_id", "sequence", "data"}
    assert found[0]["id"].startswith("evt_")
    assert found[0]["created_at"] == "2026-11-01T12:00:00Z"


def test_one_commit_for_many_accounts_numbers_each_account_and_the_feed(
    sessions: sessionmaker[Session],
) -> None:
    """Commits naming 7 accounts, then 13 (7 known, 6 new; the counters are locked in chunks
    of powers of two): each account's sequence goes on from its own last number, and the
    feed's positions run on without a gap or a repeat."""
    first = [f"acct-{n:02d}" for n in range(7)]
    second = [f"acct-{n:02d}" for n in range(13)]
    for accounts in (first, second, second[::-1]):
        with transaction(sessions) as session:
            for account in accounts:
                notify.emit(session, type="credits.granted", account_id=account,
                            data={"entry": {"amount": 1}}, now=NOW)
    with transaction(sessions) as session:
        found = list(events_after(session, 0))
    assert [e.position for e in found] == list(range(1, 7 + 13 + 13 + 1))
    for account in second:
        told = 3 if account in first else 2
        assert [e.sequence for e in found if e.account_id == account] == list(range(1, told + 1))


def test_sequences_stay_gapless_with_writers_racing_on_one_account(
    sessions: sessionmaker[Session],
) -> None:
    """Eight threads, each committing events for the same two accounts in many transactions,
    leave each account numbered 1..n exactly once, and feed positions unique."""
    def write(n: int) -> None:
        for i in range(10):
            with transaction(sessions) as session:
                for account in ("acct-x", "acct-y")[::1 if (n + i) % 2 else -1]:
                    notify.emit(session, type="credits.granted", account_id=account,
                                data={"n": n, "i": i}, now=NOW)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    with transaction(sessions) as session:
        found = events_after(session, 0)
    for account in ("acct-x", "acct-y"):
        assert sorted(e.sequence or 0 for e in found if e.account_id == account) == list(
            range(1, 81))
        mine = [e.sequence for e in found if e.account_id == account]
        assert mine == sorted(mine, key=lambda s: s or 0)  # feed order is sequence order
    assert len({e.position for e in found}) == 160


def _reader(database_url: str) -> Any:
    """A plain reader: on SQLite it must not take the write lock a writer holds open."""
    return create_engine(database_url, poolclass=NullPool)


def _feed(reader: Any, after: int) -> list[tuple[int, str]]:
    with reader.connect() as connection:
        return [tuple(row) for row in connection.execute(text(
            "SELECT position, type FROM events WHERE position > :p ORDER BY position"),
            {"p": after})]


def test_the_feed_never_skips_an_event_that_commits_late(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """Writer A starts first and changes state; writer B commits an event while A is still
    open; A commits after. A reader that followed the feed's position past B's event still
    gets A's: positions are taken at commit, in commit order."""
    reader = _reader(database_url)
    with emitting_sessions(database_url) as other:
        first = sessions()
        first.begin()
        observe(first, "otx-late", 1, active("acct-late"))  # state written, event not yet
        done = threading.Event()

        def commit_b() -> None:
            with transaction(other) as session:
                notify.emit(session, type="credits.granted", account_id="acct-early",
                            data={}, now=NOW)
            done.set()

        writer_b = threading.Thread(target=commit_b)
        writer_b.start()
        postgres = database_url.startswith("postgresql")
        # On PostgreSQL B commits while A is open; SQLite has one writer, so B waits for A.
        assert done.wait(10 if postgres else 0.5) is postgres
        seen = _feed(reader, 0)
        assert seen == ([(1, "credits.granted")] if postgres else [])
        cursor = seen[-1][0] if seen else 0
        first.commit()
        first.close()
        writer_b.join(30)
        rest = _feed(reader, cursor)
    reader.dispose()
    types = [kind for _, kind in seen + rest]
    assert sorted(types) == sorted(["credits.granted", "subscription.started",
                                    "entitlement.granted", "entitlement.granted"])
    positions = [p for p, _ in seen + rest]
    assert positions == sorted(positions) == list(range(1, 5))


def test_a_writer_holding_its_position_holds_back_later_commits(
    database_url: str, sessions: sessionmaker[Session]
) -> None:
    """Once A has its feed position and has not committed, B's event cannot commit ahead of
    it: the reader sees neither, then A's before B's."""
    reader = _reader(database_url)
    with emitting_sessions(database_url) as other:
        first = sessions()
        first.begin()
        notify.emit(first, type="credits.granted", account_id="acct-a", data={}, now=NOW)
        notify.settle(first)  # what the commit does first: number and insert the events
        done = threading.Event()

        def commit_b() -> None:
            with transaction(other) as session:
                notify.emit(session, type="credits.debited", account_id="acct-b", data={},
                            now=NOW)
            done.set()

        writer_b = threading.Thread(target=commit_b)
        writer_b.start()
        assert not done.wait(0.5)
        assert _feed(reader, 0) == []
        first.commit()
        first.close()
        writer_b.join(30)
        assert _feed(reader, 0) == [(1, "credits.granted"), (2, "credits.debited")]
    reader.dispose()


def test_the_sweep_tells_access_that_ended_by_time_alone_once(
    sessions: sessionmaker[Session],
) -> None:
    """A plan that runs out with no store message is revoked by the next sweep after its
    end, once; the sweep looks only at accounts whose end passed, and runs on its interval."""
    with transaction(sessions) as session:
        observe(session, "otx-short", 1, active("acct-short",
                                                 expires_at=NOW + timedelta(hours=1)))
        observe(session, "otx-long", 1, active("acct-long"))
    with transaction(sessions) as session:
        start = top(session)
    sweep = EntitlementSweep(sessions, timedelta(hours=2))
    assert sweep.run_once(NOW) == 0
    with transaction(sessions) as session:
        assert due_accounts(session, NOW + timedelta(hours=1), 10) == ["acct-short"]
    assert sweep.run_once(NOW + timedelta(hours=1)) == 0  # its interval is not over
    assert sweep.run_once(NOW + timedelta(hours=2)) == 1
    assert sweep.run_once(NOW + timedelta(hours=4)) == 0
    with transaction(sessions) as session:
        found = events_after(session, start)
        assert due_accounts(session, NOW + timedelta(days=90), 10) == ["acct-long"]
    assert [(e.type, e.account_id, e.data["entitlement"]["entitlement"]) for e in found] == [
        ("entitlement.revoked", "acct-short", "calling"),
        ("entitlement.revoked", "acct-short", "pro")]
    assert found[0].data["entitlement"]["active"] is False
    assert found[0].data["previous"] == {"active": True}
    with transaction(sessions) as session:
        # The store's own expiry later tells the subscription's end, not the access again.
        observe(session, "otx-short", 2, {"status": "expired"},
                now=NOW + timedelta(hours=4))
        assert [e.type for e in session.scalars(
            select(Event).where(Event.position > found[-1].position))] == []
    with transaction(sessions) as session:
        assert [e.type for e in events_after(session, found[-1].position)] == [
            "subscription.expired"]


def test_an_event_emitted_in_a_rolled_back_savepoint_is_dropped(
    sessions: sessionmaker[Session],
) -> None:
    """A savepoint that rolls back (a reconciliation repair losing a race) takes its events
    with it; what was emitted outside it stays."""
    with transaction(sessions) as session:
        notify.emit(session, type="credits.granted", account_id="acct", data={"kept": 1},
                    now=NOW)
        savepoint = session.begin_nested()
        notify.emit(session, type="credits.granted", account_id="acct", data={"kept": 0},
                    now=NOW)
        savepoint.rollback()
        with session.begin_nested():
            notify.emit(session, type="credits.debited", account_id="acct", data={"kept": 2},
                        now=NOW)
    with transaction(sessions) as session:
        found = events_after(session, 0)
    assert [(e.type, e.sequence, e.data) for e in found] == [
        ("credits.granted", 1, {"kept": 1}), ("credits.debited", 2, {"kept": 2})]
