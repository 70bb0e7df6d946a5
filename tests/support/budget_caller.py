"""One process calling a shared store-call budget as fast as it can (tests/test_call_budget.py).

    python -m tests.support.budget_caller DATABASE_URL CLOCK_FILE QUOTA CALLS

Prints `ready` once set up, starts on a line on standard input (so that every process starts
together), and prints the shared clock's time of each grant, one a line, as JSON at the end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from reconcile.budget.limiter import SharedRateLimiter
from reconcile.db import make_engine, make_sessionmaker
from tests.support.shared_clock import SharedClock


def main(argv: list[str]) -> None:
    database_url, clock_file, quota, calls = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    engine = make_engine(database_url)
    clock = SharedClock(clock_file)
    limiter = SharedRateLimiter(make_sessionmaker(engine), "test-store", quota, 60.0,
                                clock=clock.now, sleep=clock.sleep)
    print("ready", flush=True)
    sys.stdin.readline()
    granted = []
    for _ in range(calls):
        limiter.acquire()
        granted.append(clock.last)  # the reading the limiter checked its token at
    print(json.dumps(granted), flush=True)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])
