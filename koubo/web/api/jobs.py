"""/api/jobs: submit, list, inspect, cancel, retry, delete, and download a job's video."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, RedirectResponse, Response

from koubo.jobs.service import MAX_OFFSET, JobStatus
from koubo.links.delivery import content_disposition
from koubo.web.api.deps import LinkLifetime, LinksDep, ServiceDep, SettingsDep
from koubo.web.api.schemas import JobCreate, JobOut, JobPage, LinkOut

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=201, response_model=JobOut, summary="Queue one audio + one template video")
def create_job(body: JobCreate, service: ServiceDep) -> JobOut:
    return JobOut.model_validate(
        service.submit(
            body.audio_id, body.video_id, body.params, body.priority, body.client_token
        )
    )


@router.get("", response_model=JobPage, summary="Jobs, newest first")
def list_jobs(
    service: ServiceDep,
    status: JobStatus | None = None,
    batch_id: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    views, total = service.list_jobs(status=status, batch_id=batch_id, offset=offset, limit=limit)
    return JobPage(items=[JobOut.model_validate(v) for v in views], total=total, offset=offset, limit=limit)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, service: ServiceDep) -> JobOut:
    return JobOut.model_validate(service.get(job_id))


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel a queued or running job")
def cancel_job(job_id: str, service: ServiceDep) -> JobOut:
    return JobOut.model_validate(service.cancel(job_id))


@router.post("/{job_id}/retry", response_model=JobOut, summary="Queue a failed, cancelled or timed-out job again")
def retry_job(job_id: str, service: ServiceDep) -> JobOut:
    return JobOut.model_validate(service.retry(job_id))


@router.delete("/{job_id}", status_code=204, summary="Delete a job and its output (cancels it first if running)")
def delete_job(job_id: str, service: ServiceDep) -> Response:
    service.delete(job_id)
    return Response(status_code=204)


@router.head("/{job_id}/download", include_in_schema=False)
@router.get(
    "/{job_id}/download",
    response_class=FileResponse,
    summary="The finished MP4 (Range requests supported); ?inline=1 to play it in the page",
    responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "partial content"}},
)
def download_output(
    job_id: str, service: ServiceDep, settings: SettingsDep, links: LinksDep, inline: bool = False
) -> Response:
    job = service.get(job_id)
    if job.storage_key is not None and job.status is JobStatus.done and not service.has_local_output(job):
        # Moved to object storage: the bucket serves it, Range requests and all.
        link = links.job_link(job.id, job.output_name or "", job.storage_key, inline=inline)
        return RedirectResponse(link.url, status_code=307)
    path, name = service.output_file(job_id)
    # JobService only hands out files under outputs/, and the web layer refuses to serve anything else.
    if not path.resolve().is_relative_to(settings.outputs_dir.resolve()):
        raise RuntimeError(f"output of job {job_id} lies outside the outputs folder: {path}")
    return FileResponse(
        path,
        media_type="video/mp4",
        headers={"Content-Disposition": content_disposition(name, fallback=f"koubo-{job_id[:8]}.mp4", inline=inline)},
    )


@router.get(
    "/{job_id}/poster.jpg",
    response_class=FileResponse,
    summary="A small poster frame of the job's video (its template's until the output exists)",
    responses={200: {"content": {"image/jpeg": {}}}},
)
def job_poster(job_id: str, service: ServiceDep) -> Response:
    # The URL names what it shows (?v=done or queued): a poster never changes under one URL.
    return FileResponse(service.poster(job_id), media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


@router.get("/{job_id}/link", response_model=LinkOut, summary="A signed direct link to the finished video")
def job_link(
    job_id: str,
    service: ServiceDep,
    links: LinksDep,
    expires: LinkLifetime = None,
) -> LinkOut:
    job = service.get(job_id)
    if job.storage_key is None:
        service.output_file(job_id)  # raises unless the local video is there to link to
    return LinkOut.model_validate(links.job_link(job.id, job.output_name or "", job.storage_key, expires))
