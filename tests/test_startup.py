"""Starting the real `reconcile` command: configuration errors in one line each (exit 2, no
traceback), warnings for unknown and half-configured settings, and the start-up summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from reconcile.config import Settings
from reconcile.config_check import ConfigError, env_name, unknown_variables
from reconcile.startup import check_database
from tests.support.process import ROOT, service_env, start_service, stop_service

pytestmark = pytest.mark.slow

BAD_SETTINGS = {
    "RECONCILE_WORKER_POLL_SECONDS": "abc",
    "RECONCILE_WORKER_JOBS": "inbox,sender",
    "RECONCILE_APPLE_ENVIRONMENTS": "prod",
    "RECONCILE_APPLE_APP_APPLE_ID": "",
    "RECONCILE_APPLE_ROOT_CERTS": "/nonexistent/AppleRootCA.der",
}


def reconcile(
    env: dict[str, str], *args: str, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """The `reconcile` command run to its end, with its output."""
    return subprocess.run([sys.executable, "-m", "reconcile", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", ["serve", "worker", "migrate", "run"])
def test_bad_settings_exit_2_with_one_line_each(
    database_url: str, apple_root_file: Path, command: str
) -> None:
    """Every bad setting is one line naming the variable, its value and what is expected."""
    env = service_env(database_url, apple_root_file, **BAD_SETTINGS)
    done = reconcile(env, command)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("configuration error")]
    assert errors == [
        "configuration error: RECONCILE_APPLE_APP_APPLE_ID='': Input should be a valid integer,"
        " unable to parse string as an integer (the variable is set but empty: unset it to use"
        " the default)",
        "configuration error: RECONCILE_APPLE_ENVIRONMENTS='prod': unknown Apple environment(s)"
        " prod: expected a comma list of production, sandbox",
        "configuration error: RECONCILE_APPLE_ROOT_CERTS='/nonexistent/AppleRootCA.der': Path"
        " does not point to a file",
        "configuration error: RECONCILE_WORKER_POLL_SECONDS='abc': Input should be a valid"
        " number, unable to parse string as a number",
        "configuration error: RECONCILE_WORKER_JOBS='inbox,sender': unknown worker job(s)"
        " sender: expected a comma list of inbox, google-acknowledge, google-ack-watchdog,"
        " google-cancel, apple-consumption, reconcile, portal-expiry, entitlement-sweep,"
        " webhook-delivery, or of them each with a leading '-' to run all but those",
    ]
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.splitlines()) == len(errors)


def test_secrets_are_masked(database_url: str, apple_root_file: Path) -> None:
    """A database URL's password never appears in an error; the driver to use is named."""
    env = service_env("postgresql://reconcile:hunter2@127.0.0.1:1/reconcile", apple_root_file)
    done = reconcile(env, "migrate")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "configuration error: RECONCILE_DATABASE_URL='postgresql://reconcile:***@127.0.0.1:1/"
        "reconcile': PostgreSQL is reached through psycopg 3 (installed with the service): "
        "write postgresql+psycopg://reconcile:***@127.0.0.1:1/reconcile"]
    assert "hunter2" not in done.stdout + done.stderr


def test_unreachable_database_exits_2(apple_root_file: Path) -> None:
    """A PostgreSQL server that is not there is one line with the driver's reason, exit 2."""
    env = service_env("postgresql+psycopg://reconcile:pw@127.0.0.1:1/reconcile", apple_root_file)
    done = reconcile(env, "serve")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("configuration error: RECONCILE_DATABASE_URL='postgresql+psycopg://"
                           "reconcile:***@127.0.0.1:1/reconcile': cannot connect: ")
    assert "Connection refused" in line


def test_debug_shows_the_traceback(database_url: str, apple_root_file: Path) -> None:
    """--debug prints the traceback of a start-up error; the exit status stays 2."""
    env = service_env(database_url, apple_root_file, RECONCILE_WORKER_POLL_SECONDS="abc")
    done = reconcile(env, "--debug", "migrate")
    assert done.returncode == 2
    assert "Traceback" in done.stderr
    assert "ValidationError" in done.stderr
    assert done.stderr.rstrip().endswith(
        "configuration error: RECONCILE_WORKER_POLL_SECONDS='abc': Input should be a valid"
        " number, unable to parse string as a number")


def test_unknown_variables_are_warned_with_the_closest_name(
    tmp_path: Path, apple_root_file: Path
) -> None:
    """Misspelt RECONCILE_* names, in the environment or .env, are warned about by name."""
    (tmp_path / ".env").write_text("RECONCILE_WORKER_POL_SECONDS=1\n")
    env = service_env(f"sqlite:///{tmp_path / 'service.db'}", apple_root_file,
                      RECONCILE_ADMIN_TOKN="secret", RECONCILE_TEST_WHATEVER="x")
    done = reconcile(env, "migrate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warnings = [line.split(" reconcile.startup ", 1)[1] for line in done.stderr.splitlines()
                if "reconcile.startup" in line]
    assert warnings == [
        "RECONCILE_ADMIN_TOKN (in the environment) is not a setting and is ignored; did you "
        "mean RECONCILE_ADMIN_TOKEN?",
        "RECONCILE_WORKER_POL_SECONDS (in .env) is not a setting and is ignored; did you mean "
        "RECONCILE_WORKER_POLL_SECONDS?",
    ]


def test_port_out_of_range_is_refused(database_url: str, apple_root_file: Path) -> None:
    """`serve --port 99999` is a usage error instead of listening on some other port."""
    done = reconcile(service_env(database_url, apple_root_file), "serve", "--port", "99999")
    assert done.returncode == 2
    assert "Invalid value for '--port'" in done.stderr
    assert "65535" in done.stderr


def test_start_summary_and_half_configured_warnings(
    database_url: str, apple_root_file: Path, tmp_path: Path
) -> None:
    """`serve` logs one summary line and a warning per half-configured part; without an admin
    token the admin API says it is disabled, not that the token is wrong."""
    env = service_env(database_url, apple_root_file,
                      RECONCILE_GOOGLE_PACKAGE_NAME="com.example.phone")
    del env["RECONCILE_ADMIN_TOKEN"], env["RECONCILE_APPLE_APP_APPLE_ID"]
    log = tmp_path / "serve.log"
    process, url = start_service(env, log=log)
    try:
        response = httpx.get(f"{url}/v1/subscriptions",
                             headers={"Authorization": "Bearer guess"})
    finally:
        stop_service(process)
    assert response.status_code == 401
    assert response.json() == {"detail": "admin API disabled: RECONCILE_ADMIN_TOKEN is not set"}
    lines = [line.split(" reconcile.startup ", 1)[1] for line in log.read_text().splitlines()
             if " reconcile.startup " in line]
    kind = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    assert lines[0].startswith(
        "starting: channels: apple (sandbox), google, portal; store APIs: none; "
        f"database: {kind} (")
    assert lines[0].endswith("admin token: NOT SET; scheduled reconciliation: off")
    assert lines[1:] == [
        "RECONCILE_ADMIN_TOKEN is not set: the admin API (/v1) refuses every request",
        "RECONCILE_APPLE_ENVIRONMENTS accepts production but RECONCILE_APPLE_APP_APPLE_ID is "
        "not set: every production notification is refused (401 MISSING_APP_APPLE_ID)",
        "RECONCILE_GOOGLE_PACKAGE_NAME is set but RECONCILE_GOOGLE_PUSH_AUDIENCE, "
        "RECONCILE_GOOGLE_PUSH_SERVICE_ACCOUNT are not: every Google push is refused (401)",
        "RECONCILE_GOOGLE_SERVICE_ACCOUNT_FILE is not set: Google notifications are recorded "
        "but cannot be processed (no Play Developer API)",
    ]
    assert "Traceback" not in log.read_text()


def test_the_access_log_can_be_turned_off(
    database_url: str, apple_root_file: Path, tmp_path: Path
) -> None:
    """uvicorn's line per request by default; RECONCILE_ACCESS_LOG=false leaves it out and the
    start-up summary says so."""
    logs = {}
    for setting in ("true", "false"):
        env = service_env(database_url, apple_root_file, RECONCILE_ACCESS_LOG=setting)
        logs[setting] = tmp_path / f"serve-{setting}.log"
        process, url = start_service(env, log=logs[setting])
        try:
            assert httpx.get(f"{url}/healthz").status_code == 200
        finally:
            stop_service(process)
    on, off = (logs[setting].read_text() for setting in ("true", "false"))
    assert '"GET /healthz HTTP/1.1" 200' in on
    assert "access log: off" not in on
    assert "/healthz" not in off
    summary = next(line for line in off.splitlines() if " reconcile.startup starting:" in line)
    assert summary.endswith("; access log: off")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nonsense", "'nonsense': not a database URL; expected sqlite:///path/to/file.db or "
                     "postgresql+psycopg://user:password@host/db"),
        ("postgres://u:pw@db/x", "'postgres://u:***@db/x': PostgreSQL is reached through "
                                 "psycopg 3 (installed with the service): write "
                                 "postgresql+psycopg://u:***@db/x"),
        ("mysql://u:pw@db/x", "'mysql://u:***@db/x': no driver installed for 'mysql'; expected "
                              "sqlite:///path/to/file.db or postgresql+psycopg://user:password@"
                              "host/db"),
        ("sqlite:////nonexistent/folder/x.db", "'sqlite:////nonexistent/folder/x.db': the folder "
                                               "/nonexistent/folder does not exist (SQLite "
                                               "creates the file, not its folder)"),
    ],
    ids=["nonsense", "postgres scheme", "no driver", "missing folder"],
)
def test_database_url_faults_are_named(url: str, expected: str) -> None:
    """Each kind of unusable database URL is one line saying what to write instead."""
    with pytest.raises(ConfigError) as raised:
        check_database(url)
    assert raised.value.lines == [f"RECONCILE_DATABASE_URL={expected}"]


def test_new_settings_are_known_without_a_table() -> None:
    """The known names are every Settings field, so a new field is never warned about."""
    environ = {env_name(name): "1" for name in Settings.model_fields}
    assert unknown_variables(environ, Path("/nonexistent/.env")) == []
    assert unknown_variables({"RECONCILE_APPLE_BUNDLE": "x"}, Path("/nonexistent/.env")) == [
        "RECONCILE_APPLE_BUNDLE (in the environment) is not a setting and is ignored; did you "
        "mean RECONCILE_APPLE_BUNDLE_ID?"]
