"""The test helpers clean up after themselves: no file or process outlives a test."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.support.process import service_env, start_worker, stop_service


def _logs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("reconcile-*.log"))


def test_a_stopped_process_leaves_no_log_behind(database_url: str, apple_root_file: Path) -> None:
    """A child started without a log of the caller's writes to a temporary file that goes
    when the child is stopped."""
    before = _logs()
    process = start_worker(service_env(database_url, apple_root_file))
    assert _logs() - before  # it does write somewhere while it runs
    stop_service(process)
    assert process.poll() is not None
    assert _logs() - before == set()
