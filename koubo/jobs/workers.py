"""Workers on one or many machines: who they are, what they offer, and the beat that says they live.

A consumer (`koubo worker`, or the one `koubo serve` starts) has a row in the workers table: its
name, host, device, the engines it offers and how many jobs it runs at once. A housekeeping
process beside the consumer (`keep_house`) refreshes the row's heartbeat and, like the recovery
thread of the web process, settles the jobs of workers that are gone and re-adds missing queue
messages. Every change it makes is a conditional UPDATE, so any number of them may run at once on
any machine.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.exc import InterfaceError, OperationalError

from koubo import errors
from koubo.config import Settings
from koubo.engines import ENGINES, resolve_device
from koubo.jobs.store import Database, Routing, WorkerState, patiently, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
# How often each worker and the web process look for lost jobs and missing queue messages.
RECOVERY_S = 10.0
REGISTER_PATIENCE_S = 60.0
# How long a worker waits for the database to come back (a restart) before giving up on a job.
DB_PATIENCE_S = 120.0
# Errors of a database that is restarting or out of reach: a worker waits them out.
DB_UNREACHABLE = (OperationalError, InterfaceError)
STOP_CHECK_S = 0.2


@dataclass(frozen=True)
class WorkerView:
    name: str
    host: str
    device: str
    engines: list[str]
    concurrency: int
    alive: bool  # heard from within settings.worker_timeout and not stopped
    busy: int  # jobs running on it now
    jobs: list[str]
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None


def offered_engines(settings: Settings) -> tuple[str, ...]:
    """The engines this machine's worker offers: settings.worker_engines, or every engine."""
    if not settings.worker_engines:
        return tuple(ENGINES)
    names = tuple(dict.fromkeys(name.strip() for name in settings.worker_engines.split(",") if name.strip()))
    unknown = [name for name in names if name not in ENGINES]
    if unknown or not names:
        raise errors.invalid_params(
            f"unknown engine(s) {', '.join(unknown) or '(none)'}; available: {', '.join(ENGINES)}",
            f"未知的引擎 {'、'.join(unknown) or '（无）'}；可用：{'、'.join(ENGINES)}",
        )
    return names


def worker_identity(settings: Settings) -> Settings:
    """`settings` with this consumer's name, device and engines fixed, for the processes it forks."""
    return settings.model_copy(
        update={
            "worker_name": settings.worker_name or f"{socket.gethostname()}:{os.getpid()}",
            "device": resolve_device(settings.device),
            "worker_engines": ",".join(offered_engines(settings)),
        }
    )


def routing_of(settings: Settings) -> Routing:
    """The routing of a consumer whose settings went through worker_identity."""
    if settings.worker_name is None or not settings.worker_engines or settings.device == "auto":
        raise RuntimeError("routing_of needs the settings worker_identity returns")
    return Routing(settings.worker_name, tuple(settings.worker_engines.split(",")), settings.device)


def forget_before(settings: Settings, now: datetime | None = None) -> datetime:
    """Workers last heard from before this are gone for good (every restart of a consumer leaves one):
    they leave the Workers panel, and the maintenance thread deletes their rows."""
    # Never sooner than a live worker could go silent: a slow beat is not a departure.
    return (now or utcnow()) - timedelta(seconds=max(settings.worker_forget_after, settings.worker_timeout))


def forget_gone_workers(db: Database, settings: Settings) -> None:
    forgotten = db.forget_workers(forget_before(settings))
    if forgotten:
        log.info("forgot %d worker(s) gone for over %.0f s", forgotten, settings.worker_forget_after)


def view_workers(states: list[WorkerState], settings: Settings, now: datetime | None = None) -> list[WorkerView]:
    """The workers to show: alive or not, less those gone long enough to be forgotten (even before
    the maintenance thread has deleted their rows)."""
    now = now or utcnow()
    timeout, cutoff = settings.worker_timeout, forget_before(settings, now)
    return [
        WorkerView(
            name=s.name,
            host=s.host,
            device=s.device,
            engines=s.engines,
            concurrency=s.concurrency,
            alive=s.stopped_at is None and (now - s.heartbeat_at).total_seconds() <= timeout,
            busy=len(s.jobs),
            jobs=s.jobs,
            started_at=s.started_at,
            heartbeat_at=s.heartbeat_at,
            stopped_at=s.stopped_at,
        )
        for s in states
        if s.heartbeat_at >= cutoff
    ]


def keep_house(
    db: Database, recover: Callable[[], None], stopped: Callable[[], bool], worker: str | None = None
) -> None:
    """Until `stopped()`: `recover()` every RECOVERY_S and, for a worker, its row's heartbeat every
    HEARTBEAT_S; a worker's row is marked stopped at the end (so it shows as gone at once).

    Never dies of an error: a database or Redis restart costs a few missed beats, not the worker.
    """
    beats_per_recovery = round(RECOVERY_S / HEARTBEAT_S)
    beat = 0
    while True:
        done = stopped()
        if worker is not None:
            _safely("heartbeat", partial(db.worker_beat, worker, stopped=done))
        if done:
            return
        if beat % beats_per_recovery == 0:
            _safely("recovery", recover)
        beat += 1
        next_beat = time.monotonic() + HEARTBEAT_S
        while not stopped() and time.monotonic() < next_beat:
            time.sleep(STOP_CHECK_S)


def _safely(what: str, call: Callable[[], None]) -> None:
    try:
        call()
    except Exception:  # whatever went wrong, the worker must keep beating
        log.exception("%s failed; trying again later", what)


def register(db: Database, settings: Settings) -> Routing:
    """Write this consumer's row (waiting for the database to be reachable); its routing."""
    routing = routing_of(settings)
    patiently(
        lambda: db.register_worker(
            routing,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=settings.max_concurrent,
            forget_before=forget_before(settings),
        ),
        "registering the worker",
        REGISTER_PATIENCE_S,
    )
    log.info(
        "worker %s: device %s, engines %s, %d at a time",
        routing.name,
        routing.device,
        ",".join(routing.engines),
        settings.max_concurrent,
    )
    return routing
