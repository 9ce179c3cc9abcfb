"""JobService: the one API through which the web app, the UI and the CLI upload files and run jobs.

Thread-safe: every call opens its own database session, so FastAPI may call it from its thread
pool. No state lives in this process's memory that another process needs: a job is its row, and
the queue consumer (`python -m koubo.jobs.queue`, see koubo.jobs.consumer) does the work.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from koubo import errors
from koubo.config import Settings
from koubo.diskspace import ensure_free_space
from koubo.engines import ENGINES
from koubo.engines.base import unknown_engine
from koubo.errors import JobNotFound
from koubo.features.cache import content_hash
from koubo.jobs.huey_queue import create_queue
from koubo.jobs.recovery import recover_jobs
from koubo.jobs.store import (
    RETRYABLE,
    Asset,
    Batch,
    Database,
    DurationHistogram,
    Job,
    JobStatus,
    Lane,
    StorageState,
    new_id,
    queued_in_order,
    recorded_error,
    utcnow,
)
from koubo.jobs.workers import WorkerView, view_workers
from koubo.logs import job_context
from koubo.media.poster import write_poster
from koubo.media.probe import FrameBudget, MediaInfo, probe
from koubo.naming import output_name
from koubo.options import GenerateOptions, batch_pairs, resolve
from koubo.storage import delete_object

__all__ = ["AssetView", "BatchView", "JobNotFound", "JobService", "JobStatus", "JobView", "Lane", "WorkerView"]

log = logging.getLogger(__name__)

AssetKind = Literal["audio", "video"]
MAX_PAGE = 500
# Far beyond any history, far below the database's 64-bit integers (a larger offset overflows there).
MAX_OFFSET = 10**9
# Stored uploads are named <sha256><suffix>; the suffix comes from the container probed, never
# from the uploader's file name.
_SUFFIXES = {
    "wav": ".wav",
    "mp3": ".mp3",
    "flac": ".flac",
    "ogg": ".ogg",
    "aac": ".aac",
    "amr": ".amr",
    "asf": ".asf",
    "avi": ".avi",
    "flv": ".flv",
    "matroska,webm": ".mkv",
    "mov,mp4,m4a,3gp,3g2,mj2": ".mp4",
    "mpeg": ".mpg",
    "mpegts": ".ts",
    "rm": ".rm",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class AssetView:
    id: str
    kind: AssetKind
    name: str  # the uploader's file name, any Unicode: display only
    size: int
    duration: float
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class JobView:
    id: str
    batch_id: str | None
    status: JobStatus
    stage: str | None
    progress: float  # 0..1
    queue_position: int | None  # 1 = next to start; None unless queued
    priority: Lane
    audio: AssetView
    video: AssetView
    params: dict[str, Any]  # engine, expressiveness, crf, preset
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, str] | None  # {"code", "message_en", "message_zh"}
    output_path: Path | None  # absolute, inside outputs_dir
    output_size: int | None
    output_name: str | None  # the download's file name
    report: dict[str, Any] | None  # QualityReport.to_dict()
    attempts: int
    worker: str | None  # hostname:pid of the supervising process
    worker_name: str | None  # the worker (workers panel) that runs or ran it
    timings: dict[str, Any] | None  # seconds per pipeline stage
    storage_state: StorageState | None  # the video's upload to object storage, if any
    storage_key: str | None  # its object key once uploaded
    storage_error: str | None  # why the last upload attempt failed
    cancel_requested: bool = False  # a running job asked to stop, until it has


@dataclass(frozen=True)
class BatchView:
    id: str
    created_at: datetime
    jobs: list[JobView]
    counts: dict[JobStatus, int]  # every status, zeros included


class JobService:
    def __init__(self, settings: Settings) -> None:
        """Creates the data folders and connects to the database and the queue; starts no worker."""
        self.settings = settings
        self.uploads_dir = settings.uploads_dir.resolve()
        self.outputs_dir = settings.outputs_dir.resolve()
        # Where the web layer streams an upload before handing it to add_asset (same file system).
        self.upload_tmp_dir = self.uploads_dir / ".tmp"
        for folder in (self.upload_tmp_dir, self.outputs_dir, settings.cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._db = Database(settings.database_location)
        self._queue = create_queue(settings)

    def close(self) -> None:
        self._db.close()
        self._queue.close()

    # --- assets -----------------------------------------------------------------------------------

    def add_asset(self, source: Path, name: str, kind: AssetKind) -> AssetView:
        """Check an uploaded file by its content and keep it; the same content and kind is kept once.

        `source` is consumed whatever happens: moved under uploads/ or deleted. Raises MediaError
        (not media, wrong kind of streams, too long, damaged, too large) with both messages.
        """
        source = Path(source)
        shown = display_name(name)
        try:
            self.ensure_free_space()
            info = self.check_upload(source, shown, kind)
            sha256 = content_hash(source)
            return self._find_asset(sha256, kind) or self._keep_upload(source, shown, kind, sha256, info)
        finally:
            source.unlink(missing_ok=True)

    def check_upload(self, source: Path, name: str, kind: AssetKind) -> MediaInfo:
        """What add_asset checks (size, content, length, frame budget), without keeping the file: the
        UI says what is wrong with a file as soon as it arrives, before anything is submitted."""
        shown = display_name(name)
        if kind not in ("audio", "video"):
            raise errors.invalid_params(
                f"kind must be audio or video, not {kind!r}", f"kind 须为 audio 或 video，而不是 {kind!r}"
            )
        size = source.stat().st_size
        if size > self.settings.upload_max_bytes:
            raise errors.too_large(shown, size, self.settings.upload_max_bytes)
        limit = self.settings.max_audio_seconds if kind == "audio" else self.settings.max_video_seconds
        info = probe(source, expect=kind, max_duration=limit, display_name=shown)
        # A template no job could decode is refused now, not after it is queued.
        FrameBudget.of(self.settings).check(info, shown)
        return info

    def _keep_upload(self, source: Path, shown: str, kind: AssetKind, sha256: str, info: MediaInfo) -> AssetView:
        stored_name = f"{sha256[:2]}/{sha256}{_SUFFIXES.get(info.container, '')}"
        target = self.uploads_dir / stored_name
        target.parent.mkdir(parents=True, exist_ok=True)
        # Staged beside the target so that the final rename is atomic even if `source` lies on
        # another file system (then the move is a copy).
        staged = target.with_name(f".{new_id()}.part")
        shutil.move(source, staged)
        os.replace(staged, target)
        asset = Asset(
            kind=kind,
            name=shown,
            sha256=sha256,
            size=target.stat().st_size,
            duration=info.duration,
            container=info.container,
            stored_name=stored_name,
        )
        try:
            with self._db.session() as session:
                session.add(asset)
        except IntegrityError:
            # The same file arrived twice at once and the other upload's row won.
            existing = self._find_asset(sha256, kind)
            if existing is None:
                raise
            return existing
        log.info("stored %s upload %r as %s", kind, shown, stored_name)
        return asset_view(asset)

    def get_asset(self, asset_id: str) -> AssetView:
        with self._db.session() as session:
            asset = session.get(Asset, asset_id)
            if asset is None:
                raise errors.asset_not_found(asset_id)
            return asset_view(asset)

    def _find_asset(self, sha256: str, kind: str) -> AssetView | None:
        with self._db.session() as session:
            asset = session.scalars(select(Asset).where(Asset.sha256 == sha256, Asset.kind == kind)).first()
            return None if asset is None else asset_view(asset)

    # --- submitting -------------------------------------------------------------------------------

    def ensure_free_space(self) -> None:
        """Raises `disk_full` while the data disk has less than settings.min_free_bytes free."""
        ensure_free_space(self.outputs_dir, self.settings.min_free_bytes)

    def submit(
        self,
        audio_id: str,
        video_id: str,
        params: GenerateOptions | dict[str, Any] | None = None,
        priority: Lane = Lane.normal,
        client_token: str | None = None,
    ) -> JobView:
        """One job; a high-priority one (the UI's single job) waits in the fast lane (see run_order).

        A `client_token` makes the submission idempotent: the same token again (a double click, a
        resent request) gets the job it made the first time, as long as that job is kept.
        """
        if client_token and (earlier := self._job_by_token(client_token)):
            return earlier
        self.ensure_free_space()
        values = self._job_params(params)
        try:
            with self._db.session() as session:
                audio, video = self._asset(session, audio_id, "audio"), self._asset(session, video_id, "video")
                job = new_job(audio, video, values, lane=priority)
                job.client_token = client_token
                session.add(job)
        except IntegrityError:
            # The same token committed by a concurrent request a moment ago: that one's job.
            if client_token and (earlier := self._job_by_token(client_token)):
                return earlier
            raise
        self._queue.wake(job.id)
        with job_context(job.id):
            log.info("queued: %s", job.output_name)
        return self.get(job.id)

    def _job_by_token(self, client_token: str) -> JobView | None:
        with self._db.session() as session:
            job_id = session.scalars(select(Job.id).where(Job.client_token == client_token)).one_or_none()
        return self.get(job_id) if job_id else None

    def submit_batch(
        self,
        audio_ids: list[str],
        video_ids: list[str],
        params: GenerateOptions | dict[str, Any] | None = None,
        client_token: str | None = None,
    ) -> BatchView:
        """One audio with many videos, or many audios with one video: one job per pair, in that
        order. The shared side's features are computed once (the caches are keyed by content).
        The same `client_token` again gets the batch it made the first time (see submit)."""
        if client_token and (earlier := self._batch_by_token(client_token)):
            return earlier
        batch_pairs(audio_ids, video_ids)  # refused before anything is looked up
        self.ensure_free_space()
        values = self._job_params(params)
        try:
            with self._db.session() as session:
                audios = [self._asset(session, asset_id, "audio") for asset_id in audio_ids]
                videos = [self._asset(session, asset_id, "video") for asset_id in video_ids]
                batch = Batch(id=new_id(), client_token=client_token)
                session.add(batch)
                pairs = batch_pairs(audios, videos)
                jobs = [new_job(a, v, values, batch_id=batch.id, index=i) for i, (a, v) in enumerate(pairs)]
                session.add_all(jobs)
        except IntegrityError:
            if client_token and (earlier := self._batch_by_token(client_token)):
                return earlier
            raise
        for job in jobs:
            self._queue.wake(job.id)
        log.info("batch %s queued: %d job(s)", batch.id, len(jobs))
        return self.get_batch(batch.id)

    def _batch_by_token(self, client_token: str) -> BatchView | None:
        with self._db.session() as session:
            batch_id = session.scalars(select(Batch.id).where(Batch.client_token == client_token)).one_or_none()
        return self.get_batch(batch_id) if batch_id else None

    def _job_params(self, params: GenerateOptions | dict[str, Any] | None) -> dict[str, Any]:
        """`params` checked and completed with the configured defaults: the job's stored parameters."""
        if not isinstance(params, GenerateOptions):
            try:
                params = GenerateOptions.model_validate(params or {})
            except ValidationError as exc:
                en, zh = errors.validation_messages([{**e, "loc": ("params", *e["loc"])} for e in exc.errors()])
                raise errors.invalid_params(en, zh) from None
        resolved = resolve(params, self.settings)
        if resolved.engine not in ENGINES:  # checked by name: a neural engine loads its weights in the job
            raise unknown_engine(resolved.engine)
        return resolved.job_params()

    @staticmethod
    def _asset(session: Session, asset_id: str, kind: AssetKind) -> Asset:
        asset = session.get(Asset, asset_id)
        if asset is None:
            raise errors.asset_not_found(asset_id)
        if asset.kind != kind:
            raise errors.wrong_asset_kind(asset.name, kind)
        return asset

    # --- reading ----------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobView:
        with self._db.session() as session:
            job = session.scalars(select(Job).where(Job.id == job_id)).one_or_none()
            if job is None:
                raise JobNotFound(job_id)
            position = self._position(session, job) if job.status == JobStatus.queued else None
            return self._view(job, position)

    def list_jobs(
        self, *, status: JobStatus | None = None, batch_id: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[JobView], int]:
        """A page of jobs, newest first, and the number of jobs that match."""
        if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PAGE:
            raise errors.invalid_params(
                f"offset must be 0..{MAX_OFFSET} and limit 1..{MAX_PAGE}.",
                f"offset 须在 0 到 {MAX_OFFSET} 之间，limit 须在 1 到 {MAX_PAGE} 之间。",
            )
        filters = []
        if status is not None:
            filters.append(Job.status == _status(status))
        if batch_id is not None:
            filters.append(Job.batch_id == batch_id)
        with self._db.session() as session:
            total = session.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
            jobs = session.scalars(
                select(Job).where(*filters).order_by(Job.seq.desc()).offset(offset).limit(limit)
            ).all()
            positions = self._positions(session) if any(j.status == JobStatus.queued for j in jobs) else {}
            return [self._view(job, positions.get(job.id)) for job in jobs], total

    def get_batch(self, batch_id: str) -> BatchView:
        with self._db.session() as session:
            batch = session.get(Batch, batch_id)
            if batch is None:
                raise errors.batch_not_found(batch_id)
            jobs = session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.seq)).all()
            positions = self._positions(session)
            views = [self._view(job, positions.get(job.id)) for job in jobs]
        counts = dict.fromkeys(JobStatus, 0)
        for view in views:
            counts[view.status] += 1
        return BatchView(batch.id, batch.created_at, views, counts)

    def queue_summary(self) -> dict[str, int]:
        """Jobs per status (every status, zeros included) and "workers": the jobs run at once."""
        summary = {status.value: count for status, count in self._db.count_by_status().items()}
        summary["workers"] = self.settings.max_concurrent
        return summary

    def worker_capacity(self) -> tuple[int, int]:
        """(workers alive, jobs they may run at once), from the workers table: one row per worker,
        however many jobs there are; alive as the workers panel says it."""
        alive = [worker for worker in self.workers() if worker.alive]
        return len(alive), sum(worker.concurrency for worker in alive)

    def duration_histogram(self, bounds: tuple[float, ...]) -> DurationHistogram:
        return self._db.duration_histogram(bounds)

    def poster(self, job_id: str) -> Path:
        """A small JPEG that identifies the job in a list: its output's frame once done and kept
        here, else its template's. Made once per source and kept in the cache folder."""
        job = self.get(job_id)
        if job.status is JobStatus.done and self.has_local_output(job):
            source, key = _output_of(job)[0], f"{job.id}-output"
        else:
            with self._db.session() as session:
                stored = session.scalars(select(Asset.stored_name).where(Asset.id == job.video.id)).one()
            source, key = self.uploads_dir / stored, f"{job.video.sha256}-template"
        target = self.settings.cache_dir / "posters" / f"{key}.jpg"
        return target if target.is_file() else write_poster(source, target)

    def output_file(self, job_id: str) -> tuple[Path, str]:
        """The finished video's path (inside outputs_dir) and its download name."""
        return _output_of(self.get(job_id))

    @staticmethod
    def has_local_output(job: JobView) -> bool:
        return job.output_path is not None and job.output_path.is_file()

    def batch_outputs(self, batch_id: str) -> list[tuple[Path, str]]:
        """(path, download name) of every finished video of a batch, in the batch's order; raises
        when none has finished."""
        outputs = [_output_of(job) for job in self.get_batch(batch_id).jobs if job.status is JobStatus.done]
        if not outputs:
            raise errors.batch_has_no_output()
        return outputs

    def _position(self, session: Session, job: Job) -> int:
        return self._positions(session)[job.id]

    def _positions(self, session: Session) -> dict[str, int]:
        queued = queued_in_order(session, self.settings.queue_high_burst)
        return {job_id: place for place, job_id in enumerate(queued, start=1)}

    def _view(self, job: Job, position: int | None) -> JobView:
        return JobView(
            id=job.id,
            batch_id=job.batch_id,
            status=JobStatus(job.status),
            stage=job.stage,
            progress=job.progress,
            queue_position=position,
            priority=Lane.high if job.lane == Lane.high else Lane.normal,
            audio=asset_view(job.audio),
            video=asset_view(job.video),
            params=dict(job.params),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=recorded_error(job),
            output_path=self.outputs_dir / job.output_path if job.output_path else None,
            output_size=job.output_size,
            output_name=job.output_name,
            report=job.report,
            attempts=job.attempts,
            worker=job.worker,
            worker_name=job.worker_name,
            timings=job.timings,
            storage_state=job.storage_state,
            storage_key=job.storage_key if job.storage_state == StorageState.uploaded else None,
            storage_error=job.storage_error,
            cancel_requested=bool(job.cancel_requested),
        )

    # --- changing -----------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobView:
        """A queued job is cancelled at once; a running one stops within about 2 s, leaving no output.
        A finished job is left as it is."""
        with job_context(job_id):
            if self._db.cancel_queued(job_id, errors.Cancelled()):
                log.info("cancelled before it started")
            elif self._db.request_cancel(job_id):
                log.info("cancel requested")
        return self.get(job_id)

    def retry(self, job_id: str) -> JobView:
        """A failed, cancelled or timed-out job goes to the end of the queue again (attempts + 1)."""
        view = self.get(job_id)
        if view.status not in RETRYABLE:
            raise errors.not_retryable(view.status.value)
        self.ensure_free_space()
        # Before it is queued: afterwards a worker may already be writing there.
        shutil.rmtree(self.outputs_dir / job_id, ignore_errors=True)
        if not self._db.requeue_for_retry(job_id):
            raise errors.not_retryable(self.get(job_id).status.value)
        self._queue.wake(job_id)
        with job_context(job_id):
            log.info("queued again (attempt %d)", view.attempts + 1)
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        """Remove the job and its output. A running job's worker sees the row gone within a poll,
        stops the generation and removes whatever it wrote meanwhile."""
        job = self.get(job_id)
        self._db.delete_job(job_id)
        shutil.rmtree(self.outputs_dir / job_id, ignore_errors=True)
        if job.storage_key is not None:
            delete_object(self.settings, job.storage_key)
        with job_context(job_id):
            log.info("deleted")

    def workers(self) -> list[WorkerView]:
        """Every worker heard from within settings.worker_forget_after, most recent first: alive or not,
        busy with what."""
        return view_workers(self._db.workers(), self.settings)

    def recover(self) -> None:
        """Jobs left running by a worker that is gone are queued again once (else they fail as
        "worker_lost"), and queued jobs without a queue message get one. Safe to run anywhere, any time."""
        recover_jobs(self.settings, self._db, self._queue)


def _output_of(view: JobView) -> tuple[Path, str]:
    if view.status == JobStatus.expired:
        raise errors.output_expired(view.id)
    path = view.output_path
    if view.status != JobStatus.done or path is None or view.output_name is None or not path.is_file():
        raise errors.no_output(view.id)
    return path, view.output_name


def _status(status: JobStatus | str) -> JobStatus:
    try:
        return JobStatus(status)
    except ValueError:
        names = ", ".join(s.value for s in JobStatus)
        raise errors.invalid_params(
            f"unknown status {status!r} (one of {names})", f"未知状态 {status!r}（可选：{names}）"
        ) from None


def asset_view(asset: Asset) -> AssetView:
    return AssetView(
        id=asset.id,
        kind="audio" if asset.kind == "audio" else "video",
        name=asset.name,
        size=asset.size,
        duration=asset.duration,
        sha256=asset.sha256,
        created_at=asset.created_at,
    )


def new_job(
    audio: Asset,
    video: Asset,
    params: dict[str, Any],
    batch_id: str | None = None,
    index: int | None = None,
    lane: Lane = Lane.normal,
) -> Job:
    now = utcnow()
    return Job(
        id=new_id(),
        batch_id=batch_id,
        audio_id=audio.id,
        video_id=video.id,
        status=JobStatus.queued,
        params=params,
        engine=params["engine"],
        device=params.get("device"),
        lane=lane,
        output_name=output_name(audio.name, video.name, index),
        created_at=now,
        queued_at=now,
    )


def display_name(name: str) -> str:
    """An uploader's file name as koubo shows it: any Unicode, no control characters, 255 at most."""
    return _CONTROL.sub("", name or "").strip()[:255] or "upload"
