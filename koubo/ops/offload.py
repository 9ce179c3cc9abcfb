"""Done jobs' videos to object storage, as an outbox in the job's own row (like the webhooks).

Finishing a job with `storage_upload` on marks its upload pending (koubo.jobs.store
`upload_pending`); an `Uploader` thread in `koubo serve` uploads it (koubo/storage.py verifies size
and ETag), then records the key and ETag; the outbox's states (StorageState) change only through
the store's methods. Each attempt is claimed by moving `storage_next_at` past
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

from koubo.config import Settings
from koubo.jobs.store import Database, JobStatus, utcnow
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
        attempted = 0
        for job_id, attempts in self.db.due_uploads(now, BATCH):
            if self.db.claim_upload(job_id, attempts, now + LEASE):
                attempted += 1
                self._attempt(job_id, attempts + 1)
        return attempted

    def _attempt(self, job_id: str, attempt: int) -> None:
        job = self.db.get_job(job_id)
        if job is None or job.status != JobStatus.done or job.output_path is None:
            # Deleted, retried or expired meanwhile: nothing of it is to go to the bucket any more.
            self.db.drop_upload(job_id, attempt)
            return
        path = self.settings.outputs_dir / job.output_path
        key = self.store.key_for(job.id, job.output_name)
        try:
            stored = self.store.put_verified(path, key)
        except Exception as error:  # a bucket that is down, refuses or answers nonsense: retried later
            self._failed(job_id, attempt, error)
            return
        if not self.db.upload_verified(job_id, attempt, stored.key, stored.etag):
            self.store.delete(stored.key)  # the job went away while it uploaded
            return
        log.info("object storage: job %s uploaded as %s (ETag %s)", job_id, stored.key, stored.etag)
        if self.settings.storage_upload == "move":
            _remove_local(path)

    def _failed(self, job_id: str, attempt: int, error: Exception) -> None:
        delay = min(self.settings.s3_retry_interval * 2 ** (attempt - 1), MAX_RETRY_DELAY_S)
        reason = getattr(error, "en", None) or f"{type(error).__name__}: {error}"
        self.db.postpone_upload(job_id, attempt, reason[:2000], utcnow() + timedelta(seconds=delay))
        log.warning(
            "object storage: upload of job %s failed (%s); attempt %d in %.0f s", job_id, reason, attempt + 1, delay
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
