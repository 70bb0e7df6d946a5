"""What every admin request's input must be before a handler sees it, and how refusals of
input are written: nothing in a request can make the API answer 5xx (5xx means "retry")."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from webhooks.body import check_json, check_text


async def storable_input(request: Request) -> None:
    """422 when a path or query parameter, or a string anywhere in a JSON body, is text no
    database stores (a NUL character, a lone surrogate), or the body nests too deep."""
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            try:
                check_text(value)
            except ValueError as error:
                raise HTTPException(422, f"{where} parameter {name}: {error}") from error
    body = await request.body()  # read (and kept) by FastAPI already: no second read
    if not body:
        return
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return  # not JSON: FastAPI's own parsing answers for it
    try:
        check_json(document)
    except ValueError as error:
        raise HTTPException(422, f"body: {error}") from error


async def validation_error(_request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 answer, with the offending input made printable: undecodable bytes and
    lone surrogates are replaced, where the stock handler fails to encode them (500)."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": jsonable_encoder(_printable(error.errors()))}, 422)


async def unstorable(_request: Request, error: Exception) -> JSONResponse:
    """A value the database refuses (too long for its column, out of range): the request's
    fault, never a transient one; the transaction was rolled back, nothing changed."""
    assert isinstance(error, DataError)
    reason = str(error.orig).strip().splitlines()[0] if error.orig else "invalid value"
    return JSONResponse({"detail": f"a value in the request cannot be stored: {reason}"}, 422)


def _printable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(item) for item in value]
    return value
