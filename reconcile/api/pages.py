"""Keyset pagination for every list endpoint: `{"items": [...], "next_cursor": ...}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from reconcile.errors import DomainError
from reconcile.views import decode_cursor, encode_cursor

T = TypeVar("T")


def keyset_page(
    session: Session,
    query: Select[tuple[T]],
    key: InstrumentedAttribute[Any],
    cursor: str | None,
    limit: int,
    parse: Callable[[str], Any] = str,
) -> tuple[list[T], str | None]:
    """One page of `query` ordered by the unique `key`, after the row `cursor` names."""
    query = query.order_by(key).limit(limit + 1)
    if cursor:
        try:
            query = query.where(key > parse(decode_cursor(cursor)))
        except ValueError as error:
            raise DomainError("malformed cursor", cursor=cursor) from error
    rows = list(session.scalars(query))
    page = rows[:limit]
    more = len(rows) > limit
    return page, encode_cursor(str(getattr(page[-1], key.key))) if more else None
