"""Starting the real `reconcile` command as a child process, for tests that kill it."""

from __future__ import annotations

import os
import subprocess
import sys
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


def start_service(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`reconcile serve` on a free port; returns the process and its base URL once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconcile", "serve", "--port", str(port), *args],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"service exited: {output}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("service did not become ready")
