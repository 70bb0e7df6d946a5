"""The Apple ingest benchmark (bench/apple_ingest.py) on a throwaway PostgreSQL server.

    python -m bench.apple_ingest_pg                          # 2 processes, default load
    python -m bench.apple_ingest_pg --processes 4 --notifications 6000 --clients 16

Starts a PostgreSQL server with scripts/postgres.sh (as an unprivileged user, in a temporary
directory), creates an empty database, runs `bench.apple_ingest` against it with `--processes`
service processes (default 2), and stops the server afterwards. Every other option is passed
through to bench.apple_ingest. To use a server of your own, run bench.apple_ingest directly
with `--database-url postgresql+psycopg://...`.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from bench import apple_ingest

POSTGRES_SH = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """The URL of an empty database on a fresh PostgreSQL server, removed afterwards."""
    exports = subprocess.run(
        [str(POSTGRES_SH), "start"], check=True, capture_output=True, text=True
    ).stdout
    values = dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
    try:
        admin = values["RECONCILE_TEST_POSTGRES_URL"]
        engine = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as connection:
            connection.execute(text("CREATE DATABASE bench"))
        engine.dispose()
        yield make_url(admin).set(database="bench").render_as_string(hide_password=False)
    finally:
        subprocess.run([str(POSTGRES_SH), "stop", values["RECONCILE_TEST_POSTGRES_DIR"]],
                       check=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=2)
    args, rest = parser.parse_known_args(argv)
    with throwaway_postgres() as url:
        return apple_ingest.main([*rest, "--database-url", url,
                                  "--processes", str(args.processes)])


if __name__ == "__main__":
    main()
