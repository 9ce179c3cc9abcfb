"""/api/batches: one audio × many template videos, or many audios × one template, as one batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from koubo import errors
from koubo.jobs.service import JobStatus
from koubo.links.delivery import content_disposition
from koubo.links.signing import signed_batch_link
from koubo.links.zipstream import batch_zip_name, zip_chunks, zip_entries, zip_size
from koubo.web.api.deps import ServiceDep, SettingsDep
from koubo.web.api.schemas import BatchCreate, BatchOut, LinkOut

router = APIRouter(prefix="/batches", tags=["batches"])


@router.post("", status_code=201, response_model=BatchOut, summary="Queue a batch of jobs")
def create_batch(body: BatchCreate, service: ServiceDep) -> BatchOut:
    return BatchOut.model_validate(service.submit_batch(body.audio_ids, body.video_ids, body.params.as_options()))


@router.get("/{batch_id}", response_model=BatchOut, summary="A batch with its jobs and counts by status")
def get_batch(batch_id: str, service: ServiceDep) -> BatchOut:
    return BatchOut.model_validate(service.get_batch(batch_id))


@router.get(
    "/{batch_id}/zip",
    response_class=StreamingResponse,
    summary="The batch's finished videos as one ZIP, streamed",
    responses={200: {"content": {"application/zip": {}}}, 409: {"description": "no finished video yet"}},
)
def download_batch_zip(batch_id: str, service: ServiceDep) -> StreamingResponse:
    batch = service.get_batch(batch_id)
    files = [service.output_file(job.id) for job in batch.jobs if job.status is JobStatus.done]
    if not files:
        raise errors.batch_has_no_output()
    entries = zip_entries(files)
    name = batch_zip_name(batch_id)
    return StreamingResponse(
        zip_chunks(entries),
        media_type="application/zip",
        headers={
            "Content-Disposition": content_disposition(name, fallback=name),
            "Content-Length": str(zip_size(entries)),
        },
    )


@router.get("/{batch_id}/link", response_model=LinkOut, summary="A signed direct link to the batch's videos as a ZIP")
def batch_link(
    batch_id: str,
    service: ServiceDep,
    settings: SettingsDep,
    expires: Annotated[float | None, Query(ge=0, description="seconds the link lasts; 0 = never")] = None,
) -> LinkOut:
    batch = service.get_batch(batch_id)
    if not any(job.status is JobStatus.done for job in batch.jobs):
        raise errors.batch_has_no_output()
    link = signed_batch_link(settings, batch_id, batch_zip_name(batch_id), expires)
    return LinkOut(url=link.url, expires_at=link.expires_at)
