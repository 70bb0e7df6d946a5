"""What the schema gives the queries that must stay fast at scale, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Select, create_engine, insert, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from reconcile.models import InboxEntry
from reconcile.worker import due_entries

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
DOCUMENTS = {("subscriptions", "clock"), ("subscription_events", "detail"),
             ("purchases", "clock"), ("outbox", "payload"),
             ("reconciliation_runs", "filters"), ("reconciliation_runs", "checkpoint"),
             ("events", "data"), ("entitlement_marks", "grant"),
             ("webhook_endpoints", "event_types")}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def explain(connection: Connection, query: Select[Any]) -> str:
    """The database's plan for `query`, as one text."""
    compiled = query.compile(dialect=connection.dialect)
    params: Any = dict(compiled.params)
    if connection.dialect.name == "sqlite":
        params = tuple(
            value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
            if isinstance(value, datetime) else value
            for value in (params[name] for name in compiled.positiontup or ())
        )
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
        return "\n".join(str(row[-1]) for row in rows)
    rows = connection.exec_driver_sql(f"EXPLAIN {compiled}", params)
    return "\n".join(str(row[0]) for row in rows)


def inbox_row(n: int, status: str) -> dict[str, Any]:
    return {"channel": "apple", "notification_id": f"n-{n}", "kind": "DID_RENEW",
            "subject": f"{1000 + n % 500}", "environment": "sandbox", "payload": "x",
            "store_time": NOW, "received_at": NOW - timedelta(days=1), "status": status,
            "attempts": 1, "next_attempt_at": NOW - timedelta(days=1)}


def test_the_claim_query_reads_the_partial_due_index(engine: Engine) -> None:
    """With a large processed inbox and a little waiting work, claiming uses `ix_inbox_due`,
    which holds only pending rows."""
    with engine.begin() as connection:
        rows = [inbox_row(n, "processed") for n in range(20_000)]
        rows += [inbox_row(20_000 + n, "pending") for n in range(20)]
        connection.execute(insert(InboxEntry), rows)
        connection.exec_driver_sql("ANALYZE")
    with engine.connect() as connection:
        plan = explain(connection, due_entries(NOW, 50))
        if connection.dialect.name == "postgresql":
            definition = connection.scalar(text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_inbox_due'"))
        else:
            definition = connection.scalar(text(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_inbox_due'"))
    assert "ix_inbox_due" in plan, plan
    assert "WHERE" in str(definition), definition
    assert "pending" in str(definition), definition


def test_documents_are_jsonb_on_postgresql(engine: Engine) -> None:
    """Every document column is `jsonb` on PostgreSQL."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one JSON storage (text)")
    with engine.connect() as connection:
        types = {(table, column): kind for table, column, kind in connection.execute(text(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type IN ('json', 'jsonb')"))}
    assert types == {key: "jsonb" for key in DOCUMENTS}
