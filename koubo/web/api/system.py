"""/api/health and /api/queue: is koubo up, and how busy is it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from koubo import __version__
from koubo.links.egress import combined, read_snapshots
from koubo.web.api.deps import ServiceDep, SettingsDep

router = APIRouter(tags=["system"])
log = logging.getLogger(__name__)


@router.get("/health", summary="Liveness and database check; open even when auth is on")
def health(service: ServiceDep) -> JSONResponse:
    try:
        queue: dict[str, Any] | None = service.queue_summary()
    except Exception:
        # A health check reports failure instead of raising it: monitors read the status code.
        log.exception("health check: the job database cannot be read")
        queue = None
    ok = queue is not None
    return JSONResponse(
        {
            "status": "ok" if ok else "error",
            "version": __version__,
            "queue": queue,
            "database": "ok" if ok else "error",
        },
        status_code=200 if ok else 503,
    )


@router.get("/queue", summary="Jobs per status and the number of workers")
def queue_summary(service: ServiceDep) -> dict[str, Any]:
    return service.queue_summary()


@router.get("/egress", summary="What the link servers send now: bytes, live rate, downloads, busiest links")
def egress(settings: SettingsDep) -> dict[str, Any]:
    return combined(read_snapshots(settings.data_dir))
