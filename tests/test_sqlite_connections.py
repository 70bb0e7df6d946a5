"""How the service's SQLite connections are set up (the embedded default database)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from reconcile.db import SQLITE_CACHE_KIB, make_engine, make_read_engine, migrate


def test_every_connection_has_a_small_private_page_cache(tmp_path: Path) -> None:
    """Writer and reader connections each cache at most SQLITE_CACHE_KIB of pages (SQLite's
    default is 2 MiB, which a scan of a large table filled on every pooled connection); the
    reader stays query-only and the writer in WAL mode."""
    url = f"sqlite:///{tmp_path / 'service.db'}"
    migrate(url)
    engine = make_engine(url)
    reader = make_read_engine(url, engine)
    # SQLite's own default is 2,000 KiB; at 512 KiB a reconciliation of 1,000,000 still held
    # 1-2.5 MiB more than one of 10,000 (pages dropped and refilled fragment the C heap).
    assert SQLITE_CACHE_KIB <= 128
    try:
        for name, target in (("writer", engine), ("reader", reader)):
            with target.connect() as connection:
                cache = connection.execute(text("PRAGMA cache_size")).scalar()
                assert cache == -SQLITE_CACHE_KIB, (name, cache)
        with reader.connect() as connection:
            assert connection.execute(text("PRAGMA query_only")).scalar() == 1
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        reader.dispose()
        engine.dispose()
