"""Shared fixtures: test CAs and keys, settings on a fresh database, fakes, the app over HTTP."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from reconcile.config import Settings
from reconcile.db import migrate
from reconcile.services import build_services
from tests.fakes.appstore import FakeAppStore
from tests.fakes.play import FakePlay
from tests.support.apple_ca import AppleTestCA
from tests.support.apple_payloads import APP_APPLE_ID, BUNDLE_ID
from tests.support.google import (
    AUDIENCE,
    PACKAGE,
    PUSH_ACCOUNT,
    Pusher,
    service_account_pem,
    write_service_account,
)
from tests.support.oidc import OidcIssuer
from tests.support.postgres import POSTGRES_ENV, PostgresDatabases
from tests.support.purchases import APP_TOKEN, CATALOG, Shop
from tests.support.server import FakeClock, RunningApp, serve_in_thread

ADMIN_TOKEN = "test-admin-token"
APPLE_KEY_ID = "KEY1234567"
APPLE_ISSUER_ID = "57246542-96fe-1a63-e053-0824d011072a"


@pytest.fixture(scope="session")
def apple_ca() -> AppleTestCA:
    return AppleTestCA.create()


@pytest.fixture(scope="session")
def apple_root_file(apple_ca: AppleTestCA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("certs") / "test-root.der"
    path.write_bytes(apple_ca.root_der)
    return path


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """The PostgreSQL test server named by RECONCILE_TEST_POSTGRES_URL, with a migrated template."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"no PostgreSQL test server ({POSTGRES_ENV} is not set)")
    databases = PostgresDatabases(admin_url)
    databases.create_template()
    yield databases
    databases.close()


@pytest.fixture
def database_url(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database for one test.

    A new PostgreSQL database when RECONCILE_TEST_POSTGRES_URL names a test server, else the
    database at RECONCILE_TEST_DATABASE_URL, else an SQLite file of the test's own.
    """
    if os.environ.get(POSTGRES_ENV):
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        url = databases.create()
        yield url
        databases.drop(url)
        return
    url = os.environ.get("RECONCILE_TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'test.db'}"
    migrate(url)
    yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_settings(database_url: str, apple_root_file: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "admin_token": ADMIN_TOKEN,
            "apple_bundle_id": BUNDLE_ID,
            "apple_app_apple_id": APP_APPLE_ID,
            "apple_root_certs": [apple_root_file],
            "apple_online_checks": False,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> Iterator[RunningApp]:
    """The service on a fresh database, over real HTTP, with the worker driven by the test."""
    services = build_services(settings, clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


@pytest.fixture(scope="session")
def apple_api_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    """The App Store Server API key (.p8) the service signs its API tokens with."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path_factory.mktemp("keys") / "AuthKey_TEST.p8"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key, path


@pytest.fixture
def fake_appstore(
    apple_ca: AppleTestCA, apple_api_key: tuple[ec.EllipticCurvePrivateKey, Path]
) -> Iterator[FakeAppStore]:
    """A running fake App Store Server API; the test fails if anything forbidden was called."""
    with FakeAppStore(apple_ca, BUNDLE_ID, api_public_key=apple_api_key[0].public_key(),
                      key_id=APPLE_KEY_ID, issuer_id=APPLE_ISSUER_ID,
                      app_apple_id=APP_APPLE_ID, history_max_age_days=None) as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture
def apple_api_settings(
    fake_appstore: FakeAppStore, apple_api_key: tuple[ec.EllipticCurvePrivateKey, Path]
) -> dict[str, Any]:
    """Settings overrides that point the service's App Store API client at the fake."""
    return {
        "apple_key_id": APPLE_KEY_ID,
        "apple_issuer_id": APPLE_ISSUER_ID,
        "apple_private_key_path": apple_api_key[1],
        "apple_api_base_url": fake_appstore.url,
    }


def no_sleep(_seconds: float) -> None:
    """Store clients back off through this in tests: retries happen at once."""


@pytest.fixture
def apple_app(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any], clock: FakeClock
) -> Iterator[RunningApp]:
    """The service with its App Store Server API client pointed at the fake App Store (one
    attempt per call, so the worker's own retry with backoff is what a test sees)."""
    services = build_services(make_settings(**apple_api_settings, apple_api_attempts=1),
                              clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


@pytest.fixture
def recon_app(
    make_settings: Callable[..., Settings], apple_api_settings: dict[str, Any], clock: FakeClock
) -> Iterator[RunningApp]:
    """The service with the App Store API pointed at the fake, its client retrying without
    sleeping (reconciliation reports what is left after the client's retries).

    Sandbox only: the fake is one environment, and with both configured each history read
    would be made twice against it."""
    settings = make_settings(**apple_api_settings, apple_environments=["sandbox"])
    services = build_services(settings, clock=clock, sleep=no_sleep)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


@pytest.fixture(scope="session")
def oidc() -> Iterator[OidcIssuer]:
    """One push-token issuer for the session; tests that rotate or break it make their own."""
    with OidcIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="session")
def service_account_key() -> str:
    return service_account_pem()


@pytest.fixture
def fake_play() -> Iterator[FakePlay]:
    """A running fake Play API; at teardown it proves no refund, revoke or defer was requested."""
    with FakePlay(package_name=PACKAGE) as play:
        yield play
        play.assert_clean()


@pytest.fixture
def make_google_settings(
    make_settings: Callable[..., Settings],
    fake_play: FakePlay,
    oidc: OidcIssuer,
    service_account_key: str,
    tmp_path: Path,
) -> Callable[..., Settings]:
    """Settings with the Google channel pointed at the fakes (overrides win)."""
    key_file = write_service_account(tmp_path / "service-account.json", service_account_key,
                                     fake_play.token_uri)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "google_package_name": PACKAGE,
            "google_service_account_file": key_file,
            "google_api_endpoint": fake_play.url,
            "google_push_audience": AUDIENCE,
            "google_push_service_account": PUSH_ACCOUNT,
            "google_oidc_certs_url": oidc.certs_url,
            "google_calls_per_minute": 60000,
            "google_api_backoff_seconds": 0,
            "google_consumable_products": ["credits_100"],
        }
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
def google_app(
    make_google_settings: Callable[..., Settings], clock: FakeClock
) -> Iterator[RunningApp]:
    """The service with both channels, Google pointed at FakePlay and the OIDC issuer."""
    services = build_services(make_google_settings(), clock=clock)
    with serve_in_thread(services, ADMIN_TOKEN) as running:
        yield running
    services.close()


@pytest.fixture
def pusher(google_app: RunningApp, oidc: OidcIssuer) -> Pusher:
    return Pusher(google_app.client, oidc)


@pytest.fixture
def shop_for(
    make_google_settings: Callable[..., Settings],
    apple_api_settings: dict[str, Any],
    apple_ca: AppleTestCA,
    fake_appstore: FakeAppStore,
    fake_play: FakePlay,
    oidc: OidcIssuer,
    clock: FakeClock,
) -> Iterator[Callable[[dict[str, Any]], Shop]]:
    """Builds the service a purchases fixture describes (catalog, app token, App Store API or
    not, transfer policy), each over real HTTP beside the fake stores."""
    running: list[tuple[Any, Any]] = []

    def make(fixture: dict[str, Any]) -> Shop:
        overrides: dict[str, Any] = {
            "catalog_file": CATALOG, "app_token": APP_TOKEN,
            "transfer_policy": fixture.get("transfer_policy", "keep"),
            "google_api_retries": 0, **fixture.get("settings", {}),
        }
        if fixture.get("api"):
            # The fake is one environment (sandbox): ask only it.
            overrides = {**apple_api_settings, "apple_environments": ["sandbox"], **overrides}
        services = build_services(make_google_settings(**overrides), clock=clock, sleep=no_sleep)
        context = serve_in_thread(services, ADMIN_TOKEN)
        app = context.__enter__()
        running.append((context, services))
        return Shop(app, fixture, apple_ca, fake_appstore, fake_play, oidc, clock)

    yield make
    for context, services in running:
        context.__exit__(None, None, None)
        services.close()
