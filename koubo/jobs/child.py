"""The generation process: loads the pipeline once, then runs the jobs its supervisor hands over.

Settings arrive as the first JSON line on stdin, then one job per line; the end of stdin means
"stop" (the running job's `should_stop` turns true, and the process exits). After each job it
writes `{"job": id}` to its results pipe; the job's outcome itself goes to the database. See
koubo.jobs.generation_process for the supervisor's side.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sqlalchemy import select

from koubo import errors
from koubo.config import Settings
from koubo.jobs.store import Database, Job, JobStatus, patiently, upload_pending
from koubo.jobs.workers import DB_PATIENCE_S, DB_UNREACHABLE
from koubo.logs import job_context, native_notices_hidden, setup_logging
from koubo.options import ResolvedOptions
from koubo.stages import Stage, overall_progress

if TYPE_CHECKING:
    from koubo.pipeline import Generator

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25


def run_generation_process(results_fd: int) -> None:
    """Serve jobs until stdin ends (or an unexpected error, which ends the process: its supervisor
    records the crash for the job and starts another)."""
    # Ctrl-C in a terminal reaches the whole process group; the supervisor decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = _Requests(sys.stdin.buffer.fileno())
    first = requests.next_line()
    if first is None:
        return  # the supervisor is gone before it said anything
    settings = Settings(**json.loads(first))
    setup_logging(settings)
    with native_notices_hidden():
        _serve(settings, requests, os.fdopen(results_fd, "wb", buffering=0))


def _serve(settings: Settings, requests: _Requests, results: IO[bytes]) -> None:
    generator = _load_pipeline(settings)
    db = Database(settings.database_location)
    results.write(b'{"ready": true}\n')
    jobs_run = 0
    try:
        while (line := requests.next_line()) is not None:
            request = json.loads(line)
            jobs_run += 1
            with job_context(request["job"]):
                log.info("in generation process %d (its job %d)", os.getpid(), jobs_run)
                _generate(settings, db, generator, request["job"], request["worker"], requests.stopped)
            results.write(json.dumps({"job": request["job"]}).encode("utf-8") + b"\n")
    finally:
        db.close()


def _load_pipeline(settings: Settings) -> Generator:
    # Only this process pays for the pipeline's imports (NumPy, SciPy, MediaPipe...), once.
    started = time.perf_counter()
    from koubo.pipeline import Generator

    try:
        import mediapipe  # noqa: F401 - the face tracker's import, the slowest; done before the first job
    except ImportError:
        pass
    generator = Generator(settings)
    log.info("generation process %d ready in %.2f s", os.getpid(), time.perf_counter() - started)
    return generator


class _Requests:
    """The lines of stdin, read by a thread so that its end can stop a running job."""

    def __init__(self, fd: int) -> None:
        self.stopped = threading.Event()
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(fd,), name="stop-request", daemon=True).start()

    def next_line(self) -> str | None:
        """The next line, or None once stdin has ended."""
        if self.stopped.is_set():
            return None
        return self._lines.get()

    def _read(self, fd: int) -> None:
        # Raw reads: a thread blocked inside sys.stdin's buffered reader holds its lock, and the
        # interpreter aborts when it finalizes stdin at exit.
        pending = b""
        while chunk := os.read(fd, 4096):
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                self._lines.put(line.decode("utf-8"))
        self.stopped.set()
        self._lines.put(None)


def _generate(
    settings: Settings, db: Database, generator: Generator, job_id: str, worker: str, stop: threading.Event
) -> None:
    with db.session() as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one_or_none()
    if job is None:
        log.info("the job was deleted before it started")
        return
    options = ResolvedOptions.from_job_params(job.params)
    output_dir = settings.outputs_dir / job_id
    log.info("generating %s from %r and %r", job.output_name, job.audio.name, job.video.name)
    try:
        result = generator.generate(
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
            stage=Stage.done,
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


class ProgressWriter:
    """The pipeline's progress callback: the job's stage and overall progress in its row, never
    going backwards. Within a stage, written at most once per PROGRESS_INTERVAL_S; a stage's first
    report and its end are written at once, so what the user sees moves as soon as a stage does."""

    def __init__(self, db: Database, job_id: str, worker: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.job_id = job_id
        self.worker = worker
        self.clock = clock
        self.stage: str | None = None
        self.progress = 0.0
        self.written_at = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        self.progress = max(self.progress, overall_progress(stage, fraction))
        now = self.clock()
        if stage == self.stage and fraction < 1.0 and now - self.written_at < PROGRESS_INTERVAL_S:
            return
        self.stage = stage
        self.written_at = now
        try:
            self.db.update_run(self.job_id, self.worker, stage=stage, progress=round(self.progress, 4))
        except DB_UNREACHABLE as error:
            log.warning("progress not recorded, the database is unreachable: %s", error.orig or error)
