"""The API's request and response bodies; requests are validated here, at the edge.

Responses are built from JobService's views. A job's output path on the server is not part of
them: clients download through /api/jobs/{id}/download.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from koubo.errors import BATCH_SHAPE, KouboError
from koubo.jobs.service import JobStatus, Lane
from koubo.options import GenerateOptions, batch_pairs

AssetId = Annotated[str, Field(min_length=1, max_length=64)]


class AssetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: Literal["audio", "video"]
    name: str = Field(description="the uploaded file's original name, for display only")
    size: int
    duration: float
    sha256: str
    created_at: datetime


class ErrorOut(BaseModel):
    code: str
    message_en: str
    message_zh: str


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    batch_id: str | None
    status: JobStatus
    stage: str | None
    progress: float
    queue_position: int | None = Field(description="1 = next to start; null unless queued")
    priority: Lane
    audio: AssetOut
    video: AssetOut
    params: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: ErrorOut | None
    output_size: int | None
    output_name: str | None
    report: dict[str, Any] | None
    attempts: int
    worker: str | None
    worker_name: str | None = Field(description="the worker (GET /api/workers) that runs or ran it")
    timings: dict[str, float] | None
    storage_state: Literal["pending", "uploaded"] | None = Field(description="its upload to object storage")
    storage_key: str | None = Field(description="the object's key once uploaded")
    storage_error: str | None = Field(description="why the last upload attempt failed (retried later)")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def download_url(self) -> str | None:
        return f"/api/jobs/{self.id}/download" if self.status is JobStatus.done else None


class LinkOut(BaseModel):
    """A signed direct link: anyone holding it can download, Range requests included, until it expires."""

    model_config = ConfigDict(from_attributes=True)

    url: str
    expires_at: datetime | None = Field(description="UTC; null when the link never expires")
    kind: Literal["direct", "bucket"] = Field(
        description="direct: koubo's link server; bucket: a presigned object-storage URL (at most 7 days)"
    )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    offset: int
    limit: int


class BatchOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    jobs: list[JobOut]
    counts: dict[str, int]


class JobParams(GenerateOptions):
    """Per-job generation options; anything left out takes the server's configured default."""

    # koubo.options.GenerateOptions under the name the API has always given it. A job always
    # measures its quality report: `check` is neither shown nor taken here.
    check: SkipJsonSchema[Literal[True]] = True


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio_id: AssetId
    video_id: AssetId
    params: JobParams = Field(default_factory=JobParams)
    priority: Lane = Field(
        Lane.normal,
        description="high: the fast lane, ahead of queued batch items (at most queue_high_burst in a row)",
    )
    client_token: str | None = Field(
        None,
        min_length=8,
        max_length=64,
        description="makes the submission idempotent: the same token again returns what it made the first time",
    )


class BatchCreate(BaseModel):
    """One audio × many videos, or many audios × one video."""

    model_config = ConfigDict(extra="forbid")

    audio_ids: list[AssetId] = Field(min_length=1, max_length=200)
    video_ids: list[AssetId] = Field(min_length=1, max_length=200)
    params: JobParams = Field(default_factory=JobParams)
    client_token: str | None = Field(
        None,
        min_length=8,
        max_length=64,
        description="makes the submission idempotent: the same token again returns what it made the first time",
    )

    @model_validator(mode="after")
    def _one_side_single(self) -> BatchCreate:
        try:
            batch_pairs(self.audio_ids, self.video_ids)
        except KouboError:
            raise PydanticCustomError("batch_shape", BATCH_SHAPE[0]) from None
        return self
