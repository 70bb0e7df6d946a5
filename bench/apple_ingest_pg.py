"""The Apple ingest benchmark (bench/apple_ingest.py) on a throwaway PostgreSQL server.

    python -m bench.apple_ingest_pg                          # 2 processes, default load
    python -m bench.apple_ingest_pg --processes 4 --notifications 6000 --clients 16
    python -m bench.apple_ingest_pg --scaling 2 --rounds 2   # serve --workers 1 against 2

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


def fresh_database(url: str, name: str) -> str:
    """The URL of a new empty database `name` on the server of `url`."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def scaling(url: str, workers: int, rounds: int, rest: list[str]) -> dict[str, Any]:
    """`serve --workers 1` against `serve --workers N`, alternating, each round on a fresh
    database of one server: the ratio of the median processed rates."""
    rates: dict[int, list[float]] = {1: [], workers: []}
    for number in range(rounds):
        for count in (1, workers):
            database = fresh_database(url, f"bench_{number}_{count}")
            figures = apple_ingest.main([*rest, "--database-url", database, "--processes", "1",
                                         "--serve-workers", str(count)])
            rates[count].append(figures["processed_per_second"])
    medians = {count: sorted(values)[len(values) // 2] for count, values in rates.items()}
    ratio = medians[workers] / medians[1]
    print(f"processed per second, serve --workers 1: {rates[1]}; --workers {workers}: "
          f"{rates[workers]}; ratio of medians {ratio:.2f}")
    return {"rates": rates, "ratio": ratio}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--scaling", type=int, default=0, metavar="N",
                        help="compare `serve --workers 1` with `serve --workers N`")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of --scaling")
    args, rest = parser.parse_known_args(argv)
    if args.scaling:
        with throwaway_postgres() as url:
            return scaling(url, args.scaling, args.rounds, rest)
    with throwaway_postgres() as url:
        return apple_ingest.main([*rest, "--database-url", url,
                                  "--processes", str(args.processes)])


if __name__ == "__main__":
    main()
