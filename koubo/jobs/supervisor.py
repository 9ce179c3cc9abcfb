"""The supervisor: inside a Huey worker, it claims the next job and watches its generation.

A worker that takes a message claims the oldest queued job in the database that its consumer can
serve (engine, device), so the order shown to users (queue positions) is the order jobs run in,
whatever order the messages were written in (retries, restarts). A message taken by a worker that
can serve nothing queued goes back to the queue for another worker.

The generation runs in the slot's warm generation process (koubo.jobs.generation_process), which
writes progress and result to the database. The supervisor polls the job's row every POLL_S
seconds for a cancel request, keeps a heartbeat, enforces settings.task_timeout, and notices a
process that died without a result; it settles the job whenever the process did not.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time
from enum import Enum

from koubo import errors
from koubo.config import Settings
from koubo.jobs.generation_process import GenerationProcess, WarmSlot
from koubo.jobs.huey_queue import JobQueue
from koubo.jobs.store import FINISHED, Database, JobStatus, Routing, RunSnapshot, patiently, utcnow
from koubo.jobs.workers import DB_PATIENCE_S, DB_UNREACHABLE, HEARTBEAT_S, routing_of
from koubo.logs import job_context

log = logging.getLogger(__name__)

POLL_S = 0.25  # cancel requests, timeouts and a dead generation process are noticed this fast
# A process that takes longer to load gets its job anyway: it fails as crashed or runs late, visibly.
READY_WAIT_S = 120.0


class StopReason(Enum):
    cancelled = "cancelled"
    timed_out = "timed_out"
    deleted = "deleted"
    taken_over = "taken_over"  # recovery gave the job to another worker


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def supervise_next(settings: Settings, db: Database, queue: JobQueue, slot: WarmSlot, message_job_id: str) -> None:
    """Run the oldest queued job this worker can serve, which need not be `message_job_id` (see the
    module's docstring)."""
    worker = worker_name()
    routing = routing_of(settings)
    # A job is claimed once the slot's process has loaded the pipeline: its start, its progress and
    # its timeout are the generation's, and another worker may take the job meanwhile.
    process = slot.take()
    if not process.wait_ready(READY_WAIT_S):
        how = f"exited ({process.returncode})" if not process.alive() else f"not ready after {READY_WAIT_S:.0f} s"
        log.warning("generation process %d %s; the next job starts regardless", process.pid, how)
    job_id = patiently(
        lambda: db.claim_next(worker, routing, settings.queue_high_burst), "claiming a job", DB_PATIENCE_S
    )
    if job_id is None:
        _pass_on(db, queue, routing, message_job_id)
        return
    with job_context(job_id):
        Supervision(settings, db, job_id, worker).run(slot)


def _pass_on(db: Database, queue: JobQueue, routing: Routing, message_job_id: str) -> None:
    # Jobs still queued are ones this worker does not offer what they need for: the message is
    # another worker's to take. Recovery adds one where a message goes missing regardless.
    if not db.count_queued():
        log.info("nothing queued for the message of job %s: it was cancelled or has run", message_job_id)
        return
    log.debug("no queued job fits %s (%s, %s); the message goes back", routing.name, routing.device, routing.engines)
    queue.pass_on(message_job_id)


class Supervision:
    """One run of one job on the slot's generation process, watched until the job ends."""

    def __init__(self, settings: Settings, db: Database, job_id: str, worker: str) -> None:
        self.settings = settings
        self.db = db
        self.job_id = job_id
        self.worker = worker
        self.output_dir = settings.outputs_dir / job_id

    def run(self, slot: WarmSlot) -> None:
        log.info("started on %s", self.worker)
        started = time.monotonic()
        process = slot.take()
        stopping = False
        try:
            process.start(self.job_id, self.worker)  # a process gone already is noticed as a crash
            reason = self._watch(process, started)
            self._settle(process, reason, time.monotonic() - started)
        except KeyboardInterrupt:
            # Huey raises this in the task when the consumer is told to stop now (SIGTERM).
            stopping = True
            self._hand_back(process)
            raise
        finally:
            # After an error here (the database unreachable...), no generation goes on unwatched;
            # the job's heartbeat stops and recovery takes it up.
            if process.current is not None and process.alive():
                process.kill()
            if not stopping:
                slot.after_job(process)

    def _watch(self, process: GenerationProcess, started: float) -> StopReason | None:
        reason: StopReason | None = None
        last_beat = started
        while True:
            if process.wait(POLL_S):
                return reason
            now = time.monotonic()
            try:
                if now - last_beat >= HEARTBEAT_S:
                    self.db.update_run(self.job_id, self.worker, heartbeat_at=utcnow())
                    last_beat = now
                snapshot = self.db.snapshot(self.job_id) if reason is None else None
            except DB_UNREACHABLE as error:
                # The generation goes on; if the database stays away past worker_timeout, recovery
                # gives the job to another worker and the next snapshot here says so.
                log.warning("the database is unreachable (%s); the generation goes on", error.orig or error)
                time.sleep(1.0)
                continue
            if reason is None:
                reason = stop_reason(snapshot, self.worker, now - started, self.settings.task_timeout)
                if reason is not None:
                    log.info("stopping the generation: %s", reason.value)
                    process.stop()

    def _settle(self, process: GenerationProcess, reason: StopReason | None, elapsed: float) -> None:
        snapshot = patiently(lambda: self.db.snapshot(self.job_id), "reading the job's outcome", DB_PATIENCE_S)
        if snapshot is None:
            shutil.rmtree(self.output_dir, ignore_errors=True)
            log.info("the job was deleted while running; its files are removed")
            return
        if not self._ours(snapshot):
            log.info("%s after %.1f s", snapshot.status.value, elapsed)
            return
        status, error = run_outcome(reason, process.returncode, self.settings.task_timeout)
        # Only a done job keeps its folder; a killed process may have left parts in it.
        shutil.rmtree(self.output_dir, ignore_errors=True)
        patiently(
            lambda: self.db.finish_run(self.job_id, self.worker, status, error), "recording the outcome", DB_PATIENCE_S
        )
        level = logging.INFO if status == JobStatus.cancelled else logging.WARNING
        log.log(level, "%s after %.1f s: %s", status.value, elapsed, error.en)

    def _hand_back(self, process: GenerationProcess) -> None:
        # The consumer waits for this process to exit: a second stop signal must not cut this short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        process.kill()
        snapshot = self.db.snapshot(self.job_id)
        if snapshot is None or not self._ours(snapshot):
            return
        shutil.rmtree(self.output_dir, ignore_errors=True)
        if snapshot.cancel_requested:
            self.db.finish_run(self.job_id, self.worker, JobStatus.cancelled, errors.Cancelled())
            log.info("cancelled while the worker was stopping")
        else:
            self.db.hand_back(self.job_id, self.worker)
            log.warning("the worker is stopping: the job goes back to the queue")

    def _ours(self, snapshot: RunSnapshot) -> bool:
        return snapshot.status == JobStatus.running and snapshot.worker == self.worker


def stop_reason(snapshot: RunSnapshot | None, worker: str, elapsed: float, timeout: float) -> StopReason | None:
    """Why a running generation should stop now, if it should."""
    if snapshot is None:
        return StopReason.deleted
    ours = snapshot.status == JobStatus.running and snapshot.worker == worker
    # Finished but not ours: the process has written its result and is reporting the end.
    if not ours and snapshot.status not in FINISHED:
        return StopReason.taken_over
    if ours and snapshot.cancel_requested:
        return StopReason.cancelled
    if elapsed > timeout:
        return StopReason.timed_out
    return None


def run_outcome(
    reason: StopReason | None, returncode: int | None, timeout: float
) -> tuple[JobStatus, errors.KouboError]:
    """The status of a run whose generation process ended it without recording one (`returncode`
    None: the process lives on, having reported the job's end without a result)."""
    if reason is StopReason.cancelled:
        return JobStatus.cancelled, errors.Cancelled()
    if reason is StopReason.timed_out:
        return JobStatus.timed_out, errors.job_timed_out(timeout)
    if returncode is None:
        return JobStatus.failed, errors.internal_error()
    return JobStatus.failed, errors.worker_crashed(returncode)
