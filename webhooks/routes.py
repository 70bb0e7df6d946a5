"""POST /webhooks/apple and /webhooks/google: verify, record durably, answer."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel

from reconcile.api.deps import ServicesDep
from reconcile.services import Services
from webhooks.apple import AppleRejected, AppleUnavailable, VerifiedNotification, parse_body
from webhooks.body import read_limited
from webhooks.google import GoogleRejected, GoogleUnavailable, MalformedEnvelope, incoming

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class Recorded(BaseModel):
    recorded: bool
    duplicate: bool


# The two possible answers, serialised once: this route is the service's hot path.
_ANSWERS = {new: Recorded(recorded=True, duplicate=not new).model_dump_json().encode()
            for new in (True, False)}


@router.post("/apple", response_model=Recorded)
async def apple(request: Request) -> Response:
    """Verify a signed notification, record it durably, THEN answer 200.

    Written without dependencies: it is called once per notification, and FastAPI's
    dependency solving and response validation would cost more than the verification.
    """
    services: Services = request.app.state.services
    try:
        signed_payload = parse_body(await read_limited(request))
    except ValueError as error:
        raise HTTPException(400, str(error)) from error
    notification = _verified_apple(services, signed_payload)
    try:
        new = await asyncio.wrap_future(
            services.intake.submit(notification.incoming(), services.clock()))
    except Exception as error:
        log.error("could not record Apple notification: %s", type(error).__name__)
        raise HTTPException(503, "storage unavailable") from error
    if new:
        services.metrics.received.labels("apple", notification.kind.split("/")[0]).inc()
    return Response(_ANSWERS[new], media_type="application/json")


def _verified_apple(services: Services, signed_payload: str) -> VerifiedNotification:
    """The verified notification; 404 while Apple is not configured, 401 when not authentic."""
    if services.apple is None:
        raise HTTPException(404, "Apple notifications are not configured")
    try:
        return services.apple.verify(signed_payload)
    except AppleRejected as error:
        services.metrics.rejected.labels("apple", error.status).inc()
        log.warning("rejected Apple notification: %s", error.status)
        raise HTTPException(401, f"notification rejected: {error.status}") from error
    except AppleUnavailable as error:
        raise HTTPException(503, "verification temporarily unavailable") from error


def authenticated_google(request: Request, services: ServicesDep) -> str:
    """The package name, once the push token is Google's for us; 404 while unconfigured."""
    package = services.settings.google_package_name
    if not package:
        raise HTTPException(404, "Google notifications are not configured")
    authenticator = services.google_push
    try:
        if authenticator is None:
            raise GoogleRejected("push audience or service account not configured")
        authenticator.verify(request.headers.get("authorization"))
    except GoogleRejected as error:
        services.metrics.rejected.labels("google", error.reason).inc()
        log.warning("rejected Google push: %s", error.reason)
        raise HTTPException(401, f"push rejected: {error.reason}",
                            headers={"WWW-Authenticate": "Bearer"}) from error
    except GoogleUnavailable as error:
        log.error("Google push not verifiable now: %s", error)
        raise HTTPException(503, "verification temporarily unavailable") from error
    return package


async def google_body(request: Request) -> bytes:
    return await read_limited(request)


@router.post("/google")
def google(
    package: Annotated[str, Depends(authenticated_google)],
    body: Annotated[bytes, Depends(google_body)],
    services: ServicesDep,
) -> dict[str, object]:
    """Authenticated pushes are all kept; the unusable ones as rejected, so Pub/Sub stops."""
    try:
        entry = incoming(body, package)
    except MalformedEnvelope as error:
        raise HTTPException(400, str(error)) from error
    try:
        new = services.intake.record(entry, services.clock())
    except Exception as error:
        log.error("could not record Google notification: %s", type(error).__name__)
        raise HTTPException(503, "storage unavailable") from error
    if new:
        services.metrics.received.labels("google", entry.kind).inc()
        if entry.status == "rejected":
            log.warning("kept unusable Google notification %s: %s", entry.notification_id,
                        entry.error)
    return {"recorded": True, "duplicate": not new, "status": entry.status}
