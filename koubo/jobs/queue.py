"""The work queue: Huey messages wake the workers; the database says which job runs next.

Every queued job has one Huey message (`run_job`). A Huey worker process that takes a message
claims the oldest queued job in the database that its consumer can serve (engine, device), so the
order shown to users (queue positions) is the order jobs run in, whatever order the messages were
written in (retries, restarts). A message taken by a worker that can serve nothing queued goes
back to the queue for another worker. The database is the source of truth: messages lost with a
Redis restart are written again by the recovery that every worker and the web process run.

The worker does not generate: it supervises. The generation runs in a child process (a fresh
interpreter: MediaPipe's threads and fork do not mix) that writes its progress and its result to
the database. The supervisor polls the job's row every POLL_S seconds for a cancel request, keeps
a heartbeat, enforces settings.task_timeout, and notices a child that died without a result. It
stops a child by closing its stdin (the child's `should_stop` turns true) and kills it if it has
not exited STOP_GRACE_S later. The same closed pipe stops a child whose supervisor died.

`python -m koubo.jobs.queue` (and `koubo worker`) runs the consumer; `--run-job` (internal) is the child.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import IO, Protocol, TypeVar

from huey import Huey, RedisHuey, SqliteHuey
from huey.api import TaskWrapper
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from koubo import errors
from koubo.config import Settings, load_settings
from koubo.jobs.store import (
    FINISHED,
    SQLITE_BUSY_TIMEOUT_S,
    Database,
    Job,
    JobStatus,
    Routing,
    RunningJob,
    RunSnapshot,
    patiently,
    upload_pending,
    utcnow,
)
from koubo.jobs.workers import (
    HEARTBEAT_S,
    forget_gone_workers,
    keep_house,
    register,
    routing_of,
    worker_identity,
)
from koubo.ops.logs import job_context, setup_logging

log = logging.getLogger(__name__)

QUEUE_NAME = "koubo"
TASK_NAME = "run_job"
POLL_S = 0.25  # cancel requests, timeouts and a dead child are noticed this fast
STOP_GRACE_S = 2.0
MAX_ATTEMPTS = 2  # a job is queued again after a lost worker only while attempts < this
PROGRESS_INTERVAL_S = 0.25
# A message no job fits goes back this much later, for a worker that offers what the job needs.
PASS_ON_DELAY_S = 2.0
# How long a worker waits for the database to come back (a restart) before giving up on a job.
DB_PATIENCE_S = 120.0
# Errors of a database that is restarting or out of reach: a worker waits them out.
DB_UNREACHABLE = (OperationalError, InterfaceError)
HOUSEKEEPING_GRACE_S = 5.0  # a stopping consumer waits this long to mark its worker row stopped
# The same for the queue's storage (Redis, or SQLite locked for too long).
QUEUE_UNREACHABLE = (RedisError, sqlite3.Error, OSError)
# Idle workers look for new messages at least this often (Huey's default backs off to 10 s).
IDLE_POLL_MAX_S = 1.0
# Each pipeline stage's share of a job's progress, in the order the stages run.
STAGE_WEIGHTS = {"features": 0.05, "decode": 0.05, "face": 0.25, "render": 0.35, "check": 0.30}

T = TypeVar("T")


class EventLike(Protocol):
    def is_set(self) -> bool: ...


# --- the queue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobQueue:
    huey: Huey
    task: TaskWrapper

    def enqueue(self, job_id: str) -> None:
        self.task(job_id)

    def wake(self, job_id: str) -> None:
        """Enqueue, or if the queue is unreachable (Redis restarting) leave it to recovery: the job's
        row is what counts, and recovery writes a message for every queued job that lacks one."""
        try:
            self.enqueue(job_id)
        except QUEUE_UNREACHABLE as error:
            log.warning("the queue is unreachable (%s); job %s will get its message from recovery", error, job_id)

    def pass_on(self, job_id: str) -> None:
        self.task.schedule(args=(job_id,), delay=PASS_ON_DELAY_S)

    def pending_job_ids(self) -> list[str]:
        """The job ids of the messages waiting in the queue or scheduled (not the ones a worker has taken)."""
        tasks = [*self.huey.pending(), *self.huey.scheduled()]
        return [task.args[0] for task in tasks if task.name == TASK_NAME]

    def close(self) -> None:
        self.huey.storage.close()


def create_queue(settings: Settings) -> JobQueue:
    """Huey over settings.queue_location, with koubo's tasks registered (no consumer started)."""
    huey = _create_huey(settings.queue_location)
    database = _per_process(lambda: Database(settings.database_location))

    def run_job(job_id: str) -> None:
        supervise_next(settings, database(), queue, job_id)

    task = huey.task(name=TASK_NAME)(run_job)
    queue = JobQueue(huey, task)
    return queue


def _create_huey(location: str) -> Huey:
    if location.startswith("sqlite:///"):
        path = Path(location.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, timeout=SQLITE_BUSY_TIMEOUT_S)
    if location.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(QUEUE_NAME, url=location, results=False)
    raise errors.bad_queue_url(location)


def _per_process(factory: Callable[[], T]) -> Callable[[], T]:
    """`factory()`, made once in each process that asks: the consumer forks its workers, and pooled
    database connections must not be shared across a fork."""
    made: dict[int, T] = {}

    def get() -> T:
        pid = os.getpid()
        if pid not in made:
            made[pid] = factory()
        return made[pid]

    return get


# --- the supervisor (inside a Huey worker) ----------------------------------------------------------


class StopReason(Enum):
    cancelled = "cancelled"
    timed_out = "timed_out"
    deleted = "deleted"
    taken_over = "taken_over"  # recovery gave the job to another worker


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def supervise_next(settings: Settings, db: Database, queue: JobQueue, message_job_id: str) -> None:
    """Run the oldest queued job this worker can serve, which need not be `message_job_id` (see the
    module's docstring)."""
    worker = worker_name()
    routing = routing_of(settings)
    job_id = patiently(lambda: db.claim_next(worker, routing, settings.queue_high_burst), "claiming a job", DB_PATIENCE_S)
    if job_id is None:
        _pass_on(db, queue, routing, message_job_id)
        return
    with job_context(job_id):
        Supervision(settings, db, job_id, worker).run()


def _pass_on(db: Database, queue: JobQueue, routing: Routing, message_job_id: str) -> None:
    # Jobs still queued are ones this worker does not offer what they need for: the message is
    # another worker's to take. Recovery adds one where a message goes missing regardless.
    if not db.count_queued():
        log.info("nothing queued for the message of job %s: it was cancelled or has run", message_job_id)
        return
    log.debug("no queued job fits %s (%s, %s); the message goes back", routing.name, routing.device, routing.engines)
    queue.pass_on(message_job_id)


class Supervision:
    """One run of one job: the child process, watched until it exits."""

    def __init__(self, settings: Settings, db: Database, job_id: str, worker: str) -> None:
        self.settings = settings
        self.db = db
        self.job_id = job_id
        self.worker = worker
        self.output_dir = settings.outputs_dir / job_id

    def run(self) -> None:
        log.info("started on %s", self.worker)
        started = time.monotonic()
        child = _start_child(self.settings, self.job_id, self.worker)
        try:
            reason = self._watch(child, started)
            self._settle(child.returncode, reason, time.monotonic() - started)
        except KeyboardInterrupt:
            # Huey raises this in the task when the consumer is told to stop now (SIGTERM).
            self._hand_back(child)
            raise
        finally:
            # After an error here (the database unreachable...), no generation goes on unwatched;
            # the job's heartbeat stops and recovery takes it up.
            if child.poll() is None:
                child.kill()
                child.wait()

    def _watch(self, child: subprocess.Popen[bytes], started: float) -> StopReason | None:
        reason: StopReason | None = None
        last_beat = started
        while True:
            try:
                child.wait(timeout=POLL_S)
                return reason
            except subprocess.TimeoutExpired:
                pass
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
                    _stop_child(child)

    def _settle(self, returncode: int, reason: StopReason | None, elapsed: float) -> None:
        snapshot = patiently(lambda: self.db.snapshot(self.job_id), "reading the job's outcome", DB_PATIENCE_S)
        if snapshot is None:
            shutil.rmtree(self.output_dir, ignore_errors=True)
            log.info("the job was deleted while running; its files are removed")
            return
        if not self._ours(snapshot):
            log.info("%s after %.1f s", snapshot.status.value, elapsed)
            return
        status, error = run_outcome(reason, returncode, self.settings.task_timeout)
        # Only a done job keeps its folder; a killed child may have left parts in it.
        shutil.rmtree(self.output_dir, ignore_errors=True)
        patiently(
            lambda: self.db.finish_run(self.job_id, self.worker, status, error), "recording the outcome", DB_PATIENCE_S
        )
        level = logging.INFO if status == JobStatus.cancelled else logging.WARNING
        log.log(level, "%s after %.1f s: %s", status.value, elapsed, error.en)

    def _hand_back(self, child: subprocess.Popen[bytes]) -> None:
        # The consumer waits for this process to exit: a second stop signal must not cut this short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child.kill()
        child.wait()
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
    """Why a running child should stop now, if it should."""
    if snapshot is None:
        return StopReason.deleted
    ours = snapshot.status == JobStatus.running and snapshot.worker == worker
    # Finished but not ours: the child has written its result and is exiting.
    if not ours and snapshot.status not in FINISHED:
        return StopReason.taken_over
    if ours and snapshot.cancel_requested:
        return StopReason.cancelled
    if elapsed > timeout:
        return StopReason.timed_out
    return None


def run_outcome(reason: StopReason | None, returncode: int, timeout: float) -> tuple[JobStatus, errors.KouboError]:
    """The status of a run whose child exited without recording one."""
    if reason is StopReason.cancelled:
        return JobStatus.cancelled, errors.Cancelled()
    if reason is StopReason.timed_out:
        return JobStatus.timed_out, errors.job_timed_out(timeout)
    return JobStatus.failed, errors.worker_crashed(returncode)


def _start_child(settings: Settings, job_id: str, worker: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    command = [sys.executable, "-m", "koubo.jobs.queue", "--run-job", job_id, "--worker", worker]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
    try:
        # The settings travel whole: they may come from code (serve(settings)), not only from the environment.
        _stdin(child).write(settings.model_dump_json().encode("utf-8") + b"\n")
        _stdin(child).flush()
    except OSError:
        log.warning("the generation process exited before it was given its settings")
    return child


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    try:
        _stdin(child).close()
    except OSError:
        pass  # it has gone already
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _stdin(child: subprocess.Popen[bytes]) -> IO[bytes]:
    if child.stdin is None:
        raise RuntimeError("the generation process was started without a stdin pipe")
    return child.stdin


# --- recovery ---------------------------------------------------------------------------------------


def recover_jobs(settings: Settings, db: Database, queue: JobQueue) -> None:
    """Settle the runs of workers that are gone, and give every queued job a queue message.

    A job whose worker is gone goes back to its place in the queue while it has been queued fewer
    than MAX_ATTEMPTS times; after that it fails as "worker_lost" (a retry starts it again). Any
    number of processes on any machines may run this at once: each change is conditional.
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


# --- the consumer -----------------------------------------------------------------------------------


def run_consumer(settings: Settings) -> None:
    """Run the consumer with settings.max_concurrent worker processes until it is told to stop.

    SIGTERM stops at once: running jobs go back to the queue and resume at the next start.
    SIGINT (Ctrl-C) lets running jobs finish first. Must run in its own process's main thread.
    """
    setup_logging(settings)
    settings = worker_identity(settings)
    queue = create_queue(settings)
    db = patiently(lambda: Database(settings.database_location), "opening the database", DB_PATIENCE_S)
    register(db, settings)
    # Huey forks its workers from this process: no connection may be open here then (a forked
    # SQLite connection's locks would block the children), so housekeeping has its own process.
    db.close()
    stop = multiprocessing.Event()
    housekeeper = multiprocessing.Process(target=_housekeeping, args=(settings, stop, os.getpid()), name="housekeeping")
    housekeeper.start()
    consumer = queue.huey.create_consumer(
        workers=settings.max_concurrent, worker_type="process", periodic=False, max_delay=IDLE_POLL_MAX_S
    )
    log.info("consumer of %s starting %d worker(s)", _describe_queue(settings.queue_location), settings.max_concurrent)
    try:
        consumer.run()
    finally:
        stop.set()
        housekeeper.join(HOUSEKEEPING_GRACE_S)


def _housekeeping(settings: Settings, stop: EventLike, parent: int) -> None:
    """The worker's heartbeat and recovery, until the consumer says stop or is gone (kill -9)."""
    # The consumer decides when this stops: a signal to the whole group must not skip "stopped".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    queue = create_queue(settings)
    db = patiently(lambda: Database(settings.database_location), "opening the database", DB_PATIENCE_S)
    try:
        keep_house(
            db,
            lambda: recover_jobs(settings, db, queue),
            lambda: stop.is_set() or os.getppid() != parent,
            settings.worker_name,
        )
    finally:
        db.close()
        queue.close()


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


def _describe_queue(location: str) -> str:
    # Never the whole URL: a Redis URL may hold a password.
    return location if location.startswith("sqlite:") else location.partition(":")[0] + "://…"


# --- the generation child ---------------------------------------------------------------------------


def run_generation(job_id: str, worker: str) -> None:
    """The child: settings arrive as one JSON line on stdin; the end of stdin means "stop"."""
    # Ctrl-C in a terminal reaches the whole process group; the supervisor decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    line = stdin.readline()
    if not line:
        return  # the supervisor is gone before it said anything
    settings = Settings(**json.loads(line))
    setup_logging(settings)
    stop = threading.Event()
    threading.Thread(target=_set_at_end, args=(stdin.fileno(), stop), name="stop-request", daemon=True).start()
    db = Database(settings.database_location)
    try:
        with job_context(job_id):
            _generate(settings, db, job_id, worker, stop)
    finally:
        db.close()


def _set_at_end(fd: int, event: threading.Event) -> None:
    # Raw reads: a thread blocked inside sys.stdin's buffered reader holds its lock, and the
    # interpreter aborts when it finalizes stdin at exit.
    while os.read(fd, 4096):
        pass
    event.set()


def _generate(settings: Settings, db: Database, job_id: str, worker: str, stop: threading.Event) -> None:
    # Only this process pays for the pipeline's imports (NumPy, SciPy, MediaPipe...).
    from koubo.pipeline import GenerateOptions, Generator

    with db.session() as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one_or_none()
    if job is None:
        log.info("the job was deleted before it started")
        return
    params = job.params
    options = GenerateOptions(
        engine=params["engine"],
        expressiveness=params["expressiveness"],
        crf=params["crf"],
        preset=params["preset"],
        denoise=params.get("denoise", "off"),  # jobs queued before denoising existed
    )
    output_dir = settings.outputs_dir / job_id
    log.info("generating %s from %r and %r", job.output_name, job.audio.name, job.video.name)
    try:
        result = Generator(settings).generate(
            settings.uploads_dir / job.audio.stored_name,
            settings.uploads_dir / job.video.stored_name,
            output_dir / job.output_name,
            options,
            progress=ProgressWriter(db, job_id, worker),
            should_stop=stop.is_set,
            names=(job.audio.name, job.video.name),
        )
    except errors.Cancelled:
        log.info("stopped on request")
        return
    except errors.KouboError as error:
        log.warning("failed: %s: %s", error.code, error.en)
        _record_failure(db, job_id, worker, output_dir, error)
        return
    except Exception:
        log.exception("internal error while generating")
        _record_failure(db, job_id, worker, output_dir, errors.internal_error())
        return
    size = result.output.stat().st_size
    recorded = patiently(
        lambda: db.finish_run(
            job_id,
            worker,
            JobStatus.done,
            stage="done",
            progress=1.0,
            output_path=f"{job_id}/{job.output_name}",
            output_size=size,
            timings=result.timings,
            report=_plain_json(result.report.to_dict()) if result.report else None,
            **upload_pending(settings.storage_upload != "off"),
        ),
        "recording the result",
        DB_PATIENCE_S,
    )
    if recorded:
        log.info("done: %s, %d bytes, %.1f s of video", job.output_name, size, result.duration)
    else:
        log.warning("finished, but the job was deleted or taken over meanwhile")


def _record_failure(db: Database, job_id: str, worker: str, output_dir: Path, error: errors.KouboError) -> None:
    # The pipeline has removed its own files; the empty folder goes too (never anything in it).
    try:
        output_dir.rmdir()
    except OSError:
        pass
    patiently(lambda: db.finish_run(job_id, worker, JobStatus.failed, error), "recording the failure", DB_PATIENCE_S)


def _plain_json(value: dict[str, object]) -> dict[str, object]:
    """`value` with NumPy scalars turned into Python numbers, as a JSON column needs."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def overall_progress(stage: str, fraction: float) -> float:
    """The share of the whole job done once `stage` is `fraction` done."""
    before = 0.0
    for name, weight in STAGE_WEIGHTS.items():
        if name == stage:
            return before + weight * min(max(fraction, 0.0), 1.0)
        before += weight
    return 1.0 if stage == "done" else 0.0


class ProgressWriter:
    """The pipeline's progress callback: the job's stage and overall progress in its row, never
    going backwards, written at most once per PROGRESS_INTERVAL_S unless the stage changes."""

    def __init__(self, db: Database, job_id: str, worker: str) -> None:
        self.db = db
        self.job_id = job_id
        self.worker = worker
        self.stage: str | None = None
        self.progress = 0.0
        self.written_at = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        self.progress = max(self.progress, overall_progress(stage, fraction))
        now = time.monotonic()
        if stage == self.stage and now - self.written_at < PROGRESS_INTERVAL_S:
            return
        self.stage = stage
        self.written_at = now
        try:
            self.db.update_run(self.job_id, self.worker, stage=stage, progress=round(self.progress, 4))
        except DB_UNREACHABLE as error:
            log.warning("progress not recorded, the database is unreachable: %s", error.orig or error)


# --- command line -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m koubo.jobs.queue",
        description="Run koubo's job queue consumer (settings: koubo.toml and KOUBO_* variables).",
    )
    parser.add_argument("--run-job", metavar="JOB_ID", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_job:
        run_generation(args.run_job, args.worker)
        logging.shutdown()
        # Everything is written. Skip the interpreter's teardown: unwinding MediaPipe takes most of
        # a second, and the worker waits for this process to exit before it takes the next job.
        os._exit(0)
    else:
        run_consumer(load_settings())
        # Stopped and written: the interpreter's last garbage collections would add seconds to a stop.
        gc.freeze()
    return 0


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: Huey names a task after its module, and the
    # web app enqueues koubo.jobs.queue's.
    from koubo.jobs import queue as _queue  # noqa: PLW0406

    sys.exit(_queue.main())
