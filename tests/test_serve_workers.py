"""`reconcile serve --workers N`: N processes on one port sharing one database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from reconcile.models import InboxEntry, SubscriptionEvent
from tests.conftest import ADMIN_TOKEN
from tests.support.apple_burst import story
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import sign_notification
from tests.support.process import ROOT, service_env, start_service, stop_service

pytestmark = pytest.mark.slow

SUBSCRIPTIONS = 20


def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def received(metrics: str) -> float:
    """The sum of `reconcile_notifications_received_total` over its labels."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("reconcile_notifications_received_total{"))


def wait_for(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_two_processes_on_one_port_process_every_notification_once(
    database_url: str, apple_root_file: Path, apple_ca: AppleTestCA
) -> None:
    """Two processes behind one port answer, apply every notification once, replace a child
    that dies, and all stop on SIGTERM."""
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL: set RECONCILE_TEST_POSTGRES_URL (scripts/postgres.sh)")
    env = service_env(database_url, apple_root_file, RECONCILE_ADMIN_TOKEN=ADMIN_TOKEN,
                      RECONCILE_WORKER_POLL_SECONDS="0.05")
    process, url = start_service(env, "--workers", "2", ready_within=120)
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        wait_for(lambda: len(children(process.pid)) >= 3, "two workers and a resource tracker")
        workers = {pid for pid in children(process.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}
        assert len(workers) == 2
        start = datetime.now(UTC) - timedelta(days=31)
        stories = [story(n, start) for n in range(SUBSCRIPTIONS)]
        bodies = [sign_notification(apple_ca, note) for s in stories for note in s.notifications]
        with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(
                lambda signed: client.post("/webhooks/apple",
                                           json={"signedPayload": signed}).status_code,
                bodies))
        assert answers == [200] * len(bodies)
        # Whichever child answers the scrape counts what every child received.
        for _ in range(4):
            assert received(httpx.get(f"{url}/metrics", timeout=30).text) == len(bodies)

        def drained() -> bool:
            with engine.connect() as connection:
                return connection.scalar(select(func.count()).select_from(InboxEntry).where(
                    InboxEntry.status == "pending")) == 0
        wait_for(drained, "the workers did not drain the inbox", timeout=120)
        with engine.connect() as connection:
            inbox = list(connection.execute(
                select(InboxEntry.id, InboxEntry.status, InboxEntry.attempts)))
            events = dict(connection.execute(
                select(SubscriptionEvent.inbox_id, func.count())
                .group_by(SubscriptionEvent.inbox_id)).tuples().all())
        assert len(inbox) == len(bodies)
        assert {(row.status, row.attempts) for row in inbox} == {("processed", 1)}
        assert events == {row.id: 1 for row in inbox}
        listed = httpx.get(f"{url}/v1/subscriptions", params={"limit": 500},
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["items"]
        states = {item["store_id"]: {key: item[key] for key in stories[0].expected}
                  for item in listed}
        assert states == {s.original_transaction_id: s.expected for s in stories}

        # A child that dies is replaced, and the port keeps answering.
        crashed = min(workers)
        os.kill(crashed, signal.SIGKILL)
        wait_for(lambda: len({pid for pid in children(process.pid)
                              if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}
                             - {crashed}) == 2, "the dead child was not replaced", timeout=120)
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=5).status_code == 200,
                 "/healthz did not answer")
        family = children(process.pid)

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        wait_for(lambda: not any(alive(pid) for pid in family), "a child outlived the parent",
                 timeout=30)
    finally:
        engine.dispose()
        stop_service(process)


@pytest.mark.parametrize(("workers", "message"), [
    ("2", "configuration error: --workers 2 needs PostgreSQL"),
    ("65", "less than or equal to 64"),
    ("0", "greater than or equal to 1"),
])
def test_workers_refused(tmp_path: Path, apple_root_file: Path, workers: str,
                         message: str) -> None:
    """More than one process on SQLite, or a count outside 1-64, is refused (exit 2) with a
    message naming it, before anything starts."""
    env = service_env(f"sqlite:///{tmp_path / 'refused.db'}", apple_root_file)
    done = subprocess.run([sys.executable, "-m", "reconcile", "serve", "--workers", workers],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr
    assert "--workers" in done.stderr
    assert not (tmp_path / "refused.db").exists()
