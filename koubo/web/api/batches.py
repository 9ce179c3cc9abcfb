"""/api/batches: one audio × many template videos, or many audios × one template, as one batch."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from koubo.links.delivery import content_disposition
from koubo.links.signing import signed_batch_link
from koubo.links.zipstream import batch_zip_name, zip_chunks, zip_entries, zip_size
from koubo.web.api.deps import LinkLifetime, ServiceDep, SettingsDep
from koubo.web.api.schemas import BatchCreate, BatchOut, LinkOut

router = APIRouter(prefix="/batches", tags=["batches"])


@router.post("", status_code=201, response_model=BatchOut, summary="Queue a batch of jobs")
def create_batch(body: BatchCreate, service: ServiceDep) -> BatchOut:
    batch = service.submit_batch(body.audio_ids, body.video_ids, body.params, body.client_token)
    return BatchOut.model_validate(batch)


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
    entries = zip_entries(service.batch_outputs(batch_id))
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
    expires: LinkLifetime = None,
) -> LinkOut:
    service.batch_outputs(batch_id)  # a link only to a batch with something to download
    return LinkOut.model_validate(signed_batch_link(settings, batch_id, batch_zip_name(batch_id), expires))
