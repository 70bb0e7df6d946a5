"""The one place that decides subscription state.

An `Observation` is what a store told us about a subscription at a store time: a set of fields,
each known as of that time. `apply` merges it into the current `SubscriptionState` field by field,
last writer wins by (store time, tie-break). That merge is commutative, associative and idempotent,
so any order and any number of duplicates of the same observations give the same state, and an
older observation can never roll a newer field back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    GRACE_PERIOD = "grace_period"
    BILLING_RETRY = "billing_retry"
    PAUSED = "paused"
    EXPIRED = "expired"
    REVOKED = "revoked"


class Channel(StrEnum):
    APPLE = "apple"
    GOOGLE = "google"
    PORTAL = "portal"


STATE_FIELDS = (
    "status",
    "product_id",
    "renewal_product_id",
    "auto_renew",
    "expires_at",
    "grace_expires_at",
    "account_id",
    "prepaid",
)


@dataclass(frozen=True, order=True)
class Stamp:
    """When a value was true at the store; ties broken by a stable id so merges are total."""

    time: datetime
    tiebreak: str = ""

    def encode(self) -> list[str]:
        return [self.time.isoformat(), self.tiebreak]

    @classmethod
    def decode(cls, raw: list[str]) -> Stamp:
        return cls(datetime.fromisoformat(raw[0]), raw[1])


# The time of an account link the business made (a submitted purchase, a transfer). A store's
# appAccountToken / obfuscatedExternalAccountId is fixed at purchase and often not the business's
# account id, so once the business has said whose a purchase is, no store message may say
# otherwise: its stamp outranks every store time. Later links outrank earlier ones by tiebreak.
LINKED = datetime.max.replace(tzinfo=UTC)


def link_stamp(now: datetime) -> Stamp:
    """The stamp of an account link made at `now`."""
    return Stamp(LINKED, f"link:{now.astimezone(UTC).isoformat()}")


def encode_clock(clock: Mapping[str, Stamp]) -> dict[str, list[str]]:
    """A clock as stored (JSON)."""
    return {name: stamp.encode() for name, stamp in clock.items()}


def decode_clock(raw: Mapping[str, Sequence[str]] | None) -> dict[str, Stamp]:
    """A stored clock."""
    return {name: Stamp.decode(list(value)) for name, value in (raw or {}).items()}


@dataclass(frozen=True)
class Observation:
    """What one store message (or one read of store truth) says about one subscription."""

    channel: Channel
    store_id: str
    stamp: Stamp
    kind: str
    environment: str
    fields: Mapping[str, Any]
    # Earlier store identifiers this one continues (Google linkedPurchaseToken chain).
    linked_store_ids: tuple[str, ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.fields) - set(STATE_FIELDS)
        if unknown:
            raise ValueError(f"not subscription state fields: {sorted(unknown)}")
        if "status" in self.fields:
            Status(self.fields["status"])


@dataclass(frozen=True)
class SubscriptionState:
    status: Status = Status.PENDING
    product_id: str | None = None
    renewal_product_id: str | None = None
    auto_renew: bool = False
    expires_at: datetime | None = None
    grace_expires_at: datetime | None = None
    account_id: str | None = None
    prepaid: bool = False
    clock: Mapping[str, Stamp] = field(default_factory=dict)

    @property
    def last_event_at(self) -> datetime | None:
        """Store time of the newest store fact applied (account links are not store facts)."""
        return max((s.time for s in self.clock.values() if s.time != LINKED), default=None)


def apply(state: SubscriptionState, observation: Observation) -> SubscriptionState:
    """Merge `observation` into `state`: each field takes the value with the newest stamp."""
    changes: dict[str, Any] = {}
    clock = dict(state.clock)
    for name, value in observation.fields.items():
        held = clock.get(name)
        if held is not None and held >= observation.stamp:
            continue
        clock[name] = observation.stamp
        changes[name] = Status(value) if name == "status" else value
    if not changes:
        return state
    return replace(state, clock=clock, **changes)


def entitled(
    status: Status,
    expires_at: datetime | None,
    grace_expires_at: datetime | None,
    now: datetime,
    blocked: bool = False,
) -> bool:
    """Whether access is due at `now`: a paid period or a store grace period is running."""
    if blocked:
        return False
    if status is Status.ACTIVE:
        return expires_at is None or now < expires_at
    if status is Status.GRACE_PERIOD:
        end = grace_expires_at or expires_at
        return end is None or now < end
    return False
