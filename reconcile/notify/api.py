"""The event feed (`GET /v1/events`, app) and the webhook endpoints' admin API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import select

from reconcile.api.deps import NowDep, ServicesDep, SessionDep
from reconcile.errors import DomainError, NotFound
from reconcile.notify import endpoints
from reconcile.notify.models import Delivery, Event
from reconcile.notify.service import event_json
from reconcile.views import decode_cursor, encode_cursor

feed_router = APIRouter(prefix="/v1/events", tags=["events"])
router = APIRouter(prefix="/v1/webhook-endpoints", tags=["events"])

Limit = Annotated[int, Query(ge=1, le=500)]


class EndpointBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000)
    event_types: list[str] | None = None
    description: str | None = Field(default=None, max_length=2000)


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2000)
    event_types: list[str] | None = None
    enabled: StrictBool | None = None
    description: str | None = Field(default=None, max_length=2000)


def _position(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(decode_cursor(cursor))
    except ValueError as error:
        raise DomainError("malformed cursor", cursor=cursor) from error


@feed_router.get("")
def feed(
    session: SessionDep,
    cursor: str | None = None,
    account_id: str | None = None,
    type: str | None = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Events oldest first, in commit order: following `next_cursor` never skips one.

    `next_cursor` is null only on an empty page; keep the last one to poll for newer events.
    """
    query = select(Event).where(Event.position > _position(cursor))
    if account_id:
        query = query.where(Event.account_id == account_id)
    if type:
        query = query.where(Event.type.in_([t.strip() for t in type.split(",") if t.strip()]))
    rows = list(session.scalars(query.order_by(Event.position).limit(limit)))
    return {
        "items": [event_json(row) for row in rows],
        "next_cursor": encode_cursor(str(rows[-1].position)) if rows else None,
    }


@feed_router.get("/{event_id}")
def one_event(event_id: str, session: SessionDep) -> dict[str, Any]:
    row = session.get(Event, event_id)
    if row is None:
        raise NotFound(f"no event {event_id}", event_id=event_id)
    return event_json(row)


@router.post("", status_code=201)
def create_endpoint(body: EndpointBody, session: SessionDep, services: ServicesDep,
                    now: NowDep) -> dict[str, Any]:
    """A new endpoint with a generated `whsec_` secret, shown this once (and on rotation)."""
    row = endpoints.create(session, url=body.url, event_types=body.event_types,
                           description=body.description,
                           allow_http=services.settings.webhook_allow_http, now=now)
    return endpoints.endpoint_json(row, secret=True)


@router.get("")
def list_endpoints(session: SessionDep) -> dict[str, Any]:
    return {"items": [endpoints.endpoint_json(row) for row in endpoints.listed(session)],
            "next_cursor": None}


@router.get("/{endpoint_id}")
def get_endpoint(endpoint_id: str, session: SessionDep) -> dict[str, Any]:
    return endpoints.endpoint_json(endpoints.load(session, endpoint_id))


@router.patch("/{endpoint_id}")
def patch_endpoint(endpoint_id: str, body: EndpointPatch, session: SessionDep,
                   services: ServicesDep, now: NowDep) -> dict[str, Any]:
    changes = body.model_dump(include=body.model_fields_set)
    for name in ("url", "enabled"):
        if name in changes and changes[name] is None:
            raise DomainError(f"{name} cannot be null", endpoint_id=endpoint_id)
    row = endpoints.load(session, endpoint_id, lock=True)
    endpoints.update(session, row, changes, allow_http=services.settings.webhook_allow_http,
                     now=now)
    return endpoints.endpoint_json(row)


@router.delete("/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: str, session: SessionDep) -> Response:
    endpoints.remove(session, endpoints.load(session, endpoint_id, lock=True))
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret")
def rotate_secret(endpoint_id: str, session: SessionDep, now: NowDep) -> dict[str, Any]:
    """A new secret; the old one signs beside it for 24 hours."""
    secret = endpoints.rotate(session, endpoints.load(session, endpoint_id, lock=True), now)
    return {"secret": secret}


@router.get("/{endpoint_id}/deliveries")
def deliveries(
    endpoint_id: str,
    session: SessionDep,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|failed)$")] = None,
    cursor: str | None = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """What the endpoint was sent and is owed, oldest event first."""
    endpoints.load(session, endpoint_id)
    query = select(Delivery).where(Delivery.endpoint_id == endpoint_id,
                                   Delivery.position > _position(cursor))
    if status:
        query = query.where(Delivery.status == status)
    rows = list(session.scalars(query.order_by(Delivery.position).limit(limit + 1)))
    page = rows[:limit]
    return {
        "items": [endpoints.delivery_json(row) for row in page],
        "next_cursor": encode_cursor(str(page[-1].position)) if len(rows) > limit else None,
    }


@router.post("/{endpoint_id}/deliveries/{event_id}/retry")
def retry_delivery(endpoint_id: str, event_id: str, session: SessionDep,
                   now: NowDep) -> dict[str, Any]:
    """Send it again now (also a delivered or failed one)."""
    endpoints.load(session, endpoint_id)
    row = session.scalars(
        select(Delivery).where(Delivery.endpoint_id == endpoint_id, Delivery.event_id == event_id)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"no delivery of {event_id} to {endpoint_id}", endpoint_id=endpoint_id,
                       event_id=event_id)
    row.status = "pending"
    row.next_attempt_at = now
    row.lease_owner = None
    row.lease_until = None
    return endpoints.delivery_json(row)
