"""The queue's messages through Huey: one `run_job` message per queued job wakes a worker.

The database, not the message, says which job runs next (koubo.jobs.supervisor); a message is only
a wake-up call, so messages lost with a Redis restart are written again by recovery
(koubo.jobs.recovery). The same code runs over SQLite (one machine) and Redis (many).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from huey import Huey, RedisHuey, SqliteHuey
from huey.api import TaskWrapper
from redis.exceptions import RedisError

from koubo import errors
from koubo.config import Settings
from koubo.jobs.store import SQLITE_BUSY_TIMEOUT_S

log = logging.getLogger(__name__)

QUEUE_NAME = "koubo"
TASK_NAME = "run_job"
# Huey names a message's task "<module>.<name>" and every process must agree on it: the module the
# queue lived in before it was split, so that messages written by an older version still run.
TASK_MODULE = "koubo.jobs.queue"
# A message no job fits goes back this much later, for a worker that offers what the job needs.
PASS_ON_DELAY_S = 2.0
# Errors of the queue's storage (Redis restarting, or SQLite locked for too long).
QUEUE_UNREACHABLE = (RedisError, sqlite3.Error, OSError)

T = TypeVar("T")
RunJob = Callable[[str], None]


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


def create_queue(settings: Settings, run_job: RunJob | None = None) -> JobQueue:
    """Huey over settings.queue_location with the `run_job` task registered (no consumer started).

    `run_job` is what a worker does with a message; a queue made without it only sends (the web
    process, recovery)."""
    huey = _create_huey(settings.queue_location)
    handler = run_job or _send_only

    def run(job_id: str) -> None:
        handler(job_id)

    run.__module__ = TASK_MODULE
    return JobQueue(huey, huey.task(name=TASK_NAME)(run))


def _send_only(job_id: str) -> None:
    raise RuntimeError(f"this queue only sends messages; a consumer runs job {job_id}")


def _create_huey(location: str) -> Huey:
    if location.startswith("sqlite:///"):
        path = Path(location.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(QUEUE_NAME, filename=str(path), results=False, timeout=SQLITE_BUSY_TIMEOUT_S)
    if location.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(QUEUE_NAME, url=location, results=False)
    raise errors.bad_queue_url(location)


def per_process(factory: Callable[[], T]) -> Callable[[], T]:
    """`factory()`, made once in each process that asks: the consumer forks its workers, and pooled
    database connections must not be shared across a fork."""
    made: dict[int, T] = {}

    def get() -> T:
        pid = os.getpid()
        if pid not in made:
            made[pid] = factory()
        return made[pid]

    return get


def describe_queue(location: str) -> str:
    # Never the whole URL: a Redis URL may hold a password.
    return location if location.startswith("sqlite:") else location.partition(":")[0] + "://…"
