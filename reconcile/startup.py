"""What a command checks and says when it starts: a database it can reach, one line of what
is enabled, and a warning for each part that is configured only half-way."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from reconcile.config import Settings
from reconcile.config_check import ConfigError, env_name, mask

DATABASE = env_name("database_url")
_EXPECTED = "expected sqlite:///path/to/file.db or postgresql+psycopg://user:password@host/db"
_APPLE_API = ("apple_key_id", "apple_issuer_id", "apple_private_key_path")
_PUSH = ("google_push_audience", "google_push_service_account")


def check_database(url: str, *, connect_timeout: int = 10) -> None:
    """ConfigError unless `url` names a database this service has a driver for and can reach."""
    shown = f"{DATABASE}={mask('database_url', url)!r}"
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise ConfigError([f"{shown}: not a database URL; {_EXPECTED}"]) from error
    if parsed.get_backend_name() in ("postgres", "postgresql") and (
        parsed.drivername != "postgresql+psycopg"
    ):
        fixed = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=True)
        raise ConfigError([f"{shown}: PostgreSQL is reached through psycopg 3 (installed with "
                           f"the service): write {fixed}"])
    try:
        parsed.get_dialect().import_dbapi()
    except Exception as error:
        raise ConfigError([f"{shown}: no driver installed for {parsed.drivername!r}; "
                           f"{_EXPECTED}"]) from error
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_folder(shown, parsed)
        return
    engine = create_engine(parsed, connect_args={"connect_timeout": connect_timeout}
                           if parsed.get_backend_name() == "postgresql" else {})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        raise ConfigError([f"{shown}: cannot connect: {reason}"]) from error
    finally:
        engine.dispose()


def _check_sqlite_folder(shown: str, url: URL) -> None:
    database = url.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = Path(database).expanduser().resolve().parent
    if not folder.is_dir():
        raise ConfigError([f"{shown}: the folder {folder} does not exist (SQLite creates the "
                           "file, not its folder)"])


def summary(settings: Settings) -> str:
    """One line: channels, environments, store APIs, database kind, admin token."""
    channels = []
    if settings.apple_bundle_id:
        channels.append(f"apple ({', '.join(_apple_environments(settings)) or 'no environment'})")
    if settings.google_package_name:
        channels.append("google")
    channels.append("portal")
    apis = [name for name, on in (("App Store Server API", _apple_api(settings)),
                                  ("Play Developer API", _play_api(settings))) if on]
    database = make_url(settings.database_url)
    where = database.database if database.get_backend_name() == "sqlite" else (
        f"{database.host or 'local'}:{database.port or 'default'}/{database.database or ''}")
    interval = settings.reconcile_interval_minutes
    return "; ".join([
        f"channels: {', '.join(channels)}",
        f"store APIs: {', '.join(apis) or 'none'}",
        f"database: {database.get_backend_name()} ({where})",
        f"admin token: {'set' if _admin_token(settings) else 'NOT SET'}",
        f"scheduled reconciliation: {f'every {interval:g} min' if interval else 'off'}",
        *([f"worker jobs: {', '.join(settings.worker_jobs)}"] if settings.worker_jobs else []),
        *([] if settings.access_log else ["access log: off"]),
    ])


def warnings(settings: Settings) -> list[str]:
    """One line for each part configured only half-way, saying what it leads to."""
    found = []
    if not _admin_token(settings):
        found.append(f"{env_name('admin_token')} is not set: the admin API (/v1) refuses "
                     "every request")
    if settings.apple_bundle_id:
        if "production" in settings.apple_environments and settings.apple_app_apple_id is None:
            found.append(f"{env_name('apple_environments')} accepts production but "
                         f"{env_name('apple_app_apple_id')} is not set: every production "
                         "notification is refused (401 MISSING_APP_APPLE_ID)")
        found.extend(_partly("the App Store Server API is not used", settings, _APPLE_API))
    else:
        found.extend(_ignored(settings, "apple_", "apple_bundle_id", "the Apple channel is off"))
    if settings.google_package_name:
        missing = [env_name(name) for name in _PUSH if not getattr(settings, name)]
        if missing:
            found.append(f"{env_name('google_package_name')} is set but {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not: every Google push is "
                         "refused (401)")
        if not settings.google_service_account_file:
            found.append(f"{env_name('google_service_account_file')} is not set: Google "
                         "notifications are recorded but cannot be processed (no Play "
                         "Developer API)")
    else:
        found.extend(_ignored(settings, "google_", "google_package_name",
                              "the Google channel is off"))
    if settings.reconcile_interval_minutes and not (_apple_api(settings) or _play_api(settings)):
        found.append(f"{env_name('reconcile_interval_minutes')} is set but no store API is "
                     "configured: scheduled reconciliations check nothing")
    return found


def _partly(effect: str, settings: Settings, names: tuple[str, ...]) -> list[str]:
    given = [name for name in names if getattr(settings, name)]
    if not given or len(given) == len(names):
        return []
    missing = [env_name(name) for name in names if name not in given]
    return [f"{', '.join(env_name(name) for name in given)} set but {', '.join(missing)} "
            f"not: {effect}"]


def _ignored(settings: Settings, prefix: str, switch: str, effect: str) -> list[str]:
    """Settings of a channel given while the channel itself is not configured."""
    given = sorted(name for name in settings.model_fields_set
                   if name.startswith(prefix) and name != switch)
    if not given:
        return []
    return [f"{', '.join(env_name(name) for name in given)} set but {env_name(switch)} is "
            f"not: {effect}"]


def _apple_environments(settings: Settings) -> list[str]:
    return [name for name in settings.apple_environments
            if name != "production" or settings.apple_app_apple_id is not None]


def _apple_api(settings: Settings) -> bool:
    return bool(settings.apple_bundle_id and all(getattr(settings, n) for n in _APPLE_API))


def _play_api(settings: Settings) -> bool:
    return bool(settings.google_package_name and settings.google_service_account_file)


def _admin_token(settings: Settings) -> bool:
    token = settings.admin_token
    return token is not None and bool(token.get_secret_value())
