"""Reading `Settings` for a command: each fault as one line naming the environment variable,
the value (secrets masked) and what is expected; unknown `RECONCILE_*` names as warnings.

Everything here is derived from `Settings.model_fields` and pydantic's error locations, so a
new setting is known, named and checked without an entry of its own.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import ValidationError

from reconcile.config import Settings

PREFIX: str = Settings.model_config.get("env_prefix") or ""
# Read by the test and benchmark scripts, never by the service.
TOOLING_PREFIXES = ("RECONCILE_TEST_", "RECONCILE_PG_", "RECONCILE_SKIP_")
_SECRET_WORDS = ("token", "secret", "password")
_URL_PASSWORD = re.compile(r"(:)[^:/@\s]*(@)")


class ConfigError(Exception):
    """A setting the service cannot start with; `lines` say what to fix, one fault a line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def env_name(field: str) -> str:
    """The environment variable a Settings field is read from."""
    return f"{PREFIX}{field}".upper()


def known_variables() -> set[str]:
    return {env_name(name) for name in Settings.model_fields}


def load_settings() -> Settings:
    """Settings from the environment and `.env`; ConfigError with one line per bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(describe(error, _raw_values(os.environ, _env_file(None)))) from error


def describe(error: ValidationError, raw: Mapping[str, str]) -> list[str]:
    """One line per field pydantic refused: `VARIABLE='value': what is expected`."""
    lines: dict[str, str] = {}
    for fault in error.errors():
        field = str(fault["loc"][0]) if fault["loc"] else ""
        variable = env_name(field)
        if variable in lines:
            continue  # a union reports each member; the first says enough
        value = raw.get(variable)
        if value is None:
            value = fault["input"] if isinstance(fault["input"], str) else repr(fault["input"])
        message = str(fault["msg"]).removeprefix("Value error, ")
        if value == "":
            message += " (the variable is set but empty: unset it to use the default)"
        lines[variable] = f"{variable}={mask(field, value)!r}: {message}"
    return list(lines.values())


def mask(field: str, value: str) -> str:
    """`value` as it may be shown: secrets hidden, a URL's password hidden."""
    info = Settings.model_fields.get(field)
    secret = info is not None and "SecretStr" in str(info.annotation)
    if (secret or any(word in field for word in _SECRET_WORDS)) and value:
        return "***"
    return _URL_PASSWORD.sub(r"\1***\2", value)


def unknown_variables(
    environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> list[str]:
    """A warning for each `RECONCILE_*` name in the environment or `.env` that no setting
    reads, with the closest known name."""
    known = known_variables()
    names = {name.upper() for name in (os.environ if environ is None else environ)}
    path = _env_file(env_file)
    from_file = {name.upper() for name in dotenv_values(path)} if path.is_file() else set()
    warnings = []
    for name in sorted(names | from_file):
        if not name.startswith(PREFIX) or name in known or name.startswith(TOOLING_PREFIXES):
            continue
        where = "in .env" if name in from_file and name not in names else "in the environment"
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} ({where}) is not a setting and is ignored{hint}")
    return warnings


def _env_file(env_file: Path | None) -> Path:
    configured: Any = Settings.model_config.get("env_file") or ".env"
    return env_file if env_file is not None else Path(str(configured))


def _raw_values(environ: Mapping[str, str], env_file: Path) -> dict[str, str]:
    """What the operator wrote for each variable; the environment wins over `.env`, as in
    pydantic-settings."""
    values: dict[str, str] = {}
    if env_file.is_file():
        values.update({k.upper(): v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update({k.upper(): v for k, v in environ.items()})
    return values
