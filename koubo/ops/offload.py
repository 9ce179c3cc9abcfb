"""Done jobs' videos to object storage, as an outbox in the job's own row (like the webhooks).

Finishing a job with `storage_upload` on marks its upload pending (koubo.jobs.store
`upload_pending`); an `Uploader` thread in `koubo serve` uploads it (koubo/storage.py verifies size
and ETag), then records the key and ETag. Each attempt is claimed by moving `storage_next_at` past
a lease, so two web processes never upload one video twice. A failed attempt leaves the job done
with its local file and the reason recorded, and is tried again later, the delay doubling. With
`move`, the local copy is deleted only after the upload was verified: a job's only copy is never a
half-uploaded object.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from koubo.config import Settings
from koubo.jobs.store import Database, Job, JobStatus, StorageState, utcnow
from koubo.storage import ObjectStore

log = logging.getLogger(__name__)

POLL_S = 1.0
BATCH = 10
# An attempt is the claimant's for this long; after that it is taken to have died with its process.
LEASE = timedelta(hours=1)
MAX_RETRY_DELAY_S = 3600.0


class Uploader:
    def __init__(self, settings: Settings, db: Database, store: ObjectStore) -> None:
        self.settings = settings
        self.db = db
        self.store = store

    def run(self, stop: threading.Event) -> None:
        log.info("object storage on: %s videos to bucket %s", self.settings.storage_upload, self.store.bucket)
        while not stop.is_set():
            try:
                self.upload_due()
            except Exception:
                # The database may be locked or gone for a moment; the next poll tries again.
                log.exception("object storage: cannot read the pending uploads")
            stop.wait(POLL_S)

    def upload_due(self, now: datetime | None = None) -> int:
        """One pass: every due upload gets one attempt. Returns how many were attempted."""
        now = now or utcnow()
        with self.db.session() as session:
            due = session.execute(
                select(Job.id, Job.storage_attempts)
                .where(Job.storage_state == StorageState.pending, Job.storage_next_at <= now)
                .order_by(Job.storage_next_at)
                .limit(BATCH)
            ).all()
        attempted = 0
        for job_id, attempts in due:
            if self._claim(job_id, attempts or 0, now):
                attempted += 1
                self._attempt(job_id, (attempts or 0) + 1)
        return attempted

    def _claim(self, job_id: str, seen: int, now: datetime) -> bool:
        with self.db.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.storage_state == StorageState.pending, Job.storage_attempts == seen)
                    .values(storage_attempts=seen + 1, storage_next_at=now + LEASE)
                ).rowcount
            )

    def _attempt(self, job_id: str, attempt: int) -> None:
        with self.db.session() as session:
            job = session.scalars(select(Job).where(Job.id == job_id)).one_or_none()
        if job is None or job.status != JobStatus.done or job.output_path is None:
            # Deleted, retried or expired meanwhile: nothing of it is to go to the bucket any more.
            self._record(job_id, attempt, storage_state=None)
            return
        path = self.settings.outputs_dir / job.output_path
        key = self.store.key_for(job.id, job.output_name)
        try:
            stored = self.store.put_verified(path, key)
        except Exception as error:  # a bucket that is down, refuses or answers nonsense: retried later
            self._failed(job_id, attempt, error)
            return
        recorded = self._record(
            job_id,
            attempt,
            storage_state=StorageState.uploaded,
            storage_key=stored.key,
            storage_etag=stored.etag,
            storage_error=None,
        )
        if not recorded:
            self.store.delete(stored.key)  # the job went away while it uploaded
            return
        log.info("object storage: job %s uploaded as %s (ETag %s)", job_id, stored.key, stored.etag)
        if self.settings.storage_upload == "move":
            _remove_local(path)

    def _failed(self, job_id: str, attempt: int, error: Exception) -> None:
        delay = min(self.settings.s3_retry_interval * 2 ** (attempt - 1), MAX_RETRY_DELAY_S)
        reason = getattr(error, "en", None) or f"{type(error).__name__}: {error}"
        self._record(job_id, attempt, storage_error=reason[:2000], storage_next_at=utcnow() + timedelta(seconds=delay))
        log.warning("object storage: upload of job %s failed (%s); attempt %d in %.0f s", job_id, reason, attempt + 1, delay)

    def _record(self, job_id: str, attempt: int, **values: Any) -> bool:
        # Only while the claim is still ours.
        with self.db.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.storage_state == StorageState.pending,
                        Job.storage_attempts == attempt,
                    )
                    .values(**values)
                ).rowcount
            )


def _remove_local(path: Path) -> None:
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass  # not empty: something else of the job's is still there


def run_uploader(settings: Settings, stop: threading.Event) -> None:
    """`koubo serve`'s object-storage thread, until `stop` is set."""
    db = Database(settings.database_location)
    try:
        Uploader(settings, db, ObjectStore(settings)).run(stop)
    finally:
        db.close()
