"""What the account page shows beside `account_document`: refunds, Apple refund requests,
and one timeline of store notifications, admin actions and requests to the channels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from reconcile.audit.models import AuditRecord
from reconcile.console.render import CHANNEL_WORDS
from reconcile.models import OutboxEntry, Refund, SubscriptionEvent
from reconcile.notify.models import Delivery, Event, WebhookEndpoint
from reconcile.views import request_json

TIMELINE_LIMIT = 200
REQUEST_WORDS = {"cancel": "Cancellation", "change_plan": "Plan change"}
STATE_WORDS = {"requested": "waiting to be sent", "sent": "sent to the store",
               "customer_action_required": "the customer must act", "confirmed": "confirmed",
               "failed": "failed"}
DELIVERY_WORDS = {"delivered": "delivered", "pending": "waiting to be delivered",
                  "failed": "failed for good"}
SOURCE_WORDS = {"apple": "App Store notification", "google": "Google Play notification",
                "portal": "Portal", "reconciliation": "Reconciliation", "ingest": "Service"}


@dataclass
class Moment:
    """One line of the timeline."""

    at: datetime
    kind: str  # store | admin | request | refund | event
    title: str
    detail: str = ""
    actor: str | None = None
    reason: str | None = None
    inbox_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def refunds_of(session: Session, account_id: str, subscription_ids: Sequence[str]) -> list[Refund]:
    return list(session.scalars(
        select(Refund).where(or_(Refund.account_id == account_id,
                                 Refund.subscription_id.in_(list(subscription_ids))))
        .order_by(Refund.refunded_at.desc(), Refund.id.desc()).limit(100)
    ))


def refund_requests_of(session: Session, account_id: str) -> list[OutboxEntry]:
    return list(session.scalars(
        select(OutboxEntry).where(OutboxEntry.kind == "consumption",
                                  OutboxEntry.account_id == account_id)
        .order_by(OutboxEntry.id.desc()).limit(100)
    ))


def waiting_plan_changes(session: Session, subscription_ids: Sequence[str]
                         ) -> dict[str, dict[str, Any]]:
    """Per subscription, a plan change only the customer can make in the store, if any."""
    waiting: dict[str, dict[str, Any]] = {}
    for entry in session.scalars(
        select(OutboxEntry).where(OutboxEntry.subscription_id.in_(list(subscription_ids)),
                                  OutboxEntry.kind == "change_plan")
        .order_by(OutboxEntry.id)
    ):
        request = request_json(entry)
        if entry.state == "customer_action_required":
            waiting[entry.subscription_id or ""] = request
        else:
            waiting.pop(entry.subscription_id or "", None)
    return waiting


def timeline(
    session: Session, account_id: str, subscription_ids: Sequence[str],
    refunds: Sequence[Refund], products: dict[str, str | None],
) -> list[Moment]:
    """Newest first, at most TIMELINE_LIMIT lines of each source, merged."""
    ids = list(subscription_ids)
    moments: list[Moment] = []
    for event in session.scalars(
        select(SubscriptionEvent).where(SubscriptionEvent.subscription_id.in_(ids))
        .order_by(SubscriptionEvent.id.desc()).limit(TIMELINE_LIMIT)
    ):
        moments.append(_store_moment(event, products.get(event.subscription_id)))
    for row in session.scalars(
        select(AuditRecord).where(AuditRecord.target.in_([account_id, *ids]))
        .order_by(AuditRecord.id.desc()).limit(TIMELINE_LIMIT)
    ):
        moments.append(Moment(row.at, "admin", _action_words(row.action), row.note or "",
                              actor=row.actor, reason=row.reason,
                              extra={"target": row.target}))
    for entry in session.scalars(
        select(OutboxEntry).where(OutboxEntry.subscription_id.in_(ids),
                                  OutboxEntry.kind.in_(tuple(REQUEST_WORDS)))
        .order_by(OutboxEntry.id.desc()).limit(TIMELINE_LIMIT)
    ):
        request = request_json(entry)
        what = REQUEST_WORDS[entry.kind]
        target = f" to {request['product_id']}" if request["product_id"] else ""
        state = STATE_WORDS.get(request["state"], request["state"])
        moments.append(Moment(entry.created_at, "request",
                              f"{what}{target} asked of {CHANNEL_WORDS[entry.channel]}: "
                              f"{state}",
                              request["failure"] or "", extra={"request": request}))
    moments.extend(_told(session, account_id))
    for refund in refunds:
        money = f"{refund.amount} {refund.currency}" if refund.amount else "amount unknown"
        moments.append(Moment(refund.refunded_at, "refund",
                              f"The store refunded {refund.product_id or refund.store_id}",
                              f"{money}; {refund.channel} {refund.store_id}"))
    moments.sort(key=lambda m: m.at, reverse=True)
    return moments[:TIMELINE_LIMIT]


def _told(session: Session, account_id: str) -> list[Moment]:
    """The events the business was told about the account, each with where its deliveries
    stand (delivered, waiting for a retry, failed) on every endpoint."""
    events = list(session.scalars(
        select(Event).where(Event.account_id == account_id)
        .order_by(Event.position.desc()).limit(TIMELINE_LIMIT)))
    states: dict[str, list[str]] = {event.id: [] for event in events}
    failed: set[str] = set()
    for event_id, status, attempts, code, url in session.execute(
        select(Delivery.event_id, Delivery.status, Delivery.attempts, Delivery.last_status_code,
               WebhookEndpoint.url)
        .join(WebhookEndpoint, WebhookEndpoint.id == Delivery.endpoint_id, isouter=True)
        .where(Delivery.event_id.in_(list(states))).order_by(Delivery.id)
    ):
        words = DELIVERY_WORDS.get(status, status)
        if status == "failed":
            failed.add(event_id)
        if url:
            words = f"{urlsplit(url).hostname or url}: {words}"
        if status != "delivered" and attempts:
            words += f" after {attempts} attempt{'s' if attempts != 1 else ''}"
            if code:
                words += f" (last answer {code})"
        states[event_id].append(words)
    return [
        Moment(event.created_at, "event", f"Told the business: {event.type}",
               "; ".join(states[event.id]) or "no endpoint takes it (the feed has it)",
               extra={"sequence": event.sequence,
                      "failed": event.id in failed})
        for event in events
    ]


def _store_moment(event: SubscriptionEvent, product: str | None) -> Moment:
    detail = event.detail or {}
    fields = detail.get("fields") or {}
    changed = ", ".join(f"{k}={v}" for k, v in sorted(fields.items()) if v is not None)
    source = SOURCE_WORDS.get(event.source, event.source)
    title = f"{source}: {event.kind}"
    if not event.applied:
        title += " (nothing changed)"
    store_time = event.store_time.strftime("%Y-%m-%d %H:%M UTC") if event.store_time else None
    words = [changed] if changed else []
    if store_time:
        words.append(f"store time {store_time}")
    return Moment(event.recorded_at, "store", title, "; ".join(words), inbox_id=event.inbox_id,
                  extra={"subscription_id": event.subscription_id, "product": product})


def _action_words(action: str) -> str:
    return action.replace("_", " ").replace(".", ": ", 1)
