"""The console's actions: who may take each, what the confirmation says, and what it does.

Each action calls the same domain function as the admin API's endpoint and writes its audit
record (actor: the console user) in the request's one transaction. The consequences are stated
in the refund policy's words: plans are prepaid, changes take effect at the period's end, and
nothing is ever refunded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from reconcile import accounts, cancellation
from reconcile.audit.service import record
from reconcile.cancellation import APPLE_MANAGE_URL, Reason
from reconcile.console.users import Role
from reconcile.credits import service as credits
from reconcile.errors import Invalid
from reconcile.models import Subscription

MAX_REASON = 2000


@dataclass(frozen=True)
class Action:
    name: str
    role: Role
    button: str
    heading: str
    scope: str  # subscription | account
    done: str  # the notice after it succeeded


ACTIONS: Mapping[str, Action] = {
    a.name: a for a in (
        Action("cancel", "agent", "Cancel subscription", "Cancel this subscription?",
               "subscription", "The cancellation was recorded."),
        Action("change-plan", "agent", "Change plan", "Change the plan?", "subscription",
               "The plan change was recorded."),
        Action("block", "admin", "Block account", "Block this account?", "account",
               "The account is blocked."),
        Action("unblock", "admin", "Unblock account", "Unblock this account?", "account",
               "The account is unblocked."),
        Action("port-out", "admin", "Port out", "Port this number out?", "account",
               "The port-out was recorded: renewals are cancelled."),
        Action("consent", "agent", "Record consent", "Record the customer's consent?",
               "account", "The customer's consent was recorded."),
        Action("adjust-credits", "agent", "Adjust credits", "Adjust the credit balance?",
               "account", "The credit adjustment was recorded."),
    )
}
DONE = {a.name: a.done for a in ACTIONS.values()}


def _until(expires_at: str | None) -> str:
    return expires_at[:10] if expires_at else "the end of the paid period"


def consequence(action: str, subscription: dict[str, Any] | None,
                document: dict[str, Any] | None) -> list[str]:
    """What the action does to the customer, in the policy's words (one sentence a line)."""
    subs = [s for s in (document or {}).get("subscriptions", []) if s["status"] != "expired"]
    latest = max((s["expires_at"] for s in subs if s["expires_at"]), default=None)
    if action == "cancel" and subscription is not None:
        until = _until(subscription["expires_at"])
        lines = [f"Renewal stops: access continues until {until}; nothing is refunded."]
        if subscription["channel"] == "apple":
            lines.append("The App Store does not let us cancel: the customer must turn off "
                         f"renewal in their Apple account ({APPLE_MANAGE_URL}). The console "
                         "records the request and shows the link until Apple confirms it.")
        elif subscription["channel"] == "google":
            lines.append("Google Play is asked to stop the renewal.")
        else:
            lines.append("The portal stops the renewal at once.")
        return lines
    if action == "change-plan" and subscription is not None:
        until = _until(subscription["expires_at"])
        lines = [f"The new plan takes effect at the end of the paid period, on {until}; the "
                 "current plan and its access continue until then; nothing is refunded or "
                 "prorated."]
        if subscription["channel"] != "portal":
            lines.append("The store does not let us change a plan: the customer must make the "
                         "change in the store, through the link the console shows.")
        return lines
    if action == "block":
        return ["Access ends now on every channel and every renewal is cancelled.",
                "Under the acceptable use policy, nothing is refunded."]
    if action == "unblock":
        return [f"Access returns for any paid period still running (until {_until(latest)}).",
                "Renewals cancelled by the block stay cancelled; nothing is refunded."]
    if action == "port-out":
        return ["Future billing stops: every renewal is cancelled on its channel.",
                f"Access continues until {_until(latest)}; there is no partial refund for the "
                "remaining period."]
    if action == "adjust-credits":
        balance = ((document or {}).get("credits") or {}).get("balance", 0)
        return [f"The balance is {balance} credits now. A positive amount adds credits, a "
                "negative one takes them away; the ledger keeps both entries for good.",
                "This is a correction, not a refund: no money moves."]
    if action == "consent":
        return ["Whether the customer agrees that their usage may be shared with Apple when "
                "they ask Apple for a refund (Apple then hears that the service was delivered).",
                "Nothing is refunded either way."]
    return []


def clean_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise Invalid("Give a reason: it goes into the audit log.")
    if len(text) > MAX_REASON:
        raise Invalid(f"The reason is too long (at most {MAX_REASON} characters).")
    return text


def cancel_subscription(
    session: Session, row: Subscription, *, actor: str, reason: str, requested_by: str,
    now: datetime, cancellers: Mapping[str, cancellation.Canceller],
) -> None:
    code: Reason = "customer_request" if requested_by == "customer" else "admin"
    cancellation.cancel(session, row, code, reason, now, cancellers)
    record(session, actor=actor, action="subscription.cancel", target=row.id, reason=reason,
           note=f"requested by the {'customer' if code == 'customer_request' else 'company'}",
           now=now)


def change_plan(
    session: Session, row: Subscription, *, actor: str, reason: str, product_id: str,
    now: datetime, cancellers: Mapping[str, cancellation.Canceller],
) -> None:
    product = product_id.strip()
    if not product or len(product) > 256:
        raise Invalid("Give the product id of the new plan.")
    cancellation.change_plan(session, row, product, now, cancellers)
    record(session, actor=actor, action="subscription.change_plan", target=row.id,
           reason=reason, note=f"product_id={product}", now=now)


def account_action(
    session: Session, action: str, account_id: str, *, actor: str, reason: str,
    consented: bool, now: datetime, cancellers: Mapping[str, cancellation.Canceller],
    amount: str = "",
) -> None:
    """Block, unblock, port out, record consent (`reconcile.accounts`) or adjust credits
    (`reconcile.credits`)."""
    note = None
    if action == "block":
        accounts.block(session, account_id, reason, now, cancellers)
    elif action == "unblock":
        accounts.unblock(session, account_id, now)
    elif action == "port-out":
        accounts.cancel_account(session, account_id, "port_out", reason, now, cancellers)
    elif action == "consent":
        accounts.set_consent(session, account_id, consented, now)
        note = f"consumption_data={str(consented).lower()}"
    elif action == "adjust-credits":
        change = _amount(amount)
        accounts.known_account(session, account_id, now)
        credits.adjust(session, account_id, change, reason, actor, now)
        record(session, actor=actor, action="credits.adjust", target=account_id,
               reason=reason, note=f"{change:+d} credits: {reason}", now=now)
        return
    else:
        raise Invalid(f"unknown action {action}")
    record(session, actor=actor, action=f"account.{action.replace('-', '_')}",
           target=account_id, reason=reason, note=note, now=now)


def _amount(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise Invalid("Give the number of credits to add (or, negative, to take away).") from None
    if value == 0 or abs(value) > 10_000_000:
        raise Invalid("The amount must be a non-zero number of credits.")
    return value
