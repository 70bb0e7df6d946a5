"""The refusals the admin API answers, for its OpenAPI document: routes name the status codes
they can answer, and share one description and body shape per code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Detail(BaseModel):
    """A refusal before any domain logic ran (authentication, availability, input checks)."""

    detail: str


class Refusal(BaseModel):
    """A domain error: its code, a message, and what identifies it (`subscription_id`, ...)."""

    model_config = ConfigDict(extra="allow")

    error: str
    message: str


_ANSWERS: dict[int, tuple[type[BaseModel], str]] = {
    400: (Refusal, "malformed request (for instance a cursor this API did not hand out)"),
    401: (Detail, "bearer token missing or wrong, or the admin API is disabled "
                  "(RECONCILE_ADMIN_TOKEN not set)"),
    403: (Detail, "the token may not call this endpoint"),
    404: (Refusal, "no such resource"),
    409: (Refusal, "refused in the resource's current state; nothing was changed"),
    503: (Detail, "the database is unavailable; nothing was changed: retry"),
}


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route (or router) that may answer these codes."""
    return {code: {"model": _ANSWERS[code][0], "description": _ANSWERS[code][1]}
            for code in codes}


def document_admin_refusals(schema: dict[str, Any]) -> None:
    """Add what every admin route may answer (the bearer check in front of it, the database
    behind it) to each operation under /v1 of an OpenAPI document, new routes included."""
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for operation in operations.values():
            for code in (401, 503):
                operation["responses"].setdefault(str(code), {
                    "description": _ANSWERS[code][1],
                    "content": {"application/json": {"schema": Detail.model_json_schema()}},
                })
