"""Reading a webhook body with a hard size limit, before anything parses it."""

from __future__ import annotations

from fastapi import HTTPException, Request

MAX_BODY = 1024 * 1024


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
