"""`reconcile run`: the same reconciliation from the command line, with its exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.appstore import FakeAppStore
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_truth import STORE_AT, store_has, subscribe
from tests.support.process import ROOT, service_env
from tests.support.server import RunningApp

pytestmark = pytest.mark.slow


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconcile", "run", *args], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture
def cli_env(
    database_url: str, apple_root_file: Path, apple_api_settings: dict[str, Any]
) -> dict[str, str]:
    """A child process's environment: the test database and the fake App Store."""
    return service_env(
        database_url, apple_root_file,
        RECONCILE_APPLE_ENVIRONMENTS="sandbox",
        RECONCILE_APPLE_KEY_ID=apple_api_settings["apple_key_id"],
        RECONCILE_APPLE_ISSUER_ID=apple_api_settings["apple_issuer_id"],
        RECONCILE_APPLE_PRIVATE_KEY_PATH=str(apple_api_settings["apple_private_key_path"]),
        RECONCILE_APPLE_API_BASE_URL=apple_api_settings["apple_api_base_url"],
    )


def test_run_reports_repairs_and_exits_zero(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore,
    cli_env: dict[str, str],
) -> None:
    """A dry run prints the drift and exits 0 without repairing; the real run repairs it."""
    sub = subscribe(recon_app, apple_ca, "7601")
    store_has(fake_appstore, "7601", auto_renew=0)
    dry = run_cli(cli_env, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "│ status       │ done" in dry.stdout
    assert "dry run: nothing repaired" in dry.stdout
    assert "│ auto_renew │     1 │        0 │" in dry.stdout
    assert "│ checked      │ 1 of 1" in dry.stdout
    assert recon_app.client.get(f"/v1/subscriptions/{sub['id']}").json()["auto_renew"] is True

    real = run_cli(cli_env, "--channel", "apple")
    assert real.returncode == 0, real.stdout + real.stderr
    assert "│ auto_renew │     1 │        1 │" in real.stdout
    assert recon_app.client.get(f"/v1/subscriptions/{sub['id']}").json()["auto_renew"] is False
    runs = recon_app.client.get("/v1/reconciliations").json()["items"]
    assert [(r["dry_run"], r["status"]) for r in runs] == [(False, "done"), (True, "done")]


def test_failed_run_exits_non_zero(
    recon_app: RunningApp, apple_ca: AppleTestCA, fake_appstore: FakeAppStore,
    cli_env: dict[str, str],
) -> None:
    """A store that refuses every call makes the run fail, and the command exit 1."""
    subscribe(recon_app, apple_ca, "7602")
    store_has(fake_appstore, "7602", signed=STORE_AT)
    fake_appstore.fail_next("/inApps/v1/", 401, times=10)
    failed = run_cli(cli_env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "│ status       │ failed" in failed.stdout
    assert "store error" in failed.stdout
    assert "none" in failed.stdout  # no discrepancy invented from the faults


def test_unconfigured_channel_is_refused(cli_env: dict[str, str]) -> None:
    """Asking for a store without credentials says so and exits 2."""
    refused = run_cli(cli_env, "--channel", "google")
    assert refused.returncode == 2
    assert "no API credentials configured for the google store" in refused.stdout
