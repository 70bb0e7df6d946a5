"""POST /v1/portal/subscriptions and PATCH /v1/portal/subscriptions/{id}: the web portal's
own subscriptions, written as portal observations through the one writer of state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from reconcile.api.deps import NowDep, SessionDep
from reconcile.api.responses import answers
from reconcile.api.schemas import PortalCreateBody, PortalPatchBody
from reconcile.audit.service import API_ACTOR, record
from reconcile.cancellation import load_for_update
from reconcile.chains import find_subscription
from reconcile.channels import portal
from reconcile.db import is_conflict
from reconcile.errors import Conflict, Invalid
from reconcile.ids import new_id
from reconcile.models import Subscription
from reconcile.views import present

router = APIRouter(prefix="/v1/portal/subscriptions", tags=["portal"])


@router.post("", status_code=201, responses=answers(409))
def create(body: PortalCreateBody, session: SessionDep, now: NowDep) -> dict[str, Any]:
    """A new portal subscription; `status` follows from `expires_at` against now."""
    store_id = body.store_id or new_id("portal")
    _refuse_existing(session, store_id, now)
    fields = body.model_dump(exclude={"store_id"})
    fields["expires_at"] = body.expires_at.astimezone(UTC)
    try:
        with session.begin_nested():
            subscription_id = portal.create(session, store_id, fields, now)
    except IntegrityError as error:
        if is_conflict(error):  # a concurrent create of this store id committed first
            _refuse_existing(session, store_id, now)
        raise
    record(session, actor=API_ACTOR, action="portal.create", target=subscription_id,
           note=_changes(body.model_dump(mode="json")), now=now)
    session.flush()
    return present(session, [_get(session, subscription_id)], now)[0]


def _refuse_existing(session: SessionDep, store_id: str, now: datetime) -> None:
    existing = find_subscription(session, "portal", store_id)
    if existing is not None:
        raise Conflict(f"portal subscription {store_id} exists already",
                       subscription=present(session, [existing], now)[0])


@router.patch("/{subscription_id}", responses=answers(404, 409))
def update(subscription_id: str, body: PortalPatchBody, session: SessionDep,
           now: NowDep) -> dict[str, Any]:
    """Change product, period end (a renewal moves it), auto-renew or account."""
    given = body.model_dump(include=body.model_fields_set)
    if not given:
        raise Invalid("nothing to update: give account_id, product_id, expires_at or auto_renew",
                      subscription_id=subscription_id)
    nulls = sorted(name for name, value in given.items() if value is None)
    if nulls:
        raise Invalid(f"cannot be null: {', '.join(nulls)}", subscription_id=subscription_id)
    row = load_for_update(session, subscription_id)
    if row.channel != "portal":
        raise Conflict(f"subscription {subscription_id} is sold through {row.channel}, not the "
                       "portal; only the store changes it", subscription_id=subscription_id)
    if "expires_at" in given:
        given["expires_at"] = given["expires_at"].astimezone(UTC)
    portal.update(session, row, given, now)
    record(session, actor=API_ACTOR, action="portal.update", target=subscription_id,
           note=_changes(body.model_dump(mode="json", include=body.model_fields_set)), now=now)
    session.flush()
    return present(session, [row], now)[0]


def _changes(fields: dict[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in sorted(fields.items()))


def _get(session: SessionDep, subscription_id: str) -> Subscription:
    row = session.get(Subscription, subscription_id)
    assert row is not None
    return row
