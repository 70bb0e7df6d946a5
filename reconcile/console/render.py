"""Templates and the filters they use; every page goes through `page`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from reconcile.console.overview import COUNT_CAP
from reconcile.console.users import may

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# What each status means for the customer, in the words the support desk uses.
STATUS_WORDS = {
    "pending": "Payment pending",
    "active": "Active",
    "grace_period": "Grace period",
    "billing_retry": "Billing retry",
    "paused": "Paused",
    "expired": "Expired",
    "revoked": "Refunded or revoked",
}
STATUS_TONE = {
    "pending": "wait", "active": "good", "grace_period": "warn", "billing_retry": "bad",
    "paused": "wait", "expired": "off", "revoked": "bad",
}
CANCELLATION_WORDS = {
    "requested": "Cancellation requested",
    "sent": "Sent to the store",
    "customer_action_required": "Customer must act",
    "confirmed": "Cancelled: renewal off",
    "failed": "Cancellation failed",
}
REASON_WORDS = {
    "customer_request": "the customer asked",
    "policy_block": "account blocked",
    "port_out": "number ported out",
    "admin": "the company decided",
}
CHANNEL_WORDS = {"apple": "App Store", "google": "Google Play", "portal": "Portal"}
# Security headers of every console answer: no framing, nothing from elsewhere, no caching.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def day(value: str | datetime | None) -> str:
    """'2026-12-26' from an ISO timestamp or a datetime."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return text[:10]


def moment(value: str | datetime | None) -> str:
    """'2026-12-26 10:00 UTC'."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{text[:10]} {text[11:16]} UTC"


def capped(value: int) -> str:
    """A count that stopped at COUNT_CAP says so."""
    return f"{COUNT_CAP:,} or more" if value >= COUNT_CAP else str(value)


templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.filters.update(day=day, moment=moment, capped=capped)
templates.env.globals.update(STATUS_WORDS=STATUS_WORDS, STATUS_TONE=STATUS_TONE,
                             CANCELLATION_WORDS=CANCELLATION_WORDS, REASON_WORDS=REASON_WORDS,
                             CHANNEL_WORDS=CHANNEL_WORDS, may=may)


def compile_templates() -> None:
    """Compile every template now, so that no page's first request pays for it."""
    for name in templates.env.list_templates(extensions=["html"]):
        templates.env.get_template(name)


def page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render template `name`; `context` may carry `signed` (the viewer's session)."""
    signed = context.get("signed")
    full = {"user": signed.user if signed else None,
            "csrf": signed.session.csrf_token if signed else "", **context}
    return templates.TemplateResponse(request, name, full, status_code=status_code,
                                      headers={**HEADERS, **(headers or {})})
