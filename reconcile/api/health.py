"""GET /healthz (the process answers), /readyz (the database answers), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from reconcile.api.deps import ServicesDep
from reconcile.db import ping

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    # On the event loop: the process answering needs no thread (and no database).
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep, response: Response) -> dict[str, str]:
    try:
        ping(services.engine)
    except Exception:
        response.status_code = 503
        return {"status": "database unavailable"}
    return {"status": "ready"}


@router.get("/metrics")
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")
