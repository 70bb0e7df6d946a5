"""POST /webhooks/apple and /webhooks/google: verify, record durably, answer."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError

from reconcile.api.deps import ServicesDep
from webhooks.apple import AppleRejected, AppleUnavailable, VerifiedNotification, parse_body
from webhooks.body import read_limited
from webhooks.intake import Incoming, record

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def apple_body(request: Request) -> str:
    try:
        return parse_body(await read_limited(request))
    except ValueError as error:
        raise HTTPException(400, str(error)) from error


def verified_apple(
    signed_payload: Annotated[str, Depends(apple_body)], services: ServicesDep
) -> VerifiedNotification:
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


@router.post("/apple")
def apple(
    notification: Annotated[VerifiedNotification, Depends(verified_apple)],
    services: ServicesDep,
) -> dict[str, bool]:
    incoming = Incoming(
        channel="apple",
        notification_id=notification.notification_uuid,
        kind=notification.kind,
        payload=notification.signed_payload,
        store_time=notification.signed_at,
        environment=notification.environment,
    )
    try:
        new = record(services.sessions, incoming, services.clock())
    except SQLAlchemyError as error:
        log.error("could not record Apple notification: %s", type(error).__name__)
        raise HTTPException(503, "storage unavailable") from error
    if new:
        services.metrics.received.labels("apple", notification.kind.split("/")[0]).inc()
    return {"recorded": True, "duplicate": not new}
