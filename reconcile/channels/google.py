"""The Google Play channel: read the truth behind recorded notifications, one read per token."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from reconcile.channels import google_normalise as gn
from reconcile.channels.google_play import PlayClient, PlayPermanentError
from reconcile.models import InboxEntry
from reconcile.outcomes import FreshRead, Normalised
from reconcile.state import Stamp
from reconcile.worker import PermanentError
from webhooks.google import (
    REVOKED,
    SUBSCRIPTION_TYPES,
    DeveloperNotification,
    decode_envelope,
    decode_notification,
)

log = logging.getLogger(__name__)

# A fresh read answers every waiting "something changed" notification for its token, except
# a revocation: that one changes what the read means (EXPIRED becomes revoked).
COVERED_KINDS = frozenset(label for code, label in SUBSCRIPTION_TYPES.items() if code != REVOKED)

ReadKey = tuple[str, str, str]  # ("subscription", token, "") | ("product", token, sku)


@dataclass(frozen=True)
class _Read:
    """The answer to one Play API read, shared by every notification that needed it."""

    purchase: dict[str, Any] | None
    error: Exception | None
    stamp: Stamp


class GoogleProcessor:
    """Normalises a batch of Google notifications with the fewest possible Play API calls."""

    channel = "google"

    def __init__(
        self,
        play: PlayClient,
        package_name: str,
        *,
        consumables: Collection[str] = (),
        concurrency: int = 8,
    ) -> None:
        self.play = play
        self.package_name = package_name
        self.consumables = frozenset(consumables)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="play-read")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def normalise(
        self, entries: Sequence[InboxEntry], now: datetime
    ) -> list[Normalised | Exception]:
        decoded: list[DeveloperNotification | Exception] = [self._decode(e) for e in entries]
        # Several notifications for one token (a burst, redeliveries) share a single read,
        # stamped with the newest inbox id among them so later reads win ties.
        newest: dict[ReadKey, int] = {}
        for entry, notification in zip(entries, decoded, strict=True):
            key = self._read_key(notification)
            if key is not None:
                newest[key] = max(newest.get(key, 0), entry.id)
        reads = dict(zip(newest, self._pool.map(
            lambda key: self._read(key, Stamp(now, f"{newest[key]:016d}")), newest), strict=True))
        # One revocation in the group decides what the shared read means for all of them.
        revoked = {
            key for n in decoded
            if (key := self._read_key(n)) is not None and isinstance(n, DeveloperNotification)
            and gn.revokes(n, reads[key].purchase)
        }
        results: list[Normalised | Exception] = []
        for notification in decoded:
            if isinstance(notification, Exception):
                results.append(notification)
                continue
            try:
                results.append(self._outcome(notification, reads, revoked, now))
            except gn.MalformedPurchase as error:
                results.append(PermanentError(str(error)))
        return results

    def _decode(self, entry: InboxEntry) -> DeveloperNotification | Exception:
        try:
            return decode_notification(decode_envelope(entry.payload), self.package_name)
        except ValueError as error:  # MalformedEnvelope, UnusableNotification
            return PermanentError(str(error))

    @staticmethod
    def _read_key(notification: DeveloperNotification | Exception) -> ReadKey | None:
        if not isinstance(notification, DeveloperNotification) or not notification.purchase_token:
            return None
        token = notification.purchase_token
        if notification.kind == "subscription" or (
            notification.kind == "voided" and notification.product_type != 2
        ):
            return ("subscription", token, "")
        if notification.kind == "one_time" and notification.sku:
            return ("product", token, notification.sku)
        return None

    def _read(self, key: ReadKey, stamp: Stamp) -> _Read:
        kind, token, sku = key
        try:
            if kind == "subscription":
                return _Read(self.play.get_subscription(token), None, stamp)
            return _Read(self.play.get_product(sku, token), None, stamp)
        except Exception as error:  # sorted out per notification below
            if not isinstance(error, PlayPermanentError):
                log.warning("Play read %s failed: %s", kind, error)
            return _Read(None, error, stamp)

    def _outcome(
        self,
        notification: DeveloperNotification,
        reads: dict[ReadKey, _Read],
        revoked: set[ReadKey],
        now: datetime,
    ) -> Normalised | Exception:
        key = self._read_key(notification)
        token = notification.purchase_token or ""
        if key is None:
            if notification.kind == "voided":
                return gn.voided_one_time(notification, token, Stamp(now, token))
            return Normalised(kind=notification.label, note="nothing to read: recorded only")
        read = reads[key]
        if read.error is not None and not (
            notification.kind == "voided" and isinstance(read.error, PlayPermanentError)
        ):
            return _failure(read.error)
        if key[0] == "product":
            assert read.purchase is not None
            return gn.one_time(notification, read.purchase, token, read.stamp, self.consumables)
        outcome = gn.subscription(notification, read.purchase, token, read.stamp,
                                  revoked=key in revoked)
        if read.purchase is None or notification.kind != "subscription":
            return outcome
        return replace(outcome, fresh_read=FreshRead(subject=token, at=now, kinds=COVERED_KINDS))


def _failure(error: Exception) -> Exception:
    """Google's "never" (404, 410, 400) is recorded as a permanent failure; the rest retried."""
    if isinstance(error, PlayPermanentError):
        return PermanentError(str(error))
    return error
