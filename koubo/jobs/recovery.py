"""Recovery: the runs of workers that are gone are settled, and every queued job gets a message.

Every worker's housekeeping and the web process run it (koubo.jobs.workers.keep_house); any number
of processes on any machines may run it at once, because each change is a conditional UPDATE.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from datetime import datetime, timedelta
from pathlib import Path

from koubo import errors
from koubo.config import Settings
from koubo.jobs.huey_queue import QUEUE_UNREACHABLE, JobQueue, create_queue
from koubo.jobs.store import Database, JobStatus, RunningJob, patiently, utcnow
from koubo.jobs.workers import DB_PATIENCE_S, forget_gone_workers, keep_house
from koubo.logs import job_context

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a job is queued again after a lost worker only while attempts < this


def recover_jobs(settings: Settings, db: Database, queue: JobQueue) -> None:
    """Settle the runs of workers that are gone, and give every queued job a queue message.

    A job whose worker is gone goes back to its place in the queue while it has been queued fewer
    than MAX_ATTEMPTS times; after that it fails as "worker_lost" (a retry starts it again).
    """
    now = utcnow()
    for job in db.running_jobs():
        if not worker_gone(job, now, settings.worker_timeout):
            continue
        shutil.rmtree(settings.outputs_dir / job.id, ignore_errors=True)
        with job_context(job.id):
            if job.cancel_requested:
                settled = db.finish_run(job.id, job.worker, JobStatus.cancelled, errors.Cancelled())
                outcome = "cancelled"
            elif job.attempts < MAX_ATTEMPTS:
                settled = db.requeue_lost(job)
                outcome = "queued again"
            else:
                settled = db.finish_run(job.id, job.worker, JobStatus.failed, errors.worker_lost(job.worker_name))
                outcome = "failed (worker lost)"
            if settled:
                log.warning("its worker %s (%s) is gone: %s", job.worker_name, job.worker, outcome)
    try:
        _add_missing_messages(db, queue)
    except QUEUE_UNREACHABLE as error:
        # Redis restarting: the next recovery writes them.
        log.warning("the queue is unreachable (%s); missing messages are added later", error)


def _add_missing_messages(db: Database, queue: JobQueue) -> None:
    # Any message runs the oldest queued job, so what matters is that there are enough of them.
    queued = db.queued_ids()
    pending = queue.pending_job_ids()
    named = set(pending)
    missing = [job_id for job_id in queued if job_id not in named][: max(0, len(queued) - len(pending))]
    for job_id in missing:
        queue.enqueue(job_id)
    if missing:
        log.info("%d queued job(s) had no queue message; added", len(missing))


def worker_gone(job: RunningJob, now: datetime, timeout: float) -> bool:
    """A run's heartbeat older than `timeout` means its worker is gone, wherever it ran; on this
    machine, a supervising process that no longer exists says so at once."""
    if job.worker is None or job.heartbeat_at is None:
        return True
    if now - job.heartbeat_at > timedelta(seconds=timeout):
        return True
    host, _, pid = job.worker.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; it lingers where no init process reaps orphans (some containers).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def recover_periodically(settings: Settings, stop: threading.Event) -> None:
    """Recovery every RECOVERY_S until `stop` is set, for `koubo serve`'s web side: with
    `--no-worker`, or every worker gone, nobody else would settle their jobs. Rows of workers gone
    for over settings.worker_forget_after are deleted here too."""
    queue = create_queue(settings)
    db = patiently(lambda: Database(settings.database_location), "opening the database", DB_PATIENCE_S)
    try:

        def maintain() -> None:
            recover_jobs(settings, db, queue)
            forget_gone_workers(db, settings)

        keep_house(db, maintain, stop.is_set)
    finally:
        db.close()
        queue.close()
