"""Reading a webhook body with a hard size limit, and parsing JSON from the stores strictly."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request

MAX_BODY = 1024 * 1024
# Store payloads are three or four levels deep; anything far deeper is hostile. A limit well
# below the interpreter's recursion limit keeps every later walk over the value safe.
MAX_DEPTH = 32


async def read_limited(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, or 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes | str) -> Any:
    """`raw` as JSON: UTF-8, nested at most MAX_DEPTH deep, every string storable
    (`check_json`); ValueError saying what is wrong otherwise."""
    try:
        return check_json(json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw))
    except RecursionError as error:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from error
    except UnicodeDecodeError as error:
        raise ValueError("not UTF-8") from error
    except json.JSONDecodeError as error:
        raise ValueError("not JSON") from error


def check_json(value: Any) -> Any:
    """`value` (parsed JSON) itself, or ValueError when it is nested deeper than MAX_DEPTH or
    holds a string no database stores (a lone surrogate, a NUL character)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = [*item, *item.values()]
        elif isinstance(item, list):
            children = item
        else:
            check_text(item)
            continue
        if depth > MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            else:
                check_text(child)
    return value


def check_text(value: object) -> None:
    """ValueError when `value` is a string that cannot be stored as text: it holds a NUL
    character (PostgreSQL refuses it) or a lone surrogate (not encodable as UTF-8)."""
    if not isinstance(value, str):
        return
    if "\x00" in value:
        raise ValueError("text holds a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError("text holds a lone surrogate") from error
