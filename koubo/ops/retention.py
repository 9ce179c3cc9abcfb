"""Retention: finished videos deleted by age and by total size, oldest first; stale temporary files swept.

A job whose video goes stays in the history with the status "expired". Its row is changed first
(Database.expire: done -> expired), and the file deleted after: whoever looks in between (a
download, a listing) sees an expired job without a file, never a done job without one, and a job
that changed meanwhile (deleted, say) is left to whoever changed it.

Only finished files go. A running job writes to a temporary name beside its output and renames it
at the end (koubo.media.video.Mp4Writer); its folder is never touched, and any temporary file is
kept until it is a day old, which no render lasts (settings.task_timeout stops it long before).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import select

from koubo.config import Settings
from koubo.jobs.store import Database, Job, JobStatus, StorageState, utcnow
from koubo.storage import delete_object

log = logging.getLogger(__name__)

# A temporary file this old belongs to a process that is gone (crashed, killed, restarted).
TEMP_MAX_AGE = timedelta(days=1)

Reason = Literal["age", "quota", "temp", "cache"]


@dataclass(frozen=True)
class StoredOutput:
    job_id: str
    path: str  # relative to outputs_dir
    size: int
    finished_at: datetime
    storage_key: str | None = None  # its copy in object storage, deleted with it


@dataclass(frozen=True)
class Removal:
    path: Path
    size: int
    reason: Reason
    job_id: str | None = None


@dataclass
class CleanupReport:
    dry_run: bool
    removals: list[Removal] = field(default_factory=list)

    @property
    def expired_jobs(self) -> list[str]:
        return [r.job_id for r in self.removals if r.job_id is not None]

    @property
    def files_deleted(self) -> int:
        return len(self.removals)

    @property
    def bytes_freed(self) -> int:
        return sum(r.size for r in self.removals)

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        return (
            f"{len(self.expired_jobs)} video(s) expired, {self.files_deleted} file(s) in all, "
            f"{verb} {self.bytes_freed / 2**20:.1f} MiB"
        )


def retention_configured(settings: Settings) -> bool:
    return bool(settings.retention_days) or settings.retention_max_bytes is not None


def cleanup(settings: Settings, db: Database, *, now: datetime | None = None, dry_run: bool = False) -> CleanupReport:
    """Expire videos past settings.retention_days or beyond settings.retention_max_bytes, oldest
    first; sweep temporary files a day old; trim the feature cache by the same age."""
    now = now or utcnow()
    max_age = timedelta(days=settings.retention_days) if settings.retention_days else None
    report = CleanupReport(dry_run)
    outputs = stored_outputs(db)
    for output, reason in choose_expired(outputs, now, max_age, settings.retention_max_bytes):
        removal = _expire(settings, db, output, reason, dry_run)
        if removal is not None:
            report.removals.append(removal)
    running = _running_job_ids(db)
    for path in stale_temp_files(settings, running, now - TEMP_MAX_AGE):
        report.removals.append(_remove(path, "temp", dry_run))
    if max_age is not None:
        for path in _stale_files(settings.cache_dir, now - max_age):
            report.removals.append(_remove(path, "cache", dry_run))
    return report


def stored_outputs(db: Database) -> list[StoredOutput]:
    """The done jobs' videos, oldest first."""
    with db.session() as session:
        rows = session.execute(
            select(Job.id, Job.output_path, Job.output_size, Job.finished_at, Job.storage_state, Job.storage_key)
            .where(Job.status == JobStatus.done, Job.output_path.is_not(None), Job.finished_at.is_not(None))
            .order_by(Job.finished_at, Job.seq)
        ).all()
    return [
        StoredOutput(
            r.id,
            r.output_path,
            r.output_size or 0,
            r.finished_at,
            r.storage_key if r.storage_state == StorageState.uploaded else None,
        )
        for r in rows
    ]


def choose_expired(
    outputs: list[StoredOutput], now: datetime, max_age: timedelta | None, max_bytes: int | None
) -> list[tuple[StoredOutput, Reason]]:
    """Which of `outputs` (oldest first) go: those older than max_age, then the oldest of the rest
    until they hold max_bytes at most."""
    chosen: list[tuple[StoredOutput, Reason]] = []
    kept: list[StoredOutput] = []
    for output in outputs:
        if max_age is not None and now - output.finished_at > max_age:
            chosen.append((output, "age"))
        else:
            kept.append(output)
    if max_bytes is not None:
        total = sum(output.size for output in kept)
        for output in kept:
            if total <= max_bytes:
                break
            chosen.append((output, "quota"))
            total -= output.size
    return chosen


def _expire(settings: Settings, db: Database, output: StoredOutput, reason: Reason, dry_run: bool) -> Removal | None:
    outputs_dir = settings.outputs_dir
    path = outputs_dir / output.path
    size = _size(path)
    if dry_run:
        return Removal(path, size, reason, output.job_id)
    if not db.expire(output.job_id):
        return None  # changed meanwhile (deleted, say): left to whoever changed it
    path.unlink(missing_ok=True)
    if path.parent != outputs_dir:
        _remove_if_empty(path.parent)
    if output.storage_key is not None:
        delete_object(settings, output.storage_key)
    log.info("job %s expired (%s): deleted %s, %d bytes", output.job_id, reason, output.path, size)
    return Removal(path, size, reason, output.job_id)


def _running_job_ids(db: Database) -> set[str]:
    with db.session() as session:
        return set(session.scalars(select(Job.id).where(Job.status == JobStatus.running)))


def stale_temp_files(settings: Settings, running: set[str], cutoff: datetime) -> Iterator[Path]:
    """Temporary files last written before `cutoff`: interrupted uploads (uploads/.tmp, staged
    uploads), the web UI's uploads (gradio_dir) and unfinished videos (outputs/<job>/.<name>.part-*)
    of jobs that are not running."""
    uploads = settings.uploads_dir
    yield from _stale_files(uploads / ".tmp", cutoff)
    # The web UI's uploads (Gradio's temp folder): JobService keeps its own copy of each at once.
    yield from _stale_files(settings.gradio_dir, cutoff)
    if uploads.is_dir():
        for folder in _subfolders(uploads):
            if folder.name != ".tmp":
                yield from _stale_files(folder, cutoff, _is_staged_upload)
    if settings.outputs_dir.is_dir():
        for folder in _subfolders(settings.outputs_dir):
            if folder.name not in running:
                yield from _stale_files(folder, cutoff, _is_partial_video)


def _is_staged_upload(name: str) -> bool:
    return name.startswith(".") and name.endswith(".part")  # JobService._keep_upload's ".<id>.part"


def _is_partial_video(name: str) -> bool:
    return name.startswith(".") and ".part-" in name  # Mp4Writer's ".<name>.part-<random>.mp4"


def _subfolders(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if entry.is_dir() and not entry.is_symlink()]


def _stale_files(folder: Path, cutoff: datetime, wanted: Callable[[str], bool] = lambda name: True) -> Iterator[Path]:
    """Files under `folder` neither written nor (where the file system records it) read since `cutoff`."""
    limit = cutoff.timestamp()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            # atime too: a cache entry read every day stays, however old (relatime still updates it daily).
            if wanted(name) and max(st.st_mtime, st.st_atime) < limit:
                yield path


def _remove(path: Path, reason: Reason, dry_run: bool) -> Removal:
    size = _size(path)
    if not dry_run:
        path.unlink(missing_ok=True)
    return Removal(path, size, reason)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty, or gone already


def run_periodically(settings: Settings, stop: threading.Event) -> None:
    """`koubo serve`'s retention thread: cleanup() every settings.retention_interval until `stop` is set."""
    db = Database(settings.database_location)
    try:
        while not stop.is_set():
            try:
                report = cleanup(settings, db)
                log.info("retention: %s", report.summary())
            except Exception:
                # A locked database or an unreadable folder must not end the thread; the next run tries again.
                log.exception("retention: cleanup failed")
            stop.wait(settings.retention_interval)
    finally:
        db.close()
