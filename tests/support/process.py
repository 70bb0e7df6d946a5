"""Starting the real `reconcile` command as a child process, for tests that kill it."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.apple_payloads import APP_APPLE_ID, BUNDLE_ID
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def service_env(database_url: str, apple_root: Path, **extra: str) -> dict[str, str]:
    """The environment a child `reconcile` process runs with: test trust root, no OCSP."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILE_")}
    env.update({
        "RECONCILE_DATABASE_URL": database_url,
        "RECONCILE_ADMIN_TOKEN": "process-admin-token",
        "RECONCILE_APPLE_BUNDLE_ID": BUNDLE_ID,
        "RECONCILE_APPLE_APP_APPLE_ID": str(APP_APPLE_ID),
        "RECONCILE_APPLE_ROOT_CERTS": str(apple_root),
        "RECONCILE_APPLE_ONLINE_CHECKS": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    env.update(extra)
    return env


def start_service(
    env: dict[str, str], *args: str, log: Path | None = None, ready_within: float = 30.0
) -> tuple[subprocess.Popen[bytes], str]:
    """`reconcile serve` on a free port; returns the process and its base URL once it answers.

    Its output goes to `log` (default: a new temporary file), never to a pipe nobody reads: a
    busy service would fill the pipe and block on its next log line.
    """
    port = free_port()
    process, log = _spawn(env, ["serve", "--port", str(port), *args], log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(errors="replace")[-4000:]
            stop_service(process)
            raise RuntimeError(f"service exited: {output}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    output = log.read_text(errors="replace")[-4000:]
    process.kill()
    stop_service(process)
    raise RuntimeError(f"service did not become ready: {output}")


def start_worker(env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """`reconcile worker`, the background worker alone, with its output in `log`."""
    return _spawn(env, ["worker"], log)[0]


# Logs made here for callers that gave none, by process id: deleted when the process is
# stopped, and at exit for any process its caller killed or left running.
_OWN_LOGS: dict[int, Path] = {}


@atexit.register
def _remove_own_logs() -> None:
    for log in _OWN_LOGS.values():
        log.unlink(missing_ok=True)
    _OWN_LOGS.clear()


def _spawn(
    env: dict[str, str], args: list[str], log: Path | None
) -> tuple[subprocess.Popen[bytes], Path]:
    own = log is None
    if log is None:
        handle, name = tempfile.mkstemp(prefix=f"reconcile-{args[0]}-", suffix=".log")
        os.close(handle)
        log = Path(name)
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "reconcile", *args], env=env, cwd=ROOT,
                                   stdout=output, stderr=subprocess.STDOUT)
    if own:
        _OWN_LOGS[process.pid] = log
    return process, log


def stop_service(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it will not go; a log made for it by `_spawn` goes too."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    own = _OWN_LOGS.pop(process.pid, None)
    if own is not None:
        own.unlink(missing_ok=True)
