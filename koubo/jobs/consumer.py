"""The consumer (`koubo worker`, `python -m koubo.jobs.queue`): settings.max_concurrent Huey worker
processes, each one a slot with its own warm generation process, and a housekeeping process beside
them for the worker's heartbeat and recovery."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from koubo.config import Settings
from koubo.jobs.generation_process import WarmSlot
from koubo.jobs.huey_queue import JobQueue, create_queue, describe_queue, per_process
from koubo.jobs.recovery import recover_jobs
from koubo.jobs.store import Database, patiently
from koubo.jobs.supervisor import supervise_next
from koubo.jobs.workers import DB_PATIENCE_S, keep_house, register, worker_identity
from koubo.logs import setup_logging

log = logging.getLogger(__name__)

HOUSEKEEPING_GRACE_S = 5.0  # a stopping consumer waits this long to mark its worker row stopped
# Idle workers look for new messages at least this often (Huey's default backs off to 10 s): with a
# warm generation process, this wait is most of a job's submit -> first progress. One indexed read:
# bench/service.py measured 0.05 s against 0.2 s as a median first progress of 0.06 s against 0.14 s,
# for 0.3 against 0.2 CPU s of an idle consumer in 30 s.
IDLE_POLL_MAX_S = 0.05


class EventLike(Protocol):
    def is_set(self) -> bool: ...


def worker_queue(settings: Settings) -> JobQueue:
    """The queue as a consumer's workers use it: each message runs supervise_next in the worker
    process that takes it, on that process's slot; each worker process starts its generation
    process when it starts, so the first job finds it loaded."""
    database = per_process(lambda: Database(settings.database_location))
    slot = per_process(lambda: WarmSlot(settings))

    def run_job(job_id: str) -> None:
        supervise_next(settings, database(), queue, slot(), job_id)

    queue = create_queue(settings, run_job)
    queue.huey.on_startup("warm_slot")(lambda: slot().prepare())
    queue.huey.on_shutdown("warm_slot")(lambda: slot().close())
    return queue


def run_consumer(
    settings: Settings, signals_to: Callable[[Callable[[int, FrameType | None], None]], bool] | None = None
) -> None:
    """Run the consumer with settings.max_concurrent worker processes until it is told to stop.

    SIGTERM stops at once: running jobs go back to the queue and resume at the next start.
    SIGINT (Ctrl-C) lets running jobs finish first. Must run in its own process's main thread.
    """
    setup_logging(settings)
    settings = worker_identity(settings)
    queue = worker_queue(settings)
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
    log.info("consumer of %s starting %d worker(s)", describe_queue(settings.queue_location), settings.max_concurrent)
    stopped_while_starting = signals_to is not None and signals_to(consumer._handle_signal)
    try:
        if not stopped_while_starting:
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
