"""The job database: uploaded assets, batches, jobs, and every change of a job's state.

SQLAlchemy 2 models that run unchanged on SQLite (the embedded default) and PostgreSQL (several
machines). The web app, the queue workers and their generation processes all write here, so each
change of state is one conditional UPDATE (`WHERE status = 'running' AND worker = ...`): whoever
loses a race changes nothing, and the return value says so.

This is the one place states change: a job's status (JobStatus), and the two outboxes in its row,
its webhook (NotifyState, sent by koubo/ops/notify.py) and its upload to object storage
(StorageState, koubo/ops/offload.py). The workers, retention and the outboxes' threads call the
methods of `Database` below; they write no state of their own.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Engine,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.types import TypeDecorator

from koubo.errors import KouboError
from koubo.jobs.schema import upgrade_schema

log = logging.getLogger(__name__)

# SQLite waits this long for another process's write to finish before giving up.
SQLITE_BUSY_TIMEOUT_S = 30
T = TypeVar("T")


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    expired = "expired"  # was done; retention deleted its video (koubo/ops/retention.py)


class Lane(StrEnum):
    """Which queue a job waits in: single jobs a person waits for may pass the items of large batches."""

    high = "high"
    normal = "normal"


class StorageState(StrEnum):
    """A done job's upload to object storage (koubo/ops/offload.py); None: not for the bucket."""

    pending = "pending"  # to be uploaded; until the first attempt ends, its webhook waits
    uploaded = "uploaded"  # the bucket holds a verified copy (storage_key, storage_etag)


class NotifyState(StrEnum):
    """A finished job's webhook (koubo/ops/notify.py); None: nothing to tell (queued, running, cancelled)."""

    pending = "pending"  # to be sent; each attempt is claimed by moving notify_next_at past its timeout
    sent = "sent"  # the receiver accepted it
    failed = "failed"  # every attempt was refused
    skipped = "skipped"  # out of date before it went: retried, expired, or no webhook for a day


FINISHED = frozenset({JobStatus.done, JobStatus.failed, JobStatus.cancelled, JobStatus.timed_out, JobStatus.expired})
# A webhook reports these (koubo/ops/notify.py); a cancel is the user's own doing.
NOTIFIED = frozenset({JobStatus.done, JobStatus.failed, JobStatus.timed_out})
RETRYABLE = frozenset({JobStatus.failed, JobStatus.cancelled, JobStatus.timed_out})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def _string_enum(enum: type[StrEnum]) -> Enum:
    # VARCHAR(16) holding the values, as before the enums: no database type, no migration.
    return Enum(enum, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite keeps no time zone, so naive values read back are UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    # none_as_null: a missing report or timings is SQL NULL, not the JSON text "null".
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON(none_as_null=True)}


class Asset(Base):
    """An uploaded file, stored once per content and kind under uploads/ by its hash."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("sha256", "kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(255))  # the uploader's file name, for display only
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    duration: Mapped[float]
    container: Mapped[str] = mapped_column(String(64))
    stored_name: Mapped[str] = mapped_column(String(128))  # relative to uploads_dir
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The submitter's token for this submission (see JobService.submit_batch): a repeat gets this batch.
    client_token: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_queue_order", "status", "queued_at", "seq"),
        Index("ix_jobs_notify", "notify_state", "notify_next_at"),
        Index("ix_jobs_started_at", "started_at"),
        Index("ix_jobs_storage", "storage_state", "storage_next_at"),
    )

    # Creation order: newest-first listings and the tie-break of the queue order.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    audio_id: Mapped[str] = mapped_column(ForeignKey("assets.id"))
    video_id: Mapped[str] = mapped_column(ForeignKey("assets.id"))
    status: Mapped[JobStatus] = mapped_column(_string_enum(JobStatus))
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(default=0.0)
    params: Mapped[dict[str, Any]]
    timings: Mapped[dict[str, Any] | None]
    report: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_en: Mapped[str | None] = mapped_column(Text)
    error_zh: Mapped[str | None] = mapped_column(Text)
    output_name: Mapped[str] = mapped_column(String(255))
    output_path: Mapped[str | None] = mapped_column(String(512))  # relative to outputs_dir
    output_size: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(default=1)  # times queued: 1 + retries + recoveries
    worker: Mapped[str | None] = mapped_column(String(255))  # hostname:pid of the supervising process
    worker_name: Mapped[str | None] = mapped_column(String(255))  # the Worker row of that process's consumer
    # Routing, copied from params at submit: only a worker offering this engine (and device) claims it.
    engine: Mapped[str | None] = mapped_column(String(32))  # None (jobs from before routing): any worker
    device: Mapped[str | None] = mapped_column(String(8))  # "cpu" or "cuda"; None: any
    lane: Mapped[str | None] = mapped_column(String(8))  # a Lane; None (jobs from before lanes): normal
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # The submitter's token for this submission (see JobService.submit): a repeat gets this job.
    client_token: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)  # the queue is FIFO by (queued_at, seq)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    # --- object storage (koubo/ops/offload.py) ---
    storage_state: Mapped[StorageState | None] = mapped_column(_string_enum(StorageState))
    storage_key: Mapped[str | None] = mapped_column(String(1024))
    storage_etag: Mapped[str | None] = mapped_column(String(128))
    storage_error: Mapped[str | None] = mapped_column(Text)  # the last failed attempt's reason
    storage_attempts: Mapped[int | None]
    storage_next_at: Mapped[datetime | None]

    # --- webhook outbox (koubo/ops/notify.py) ---
    # finish_run sets it pending for a NOTIFIED status; the notifier in `koubo serve` claims a delivery
    # by moving notify_next_at past the attempt's timeout, and ends it sent or failed.
    notify_state: Mapped[NotifyState | None] = mapped_column(_string_enum(NotifyState))
    notify_attempts: Mapped[int | None]
    notify_next_at: Mapped[datetime | None]

    audio: Mapped[Asset] = relationship(foreign_keys=[audio_id], lazy="joined", innerjoin=True)
    video: Mapped[Asset] = relationship(foreign_keys=[video_id], lazy="joined", innerjoin=True)


@dataclass(frozen=True)
class _Outbox:
    """An outbox in the job's row: its state, the attempts claimed so far, when the next is due, and
    the state in which it waits to be sent."""

    state: Any
    attempts: Any
    next_at: Any
    pending: StrEnum


_WEBHOOK = _Outbox(Job.notify_state, Job.notify_attempts, Job.notify_next_at, NotifyState.pending)
_UPLOAD = _Outbox(Job.storage_state, Job.storage_attempts, Job.storage_next_at, StorageState.pending)


class Worker(Base):
    """A consumer (`koubo worker`, or the one `koubo serve` starts) on some machine, as it reports itself.

    Its jobs are the running jobs whose worker_name is its name: counted from the jobs table, so
    that a busy count can never drift from the truth."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # host:pid, or the configured name
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    device: Mapped[str] = mapped_column(String(8))
    engines: Mapped[list[str]] = mapped_column(JSON)
    concurrency: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None]


@dataclass(frozen=True)
class Routing:
    """What a worker can run: a job is claimed only by a worker that offers its engine and device."""

    name: str
    engines: tuple[str, ...]
    device: str


@dataclass(frozen=True)
class WorkerState:
    name: str
    host: str
    device: str
    engines: list[str]
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    jobs: list[str]  # the ids of the jobs it runs now


def upload_pending(enabled: bool) -> dict[str, Any]:
    """The columns that put a job that has just finished in the object-storage outbox."""
    if not enabled:
        return {}
    return {"storage_state": StorageState.pending, "storage_attempts": 0, "storage_next_at": utcnow()}


def queue_order() -> tuple[Any, ...]:
    """FIFO within a lane; run_order interleaves the lanes."""
    return (Job.queued_at, Job.seq)


def run_order(high: list[str], normal: list[str], streak: int, burst: int) -> list[str]:
    """The order queued jobs start in: high-lane jobs first, but never more than `burst` in a row
    while normal ones wait, so a stream of single jobs cannot starve a batch. `streak` is how many
    high-lane jobs started last in a row. Positions shown to users are places in this list."""
    order: list[str] = []
    h = n = 0
    while h < len(high) or n < len(normal):
        if h < len(high) and (streak < burst or n == len(normal)):
            order.append(high[h])
            h, streak = h + 1, streak + 1
        else:
            order.append(normal[n])
            n, streak = n + 1, 0
    return order


def _sqlite_on_connect(connection: Any, _record: Any) -> None:
    # The driver's own transaction handling would BEGIN lazily (deferred); "begin" below does it instead.
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails at once ("database is locked") when
    # another process wrote in between; IMMEDIATE takes the write lock up front and waits for it.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite, a file in WAL mode that several processes may write."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # A plain postgresql:// URL means psycopg 3 (a koubo dependency), not SQLAlchemy's psycopg2 default.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        # Pre-ping: after a database restart, a pooled connection is replaced instead of failing a query.
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def patiently(call: Callable[[], T], what: str, timeout: float) -> T:
    """`call()`, tried again while the database cannot be reached (a restart), for up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() >= deadline:
                raise
            log.warning("the database is unreachable while %s (%s); trying again", what, error.orig or error)
            time.sleep(1.0)


@dataclass(frozen=True)
class DurationHistogram:
    """Seconds from start to finish of the done jobs, counted into buckets as Prometheus has them."""

    bounds: tuple[float, ...]  # upper bounds, ascending, without +Inf
    cumulative: tuple[int, ...]  # jobs that took at most each bound
    count: int  # every done job (the +Inf bucket)
    total: float  # their seconds added up


@dataclass(frozen=True)
class RunSnapshot:
    """What a supervisor needs to know about its job between two polls."""

    status: JobStatus
    worker: str | None
    cancel_requested: bool


@dataclass(frozen=True)
class RunningJob:
    id: str
    worker: str | None
    worker_name: str | None
    heartbeat_at: datetime | None
    attempts: int
    cancel_requested: bool


class Database:
    """Sessions and the job state machine. Thread-safe: every call uses its own session."""

    def __init__(self, url: str) -> None:
        self.engine = create_db_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self.engine.begin() as connection:
            upgrade_schema(connection, Base.metadata)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # --- the worker side --------------------------------------------------------------------------

    def claim_next(self, worker: str, routing: Routing | None = None, burst: int = 1) -> str | None:
        """Mark the next queued job (run_order, at most `burst` high-lane jobs in a row) that
        `routing` can serve running on `worker`; its id, or None.

        Without `routing`, any job (a single machine that offers everything)."""
        servable = _servable(routing)
        # "starting" until the pipeline reports its first stage: the seconds spent loading models.
        values: dict[str, Any] = {"status": JobStatus.running, "worker": worker, "stage": "starting"}
        if routing is not None:
            values["worker_name"] = routing.name
        while True:
            with self.session() as session:
                order = _run_order(session, burst, servable, first_only=True)
                if not order:
                    return None
                job_id = order[0]
                now = utcnow()
                claimed = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.queued)
                    .values(**values, started_at=now, heartbeat_at=now)
                ).rowcount
            # Zero only where another worker took it between the two statements (PostgreSQL).
            if claimed:
                return job_id

    def snapshot(self, job_id: str) -> RunSnapshot | None:
        with self.session() as session:
            row = session.execute(select(Job.status, Job.worker, Job.cancel_requested).where(Job.id == job_id)).first()
        return None if row is None else RunSnapshot(row.status, row.worker, row.cancel_requested)

    def update_run(self, job_id: str, worker: str | None, /, **values: Any) -> bool:
        """Change a job that is still running on `worker`; False if it no longer is.

        (Positional-only, so that `values` may set a new `worker`.)"""
        with self.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.running, Job.worker == worker)
                    .values(**values)
                ).rowcount
            )

    def finish_run(
        self, job_id: str, worker: str | None, status: JobStatus, error: KouboError | None = None, **values: Any
    ) -> bool:
        now = utcnow()
        notify = (
            {"notify_state": NotifyState.pending, "notify_attempts": 0, "notify_next_at": now}
            if status in NOTIFIED
            else {}
        )
        return self.update_run(
            job_id, worker, status=status, finished_at=now, **error_values(error), **notify, **values
        )

    def hand_back(self, job_id: str, worker: str) -> bool:
        """Put a job whose run was interrupted back at its place in the queue (its queued_at is kept)."""
        return self.update_run(job_id, worker, **_fresh_run(JobStatus.queued))

    def running_jobs(self) -> list[RunningJob]:
        with self.session() as session:
            rows = session.execute(
                select(Job.id, Job.worker, Job.worker_name, Job.heartbeat_at, Job.attempts, Job.cancel_requested).where(
                    Job.status == JobStatus.running
                )
            ).all()
        return [RunningJob(r.id, r.worker, r.worker_name, r.heartbeat_at, r.attempts, r.cancel_requested) for r in rows]

    def requeue_lost(self, job: RunningJob) -> bool:
        """Queue again a job whose worker died; it keeps its place in the queue."""
        return self.update_run(job.id, job.worker, **_fresh_run(JobStatus.queued), attempts=job.attempts + 1)

    def queued_ids(self, burst: int = 1) -> list[str]:
        """Queued jobs, next to start first."""
        with self.session() as session:
            return queued_in_order(session, burst)

    # --- workers ----------------------------------------------------------------------------------

    def register_worker(
        self, routing: Routing, *, host: str, pid: int, concurrency: int, forget_before: datetime
    ) -> None:
        """Write (or overwrite: a restarted named worker) `routing`'s row, alive from now; rows of
        workers silent since `forget_before` are removed."""
        now = utcnow()
        self.forget_workers(forget_before)
        with self.session() as session:
            session.merge(
                Worker(
                    name=routing.name,
                    host=host,
                    pid=pid,
                    device=routing.device,
                    engines=list(routing.engines),
                    concurrency=concurrency,
                    started_at=now,
                    heartbeat_at=now,
                    stopped_at=None,
                )
            )

    def forget_workers(self, before: datetime) -> int:
        """Removes the rows of workers last heard from before `before`; how many there were."""
        with self.session() as session:
            return session.execute(delete(Worker).where(Worker.heartbeat_at < before)).rowcount

    def worker_beat(self, name: str, *, stopped: bool = False) -> None:
        now = utcnow()
        values: dict[str, Any] = {"heartbeat_at": now} | ({"stopped_at": now} if stopped else {"stopped_at": None})
        with self.session() as session:
            session.execute(update(Worker).where(Worker.name == name).values(**values))

    def workers(self) -> list[WorkerState]:
        """Every known worker, most recently heard from first, with the jobs it runs now."""
        with self.session() as session:
            rows = session.scalars(select(Worker).order_by(Worker.heartbeat_at.desc())).all()
            running = session.execute(
                select(Job.worker_name, Job.id).where(Job.status == JobStatus.running).order_by(Job.started_at)
            ).all()
        jobs: dict[str, list[str]] = {}
        for name, job_id in running:
            jobs.setdefault(name, []).append(job_id)
        return [
            WorkerState(
                name=w.name,
                host=w.host,
                device=w.device,
                engines=list(w.engines),
                concurrency=w.concurrency,
                started_at=w.started_at,
                heartbeat_at=w.heartbeat_at,
                stopped_at=w.stopped_at,
                jobs=jobs.get(w.name, []),
            )
            for w in rows
        ]

    # --- figures for people and monitors ----------------------------------------------------------

    def count_by_status(self) -> dict[JobStatus, int]:
        """Jobs per status, every status (zeros included)."""
        with self.session() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return dict.fromkeys(JobStatus, 0) | dict(rows)

    def duration_histogram(self, bounds: tuple[float, ...]) -> DurationHistogram:
        """One aggregate query over the done jobs' run times, however many there are."""
        seconds = _seconds_between(self.engine.dialect.name, Job.started_at, Job.finished_at).label("seconds")
        runs = (
            select(seconds)
            .where(Job.status == JobStatus.done, Job.started_at.is_not(None), Job.finished_at.is_not(None))
            .subquery()
        )
        within = [func.coalesce(func.sum(case((runs.c.seconds <= bound, 1), else_=0)), 0) for bound in bounds]
        with self.session() as session:
            count, total, *cumulative = session.execute(
                select(func.count(), func.coalesce(func.sum(runs.c.seconds), 0.0), *within)
            ).one()
        return DurationHistogram(tuple(bounds), tuple(int(n) for n in cumulative), int(count), float(total))

    def count_queued(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.count()).select_from(Job).where(Job.status == JobStatus.queued)) or 0

    # --- the user side ----------------------------------------------------------------------------

    def cancel_queued(self, job_id: str, error: KouboError) -> bool:
        with self.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.queued)
                    .values(status=JobStatus.cancelled, finished_at=utcnow(), **error_values(error))
                ).rowcount
            )

    def request_cancel(self, job_id: str) -> bool:
        with self.session() as session:
            return bool(
                session.execute(
                    update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(cancel_requested=True)
                ).rowcount
            )

    def requeue_for_retry(self, job_id: str) -> bool:
        """A finished, unsuccessful job queued again, at the end of the queue."""
        with self.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status.in_(RETRYABLE))
                    .values(
                        **_fresh_run(JobStatus.queued),
                        cancel_requested=False,
                        attempts=Job.attempts + 1,
                        queued_at=utcnow(),
                        finished_at=None,
                        timings=None,
                        report=None,
                        output_path=None,
                        output_size=None,
                        **error_values(None),
                    )
                ).rowcount
            )

    def delete_job(self, job_id: str) -> bool:
        with self.session() as session:
            return bool(session.execute(delete(Job).where(Job.id == job_id)).rowcount)

    def get_job(self, job_id: str) -> Job | None:
        """The row, with its assets, detached: to read, not to change."""
        with self.session() as session:
            return session.scalars(select(Job).where(Job.id == job_id)).one_or_none()

    # --- retention (koubo/ops/retention.py) -------------------------------------------------------

    def expire(self, job_id: str) -> bool:
        """done -> expired, before retention deletes the video: whoever looks in between sees an
        expired job without a file, never a done job without one. False if it is no longer done."""
        with self.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.done)
                    .values(status=JobStatus.expired, output_path=None)
                ).rowcount
            )

    # --- the webhook outbox (koubo/ops/notify.py) -------------------------------------------------

    def skip_stale_notifications(self, due_before: datetime) -> None:
        """Pending notifications due before `due_before` were never going to be sent (no webhook was
        configured when their jobs finished): skipped, not sent out of the blue later."""
        with self.session() as session:
            session.execute(
                update(Job)
                .where(Job.notify_state == NotifyState.pending, Job.notify_next_at < due_before)
                .values(notify_state=NotifyState.skipped)
            )

    def due_notifications(self, now: datetime, limit: int) -> list[tuple[str, int]]:
        """(job id, attempts so far) of the pending notifications due at `now`, longest waiting first."""
        # A video on its way to object storage is announced once its first upload attempt has ended,
        # so the message carries the bucket link (or, if that attempt failed, the direct one).
        announceable = or_(
            Job.storage_state.is_(None), Job.storage_state != StorageState.pending, Job.storage_error.is_not(None)
        )
        return self._due(_WEBHOOK, now, limit, announceable)

    def claim_notification(self, job_id: str, seen: int, until: datetime) -> bool:
        """Take attempt `seen` + 1, nobody else's before `until`; False if someone else took it."""
        return self._claim(_WEBHOOK, job_id, seen, until)

    def end_notification(self, job_id: str, attempt: int, state: NotifyState) -> bool:
        """Attempt `attempt` settled the notification (sent, failed for good, or skipped)."""
        return self._while_claimed(_WEBHOOK, job_id, attempt, notify_state=state)

    def postpone_notification(self, job_id: str, attempt: int, until: datetime) -> bool:
        """Attempt `attempt` failed; the next one is due at `until`."""
        return self._while_claimed(_WEBHOOK, job_id, attempt, notify_next_at=until)

    # --- the object-storage outbox (koubo/ops/offload.py) -----------------------------------------

    def due_uploads(self, now: datetime, limit: int) -> list[tuple[str, int]]:
        """(job id, attempts so far) of the pending uploads due at `now`, longest waiting first."""
        return self._due(_UPLOAD, now, limit)

    def claim_upload(self, job_id: str, seen: int, until: datetime) -> bool:
        return self._claim(_UPLOAD, job_id, seen, until)

    def upload_verified(self, job_id: str, attempt: int, key: str, etag: str) -> bool:
        """The bucket holds a verified copy; False if the job went away meanwhile (the copy is not wanted)."""
        return self._while_claimed(
            _UPLOAD,
            job_id,
            attempt,
            storage_state=StorageState.uploaded,
            storage_key=key,
            storage_etag=etag,
            storage_error=None,
        )

    def postpone_upload(self, job_id: str, attempt: int, reason: str, until: datetime) -> bool:
        """Attempt `attempt` failed for `reason`; the next one is due at `until`."""
        return self._while_claimed(_UPLOAD, job_id, attempt, storage_error=reason, storage_next_at=until)

    def drop_upload(self, job_id: str, attempt: int) -> bool:
        """Nothing of the job is for the bucket any more (retried or expired meanwhile)."""
        return self._while_claimed(_UPLOAD, job_id, attempt, storage_state=None)

    def _due(self, outbox: _Outbox, now: datetime, limit: int, *where: Any) -> list[tuple[str, int]]:
        with self.session() as session:
            rows = session.execute(
                select(Job.id, outbox.attempts)
                .where(outbox.state == outbox.pending, outbox.next_at <= now, *where)
                .order_by(outbox.next_at)
                .limit(limit)
            ).all()
        return [(job_id, attempts or 0) for job_id, attempts in rows]

    def _claim(self, outbox: _Outbox, job_id: str, seen: int, until: datetime) -> bool:
        # Whoever moves the attempt count from `seen` first has the attempt; a claimant that dies
        # leaves it to be taken up again at `until`.
        with self.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, outbox.state == outbox.pending, outbox.attempts == seen)
                    .values({outbox.attempts: seen + 1, outbox.next_at: until})
                ).rowcount
            )

    def _while_claimed(self, outbox: _Outbox, job_id: str, attempt: int, **values: Any) -> bool:
        # Only while the claim is still ours: a job retried and finished again starts a new outbox entry.
        with self.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, outbox.state == outbox.pending, outbox.attempts == attempt)
                    .values(**values)
                ).rowcount
            )


def queued_in_order(session: Session, burst: int) -> list[str]:
    """Every queued job's id, in the order they will start."""
    return _run_order(session, burst, [], first_only=False)


def _run_order(session: Session, burst: int, servable: list[Any], first_only: bool) -> list[str]:
    lanes: dict[Lane, list[str]] = {}
    for lane in Lane:
        in_lane = Job.lane == Lane.high if lane is Lane.high else or_(Job.lane.is_(None), Job.lane != Lane.high)
        query = select(Job.id).where(Job.status == JobStatus.queued, in_lane, *servable).order_by(*queue_order())
        lanes[lane] = list(session.scalars(query.limit(1) if first_only else query))
    return run_order(lanes[Lane.high], lanes[Lane.normal], _high_streak(session, burst), burst)


def _high_streak(session: Session, burst: int) -> int:
    """How many of the jobs started last were high-lane ones in a row (counted up to `burst`)."""
    recent = session.scalars(
        select(Job.lane).where(Job.started_at.is_not(None)).order_by(Job.started_at.desc(), Job.seq.desc()).limit(burst)
    )
    streak = 0
    for lane in recent:
        if lane != Lane.high:
            break
        streak += 1
    return streak


def _servable(routing: Routing | None) -> list[Any]:
    if routing is None:
        return []
    return [
        or_(Job.engine.is_(None), Job.engine.in_(routing.engines)),
        or_(Job.device.is_(None), Job.device == routing.device),
    ]


def _seconds_between(dialect: str, start: Any, end: Any) -> Any:
    """`end - start` in seconds, as SQL: SQLite keeps times as text, PostgreSQL as timestamps."""
    if dialect == "sqlite":
        # SQLite's date functions count whole milliseconds; a difference of two julian days (floats
        # near 2.46e6) is off by some 1e-5 s, so rounding to the millisecond gives back the exact figure.
        return func.round((func.julianday(end) - func.julianday(start)) * 86400.0, 3)
    return func.extract("epoch", end - start)


def _fresh_run(status: JobStatus) -> dict[str, Any]:
    # cancel_requested is left alone: a cancel asked for meanwhile must not be lost.
    return {
        "status": status,
        "worker": None,
        "worker_name": None,
        "started_at": None,
        "heartbeat_at": None,
        "stage": None,
        "progress": 0.0,
    }


def error_values(error: KouboError | None) -> dict[str, str | None]:
    """The columns that record why a job ended (None: clear them); `recorded_error` reads them back."""
    return {
        "error_code": error.code if error else None,
        "error_en": error.en if error else None,
        "error_zh": error.zh if error else None,
    }


def recorded_error(job: Job) -> dict[str, str] | None:
    """Why `job` ended unsuccessfully, as the API and the webhooks show it (KouboError.to_dict)."""
    if not job.error_code:
        return None
    return KouboError(job.error_code, job.error_en or "", job.error_zh or "").to_dict()
