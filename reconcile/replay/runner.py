"""`reconcile replay`: rebuild what the inbox can rebuild, one subscription at a time.

Notifications are picked by channel, store id and the time they were received; each
subscription they touch is rebuilt from ALL of its notifications (a part of its history would
roll it back), in a transaction of its own that a dry run rolls back after reporting what it
changed. Outcomes come from the channels' own processors, exactly as the worker makes them:
Apple's nested JWS are verified again and Google's subscriptions are read again from the Play
Developer API (the notification carries only a token; the read is the truth, so a replay makes
one read per purchase token, under the API budget). Only processed notifications are replayed:
pending ones are the worker's, failed ones failed. Nothing the inbox cannot rebuild is touched:
portal subscriptions (no notifications), accounts (blocks, consent), the outbox, acknowledgements,
reconciliation reports, and a subscription's history rows from anything but a notification.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from reconcile.models import InboxEntry, StoreId, Subscription, SubscriptionEvent
from reconcile.outage import is_unavailable
from reconcile.outcomes import Normalised
from reconcile.replay.rebuild import Change, Group, rebuild
from reconcile.worker import Clock, Processor
from webhooks.apple_jws import unverified_claims

REPLAYED = "processed"
INDEX_PAGE = 2000


def subject_in_payload(channel: str, payload: str) -> str | None:
    """The store id a recorded notification is about, where the inbox row does not say:
    Apple's original transaction id, read (not verified: it only groups the notifications;
    the replay verifies them) from the signed transaction inside."""
    if channel != "apple":
        return None
    try:
        data = unverified_claims(payload).get("data")
        signed = data.get("signedTransactionInfo") if isinstance(data, dict) else None
        subject = unverified_claims(signed).get("originalTransactionId") if signed else None
    except ValueError:
        return None
    return subject if isinstance(subject, str) else None


class ReplayRefused(Exception):
    """The replay cannot be done here as asked (a channel that is not configured)."""


@dataclass(frozen=True)
class ReplayFilters:
    """Which notifications pick the subscriptions to rebuild; none set: every one."""

    channel: str | None = None
    store_id: str | None = None
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before


@dataclass
class ReplaySummary:
    subscriptions: int = 0
    notifications: int = 0
    changed: int = 0
    changes: int = 0
    skipped: list[str] = field(default_factory=list)


class Replayer:
    """Rebuilds derived state with the channels' processors, page by page of store ids."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        processors: Mapping[str, Processor],
        clock: Clock,
        *,
        page_size: int = 200,
    ) -> None:
        self.sessions = sessions
        self.processors = processors
        self.clock = clock
        self.page_size = page_size

    def channels(self, filters: ReplayFilters) -> list[str]:
        """The channels to replay; refused when the one asked for cannot be read here."""
        if filters.channel is not None:
            if filters.channel not in self.processors:
                raise ReplayRefused(f"{filters.channel} notifications cannot be replayed: that "
                                    "channel is not configured here (it needs what the worker "
                                    "needs to process them)")
            return [filters.channel]
        return sorted(self.processors)

    def run(
        self, filters: ReplayFilters, *, dry_run: bool,
        on_change: Callable[[Change], None] = lambda change: None,
    ) -> ReplaySummary:
        summary = ReplaySummary()
        for channel in self.channels(filters):
            self._channel(channel, filters, dry_run, summary, on_change)
        if filters.channel is None:
            with self.sessions() as session:
                for channel, count in session.execute(
                    select(InboxEntry.channel, func.count())
                    .where(InboxEntry.status == REPLAYED,
                           InboxEntry.channel.not_in(sorted(self.processors)))
                    .group_by(InboxEntry.channel)
                ):
                    summary.skipped.append(f"{channel}: not configured here; its {count} "
                                           "notifications were left alone")
        return summary

    def _channel(
        self, channel: str, filters: ReplayFilters, dry_run: bool, summary: ReplaySummary,
        on_change: Callable[[Change], None],
    ) -> None:
        processor = self.processors[channel]
        entries_of, picked = self._index(channel, filters)
        with self.sessions() as session:
            groups = self._groups(session, channel, sorted(picked), entries_of)
        for start in range(0, len(groups), self.page_size):
            page = groups[start:start + self.page_size]
            ids = sorted({i for g in page for s in g.subjects for i in entries_of.get(s, ())})
            with self.sessions() as session:
                entries = list(session.scalars(
                    select(InboxEntry).where(InboxEntry.id.in_(ids)).order_by(InboxEntry.id)))
                session.expunge_all()
            results = list(processor.normalise(entries, self.clock())) if entries else []
            by_id = {entry.id: (entry, result)
                     for entry, result in zip(entries, results, strict=True)}
            for group in page:
                mine = sorted((by_id[i] for s in group.subjects for i in entries_of.get(s, ())
                               if i in by_id), key=lambda pair: pair[0].id)
                self._group(group, mine, dry_run, summary, on_change)

    def _index(
        self, channel: str, filters: ReplayFilters
    ) -> tuple[dict[str, list[int]], set[str]]:
        """Every processed notification's store id (read from the payload where the inbox row
        names none: Apple's), and the store ids the filters pick."""
        entries_of: dict[str, list[int]] = {}
        picked: set[str] = set()
        linked: set[str] | None = None
        after = 0
        while True:
            with self.sessions() as session:
                if linked is None and filters.store_id is not None:
                    linked = set(self._linked(session, channel, filters.store_id))
                rows = list(session.execute(
                    select(InboxEntry.id, InboxEntry.subject, InboxEntry.received_at,
                           InboxEntry.payload, InboxEntry.environment)
                    .where(InboxEntry.channel == channel, InboxEntry.status == REPLAYED,
                           InboxEntry.id > after)
                    .order_by(InboxEntry.id).limit(INDEX_PAGE)))
            if not rows:
                return entries_of, picked
            after = rows[-1].id
            for row in rows:
                subject = row.subject or subject_in_payload(channel, row.payload)
                if subject is None:
                    continue
                entries_of.setdefault(subject, []).append(row.id)
                if self._picks(filters, linked, subject, row.received_at):
                    picked.add(subject)

    @staticmethod
    def _picks(filters: ReplayFilters, linked: set[str] | None, subject: str,
               received_at: datetime) -> bool:
        return ((linked is None or subject in linked)
                and (filters.since is None or received_at >= filters.since)
                and (filters.until is None or received_at < filters.until))

    @staticmethod
    def _linked(session: Session, channel: str, store_id: str) -> list[str]:
        """`store_id` and every other store id of the subscription that holds it."""
        holder = select(StoreId.subscription_id).where(StoreId.channel == channel,
                                                       StoreId.store_id == store_id)
        linked = set(session.scalars(select(StoreId.store_id).where(
            StoreId.subscription_id.in_(holder))))
        return sorted(linked | {store_id})

    def _groups(
        self, session: Session, channel: str, subjects: Sequence[str],
        entries_of: Mapping[str, list[int]],
    ) -> list[Group]:
        """One group per subscription the picked store ids belong to (with all its store ids),
        and one per picked store id nothing holds yet."""
        owners: dict[str, str] = {}
        for start in range(0, len(subjects), self.page_size):
            owners.update(session.execute(
                select(StoreId.store_id, StoreId.subscription_id)
                .where(StoreId.channel == channel,
                       StoreId.store_id.in_(subjects[start:start + self.page_size]))
            ).tuples().all())
        held: dict[str, list[str]] = {}
        owned = sorted(set(owners.values()))
        for start in range(0, len(owned), self.page_size):
            for subscription_id, store_id in session.execute(
                select(StoreId.subscription_id, StoreId.store_id)
                .where(StoreId.subscription_id.in_(owned[start:start + self.page_size]))
                .order_by(StoreId.store_id)
            ):
                held.setdefault(subscription_id, []).append(store_id)
        groups = [Group(channel, (subject,)) for subject in subjects if subject not in owners]
        groups += [Group(channel, tuple(ids), subscription_id)
                   for subscription_id, ids in sorted(held.items())
                   if any(i in entries_of for i in ids)]
        return groups

    @staticmethod
    def _newer(session: Session, group: Group, ids: Sequence[int]) -> bool:
        """A notification of this subscription applied after the replay read the inbox."""
        if group.subscription_id is None:
            return False
        return session.scalar(
            select(SubscriptionEvent.id).where(
                SubscriptionEvent.subscription_id == group.subscription_id,
                SubscriptionEvent.inbox_id.is_not(None),
                SubscriptionEvent.inbox_id.not_in(ids)).limit(1)) is not None

    def _group(
        self,
        group: Group,
        outcomes: list[tuple[InboxEntry, Normalised | Exception]],
        dry_run: bool,
        summary: ReplaySummary,
        on_change: Callable[[Change], None],
    ) -> None:
        label = f"{group.channel} {','.join(group.subjects)}"
        failed = [(entry, result) for entry, result in outcomes if isinstance(result, Exception)]
        if failed:
            entry, error = failed[0]
            summary.skipped.append(f"{label}: left as it is, notification {entry.notification_id}"
                                   f" cannot be replayed: {type(error).__name__}: {error}")
            return
        applied = [(entry.id, result) for entry, result in outcomes
                   if isinstance(result, Normalised)]
        session = self.sessions()
        try:
            session.begin()
            if group.subscription_id is not None:
                session.get(Subscription, group.subscription_id, with_for_update=True)
            ids = [inbox_id for inbox_id, _ in applied]
            current = set(session.scalars(select(InboxEntry.id).where(
                InboxEntry.id.in_(ids), InboxEntry.status == REPLAYED)))
            if current != set(ids) or self._newer(session, group, ids):
                session.rollback()
                summary.skipped.append(f"{label}: a notification was applied meanwhile; "
                                       "replay it again")
                return
            changes = rebuild(session, group, applied, self.clock())
            if dry_run:
                session.rollback()
            else:
                session.commit()
        except Exception as error:
            session.rollback()
            if is_unavailable(error):
                raise
            summary.skipped.append(f"{label}: left as it is: {type(error).__name__}: {error}")
            return
        finally:
            session.close()
        summary.subscriptions += 1
        summary.notifications += len(applied)
        if changes:
            summary.changed += 1
            summary.changes += len(changes)
        for change in changes:
            on_change(change)
