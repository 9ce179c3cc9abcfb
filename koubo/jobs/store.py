"""The job database: uploaded assets, batches, jobs, and every change of a job's state.

SQLAlchemy 2 models that run unchanged on SQLite (the embedded default) and PostgreSQL (several
machines). The web app, the queue workers and their generation processes all write here, so each
change of state is one conditional UPDATE (`WHERE status = 'running' AND worker = ...`): whoever
loses a race changes nothing, and the return value says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

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
    create_engine,
    delete,
    event,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.types import TypeDecorator

from koubo.errors import KouboError

# SQLite waits this long for another process's write to finish before giving up.
SQLITE_BUSY_TIMEOUT_S = 30


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"


FINISHED = frozenset({JobStatus.done, JobStatus.failed, JobStatus.cancelled, JobStatus.timed_out})
RETRYABLE = frozenset({JobStatus.failed, JobStatus.cancelled, JobStatus.timed_out})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


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


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_queue_order", "status", "queued_at", "seq"),)

    # Creation order: newest-first listings and the tie-break of the queue order.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, default=new_id)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    audio_id: Mapped[str] = mapped_column(ForeignKey("assets.id"))
    video_id: Mapped[str] = mapped_column(ForeignKey("assets.id"))
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )
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
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)  # the queue is FIFO by (queued_at, seq)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    audio: Mapped[Asset] = relationship(foreign_keys=[audio_id], lazy="joined", innerjoin=True)
    video: Mapped[Asset] = relationship(foreign_keys=[video_id], lazy="joined", innerjoin=True)


def queue_order() -> tuple[Any, ...]:
    return (Job.queued_at, Job.seq)


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
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


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
    heartbeat_at: datetime | None
    attempts: int
    cancel_requested: bool


class Database:
    """Sessions and the job state machine. Thread-safe: every call uses its own session."""

    def __init__(self, url: str) -> None:
        self.engine = create_db_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self.engine.begin() as connection:
            Base.metadata.create_all(connection)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # --- the worker side --------------------------------------------------------------------------

    def claim_next(self, worker: str) -> str | None:
        """Mark the oldest queued job running on `worker`; its id, or None if nothing is queued."""
        while True:
            with self.session() as session:
                job_id = session.scalars(
                    select(Job.id).where(Job.status == JobStatus.queued).order_by(*queue_order()).limit(1)
                ).first()
                if job_id is None:
                    return None
                now = utcnow()
                claimed = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.queued)
                    .values(status=JobStatus.running, worker=worker, started_at=now, heartbeat_at=now)
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
        return self.update_run(job_id, worker, status=status, finished_at=utcnow(), **_error_values(error), **values)

    def hand_back(self, job_id: str, worker: str) -> bool:
        """Put a job whose run was interrupted back at its place in the queue (its queued_at is kept)."""
        return self.update_run(job_id, worker, **_fresh_run(JobStatus.queued))

    def running_jobs(self) -> list[RunningJob]:
        with self.session() as session:
            rows = session.execute(
                select(Job.id, Job.worker, Job.heartbeat_at, Job.attempts, Job.cancel_requested).where(
                    Job.status == JobStatus.running
                )
            ).all()
        return [RunningJob(r.id, r.worker, r.heartbeat_at, r.attempts, r.cancel_requested) for r in rows]

    def requeue_lost(self, job: RunningJob) -> bool:
        """Queue again a job whose worker died; it keeps its place in the queue."""
        return self.update_run(job.id, job.worker, **_fresh_run(JobStatus.queued), attempts=job.attempts + 1)

    def queued_ids(self) -> list[str]:
        """Queued jobs, next to start first."""
        with self.session() as session:
            return list(session.scalars(select(Job.id).where(Job.status == JobStatus.queued).order_by(*queue_order())))

    # --- the user side ----------------------------------------------------------------------------

    def cancel_queued(self, job_id: str, error: KouboError) -> bool:
        with self.session() as session:
            return bool(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.queued)
                    .values(status=JobStatus.cancelled, finished_at=utcnow(), **_error_values(error))
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
                        **_error_values(None),
                    )
                ).rowcount
            )

    def delete_job(self, job_id: str) -> bool:
        with self.session() as session:
            return bool(session.execute(delete(Job).where(Job.id == job_id)).rowcount)


def _fresh_run(status: JobStatus) -> dict[str, Any]:
    # cancel_requested is left alone: a cancel asked for meanwhile must not be lost.
    return {
        "status": status,
        "worker": None,
        "started_at": None,
        "heartbeat_at": None,
        "stage": None,
        "progress": 0.0,
    }


def _error_values(error: KouboError | None) -> dict[str, str | None]:
    return {
        "error_code": error.code if error else None,
        "error_en": error.en if error else None,
        "error_zh": error.zh if error else None,
    }
