"""The REST API, one router module per resource, all mounted under /api."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from koubo.web.api import batches, jobs, logs, system, uploads, workers

router = APIRouter()
for _resource in (uploads, jobs, batches, logs, system, workers):
    router.include_router(_resource.router)


# Last: the UI mounted at "/" would otherwise answer an unknown /api path with its own page.
@router.api_route(
    "/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False
)
def unknown_endpoint(path: str) -> None:
    raise HTTPException(status_code=404)
