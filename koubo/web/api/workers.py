"""/api/workers: the job consumers on every machine, alive or not, and what each runs now."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from koubo.web.api.deps import ServiceDep

router = APIRouter(tags=["system"])


@router.get("/workers", summary="Workers heard from in the last days: alive, busy, device, engines, heartbeat")
def list_workers(service: ServiceDep) -> list[dict[str, Any]]:
    return [asdict(worker) for worker in service.workers()]
