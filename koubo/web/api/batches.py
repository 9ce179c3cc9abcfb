"""/api/batches: one audio × many template videos, or many audios × one template, as one batch."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from koubo.errors import KouboError
from koubo.jobs.service import JobStatus
from koubo.web.api.deps import ServiceDep
from koubo.web.api.downloads import content_disposition, zip_stream
from koubo.web.api.schemas import BatchCreate, BatchOut

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
        raise KouboError("no_output", "No video of this batch has finished yet.", "该批次还没有完成的视频。")
    name = f"koubo-batch-{batch_id[:8]}.zip"
    return StreamingResponse(
        zip_stream(files),
        media_type="application/zip",
        headers={"Content-Disposition": content_disposition(name, fallback=name)},
    )
