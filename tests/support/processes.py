"""Real `reconcile serve` processes for tests and benchmarks: started, probed, killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support.apple_payloads import APP_APPLE_ID, BUNDLE_ID
from tests.support.server import free_port


def service_env(database_url: str, apple_root: Path, admin_token: str,
                **extra: str) -> dict[str, str]:
    """The environment of a service process configured like the test settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECONCILE_")}
    env.update({
        "RECONCILE_DATABASE_URL": database_url,
        "RECONCILE_ADMIN_TOKEN": admin_token,
        "RECONCILE_APPLE_BUNDLE_ID": BUNDLE_ID,
        "RECONCILE_APPLE_APP_APPLE_ID": str(APP_APPLE_ID),
        "RECONCILE_APPLE_ROOT_CERTS": str(apple_root),
        "RECONCILE_APPLE_ONLINE_CHECKS": "false",
    })
    env.update(extra)
    return env


class ServiceProcess:
    """`python -m reconcile serve` on a free port, its output in `log`."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "reconcile", "serve", "--port", str(self.port)],
                env=dict(env), stdout=out, stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /readyz answers 200 (migrations done, database reachable)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service not ready in {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, open transactions die with the connection."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]
