"""Configuration: one `Settings` object read from `RECONCILE_*` variables (and `.env`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from cryptography import x509
from pydantic import Field, FilePath, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

APPLE_ROOT_CA_G3 = Path(__file__).parent / "certs" / "AppleRootCA-G3.der"
# The background worker's jobs, by name (`RECONCILE_WORKER_JOBS` picks among them).
WORKER_JOBS = ("inbox", "google-acknowledge", "google-ack-watchdog", "google-cancel",
               "apple-consumption", "reconcile", "portal-expiry", "entitlement-sweep",
               "webhook-delivery")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="RECONCILE_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = "sqlite:///./reconcile.db"
    admin_token: SecretStr | None = None
    # The business's backend: may call only the endpoints marked "app" in the contract.
    app_token: SecretStr | None = None
    catalog_file: Path | None = None
    # What a purchase submitted for one account does when another account already holds it.
    transfer_policy: Literal["keep", "transfer"] = "keep"

    apple_bundle_id: str | None = None
    apple_app_apple_id: int | None = None
    apple_environments: Annotated[list[str], NoDecode] = ["production", "sandbox"]
    apple_root_certs: Annotated[list[FilePath], NoDecode] = [APPLE_ROOT_CA_G3]
    apple_online_checks: bool = True
    apple_key_id: str | None = None
    apple_issuer_id: str | None = None
    apple_private_key_path: FilePath | None = None
    apple_api_base_url: str | None = None

    google_package_name: str | None = None
    google_service_account_file: FilePath | None = None
    google_api_endpoint: str | None = None
    google_push_audience: str | None = None
    google_push_service_account: str | None = None
    google_oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    # Play Developer API calls per minute; Google's default quota is 3000 per bucket.
    google_calls_per_minute: int = Field(default=1200, gt=0)
    # Consumables (usage credits) are consumed rather than acknowledged.
    google_consumable_products: Annotated[list[str], NoDecode] = []
    # Purchases by license testers (testPurchase): accepted, and shown as environment sandbox.
    google_test_purchases: bool = True
    google_ack_watchdog_hours: float = Field(default=24.0, gt=0)
    google_read_concurrency: int = Field(default=8, gt=0)
    google_api_timeout_seconds: float = Field(default=10.0, gt=0)
    google_api_retries: int = Field(default=3, ge=0)
    google_api_backoff_seconds: float = Field(default=0.5, ge=0)

    apple_calls_per_second: float = Field(default=50.0, gt=0)
    # Attempts per App Store API call before the caller's own backoff takes over.
    apple_api_attempts: int = Field(default=4, gt=0)
    # A call that has not answered by then counts as a transient fault (retried, then reported).
    apple_api_timeout_seconds: float = Field(default=30.0, gt=0)

    # uvicorn's line per HTTP request; off where a proxy in front logs requests (on a hot read
    # it is a fifth of the process's CPU).
    access_log: bool = True

    # Background worker.
    worker_poll_seconds: float = Field(default=0.2, gt=0)
    worker_batch_size: int = Field(default=50, gt=0)
    worker_max_attempts: int = Field(default=12, gt=0)
    worker_lease_seconds: float = Field(default=60.0, gt=0)
    # Which jobs this process's worker runs: empty for all, names for only those, or names
    # each with a leading "-" for all but those (e.g. the webhook sender in its own process).
    worker_jobs: Annotated[list[str], NoDecode] = []
    reconcile_interval_minutes: float = Field(default=0, ge=0)  # 0 = no scheduled runs
    reconcile_concurrency: int = Field(default=8, gt=0)
    # Subscriptions per reconciliation page: the unit of checkpointing and of memory use.
    reconcile_page_size: int = Field(default=200, gt=0)
    # How far back the first run reads Apple's notification history (it keeps ~180 days).
    reconcile_history_days: float = Field(default=30.0, gt=0, le=180)

    # How long a support-console sign-in lasts.
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    # Outbound events (reconcile/notify): webhook delivery and the entitlement sweep.
    webhook_retry_seconds: Annotated[list[float], NoDecode] = [
        5, 300, 1800, 7200, 18000, 36000, 36000]
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_allow_http: bool = False
    webhook_concurrency: int = Field(default=64, gt=0)  # attempts in flight, all endpoints
    webhook_endpoint_concurrency: int = Field(default=8, gt=0)  # in flight per endpoint
    entitlement_sweep_seconds: float = Field(default=60.0, gt=0)

    @field_validator("webhook_retry_seconds", mode="before")
    @classmethod
    def _retry_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("webhook_retry_seconds")
    @classmethod
    def _retry_delays(cls, value: list[float]) -> list[float]:
        if any(delay < 0 for delay in value):
            raise ValueError("webhook retry delays cannot be negative")
        return value

    @field_validator(
        "apple_environments", "apple_root_certs", "google_consumable_products", "worker_jobs",
        mode="before"
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("apple_environments")
    @classmethod
    def _known_environments(cls, value: list[str]) -> list[str]:
        lowered = [v.lower() for v in value]
        unknown = set(lowered) - {"production", "sandbox"}
        if unknown:
            raise ValueError(f"unknown Apple environment(s) {', '.join(sorted(unknown))}: "
                             "expected a comma list of production, sandbox")
        return lowered

    @field_validator("worker_jobs")
    @classmethod
    def _known_jobs(cls, value: list[str]) -> list[str]:
        unknown = sorted({name.removeprefix("-") for name in value} - set(WORKER_JOBS))
        if unknown:
            raise ValueError(f"unknown worker job(s) {', '.join(unknown)}: expected a comma "
                             f"list of {', '.join(WORKER_JOBS)}, or of them each with a "
                             "leading '-' to run all but those")
        if len({name.startswith("-") for name in value}) > 1:
            raise ValueError("worker jobs are either all named (run only those) or all "
                             "prefixed with '-' (run all but those), not both")
        return value

    def runs_job(self, name: str) -> bool:
        """Whether this process's worker runs the job called `name`."""
        if not self.worker_jobs:
            return True
        if self.worker_jobs[0].startswith("-"):
            return f"-{name}" not in self.worker_jobs
        return name in self.worker_jobs

    @field_validator("apple_root_certs")
    @classmethod
    def _certificates(cls, value: list[Path]) -> list[Path]:
        for path in value:
            raw = path.read_bytes()
            try:
                if b"-----BEGIN" in raw:
                    x509.load_pem_x509_certificate(raw)
                else:
                    x509.load_der_x509_certificate(raw)
            except ValueError as error:
                raise ValueError(f"{path} is not a DER or PEM certificate") from error
        return value
