"""The job database's schema under Alembic: the migrations and the models agree, and a database of
the previous release (its frozen DDL in tests/schemas/) upgrades with its jobs intact, on SQLite and
on a real PostgreSQL (Debian's, started here)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, Table, inspect, text

from koubo.jobs.schema import alembic_config, current_revision, head_revision
from koubo.jobs.store import Base, Database, Job, JobStatus, Routing, create_db_engine

import postgres_server

SCHEMAS = Path(__file__).with_name("schemas")
PREVIOUS_RELEASE = "0b15c31"
CREATED = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres() -> Iterator[postgres_server.Postgres]:
    postgres_server.require()
    with postgres_server.running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'koubo.db'}"
    server: postgres_server.Postgres = request.getfixturevalue("postgres")
    server.reset()
    return server.url


def schema_differences(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match the models: [] when equal."""
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def load_previous_release(engine: Engine) -> None:
    """The previous release's tables, from its DDL, and one finished job with its assets and batch."""
    lines = (SCHEMAS / f"koubo-{PREVIOUS_RELEASE}.{engine.dialect.name}.sql").read_text().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    statements = [s for s in ddl.split(";\n") if s.strip()]
    old = MetaData()
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
        assets, batches, jobs = (Table(name, old, autoload_with=connection) for name in ("assets", "batches", "jobs"))
        for kind in ("audio", "video"):
            connection.execute(
                assets.insert().values(
                    id=f"{kind}1",
                    kind=kind,
                    name=f"{kind}.bin",
                    sha256=kind * 8,
                    size=1000,
                    duration=2.5,
                    container="wav",
                    stored_name=f"{kind}1.bin",
                    created_at=CREATED,
                )
            )
        connection.execute(batches.insert().values(id="batch1", created_at=CREATED))
        job = {
            "id": "job1",
            "batch_id": "batch1",
            "audio_id": "audio1",
            "video_id": "video1",
            "progress": 1.0,
            "params": {"engine": "classic"},
            "output_name": "job1.mp4",
            "attempts": 1,
            "cancel_requested": False,
            "created_at": CREATED,
            "queued_at": CREATED,
            "engine": "classic",
        }
        connection.execute(
            jobs.insert().values(
                **job,
                status="done",
                output_path="job1.mp4",
                output_size=12345,
                finished_at=CREATED,
                notify_state="sent",
                notify_attempts=1,
            )
        )
        connection.execute(jobs.insert().values(**job | {"id": "job2", "batch_id": None}, status="queued"))


def test_the_migrations_build_exactly_the_models_schema(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_a_new_database_is_created_from_the_models_at_the_newest_revision(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.engine.connect() as connection:
            assert current_revision(connection) == head_revision()
        assert schema_differences(db.engine) == []
    finally:
        db.close()


def test_a_database_of_the_previous_release_upgrades_and_keeps_its_jobs(database_url: str) -> None:
    engine = create_db_engine(database_url)
    load_previous_release(engine)
    with engine.connect() as connection:
        old_columns = {c["name"] for c in inspect(connection).get_columns("jobs")}
        assert current_revision(connection) is None
    engine.dispose()
    assert "lane" not in old_columns and "client_token" not in old_columns and "notify_state" in old_columns

    db = Database(database_url)
    try:
        with db.engine.connect() as connection:
            assert current_revision(connection) == head_revision()
        assert schema_differences(db.engine) == []
        with db.session() as session:
            done = session.query(Job).filter_by(id="job1").one()
            assert done.status is JobStatus.done and done.output_size == 12345 and done.notify_state == "sent"
            assert done.finished_at == CREATED and done.params == {"engine": "classic"}
            assert done.audio.duration == 2.5 and done.lane is None and done.client_token is None
            assert done.storage_state is None
        # The old queued job is still claimed, by a worker that routes.
        assert db.claim_next("h:1", Routing("w", ("classic",), "cpu")) == "job2"
    finally:
        db.close()
    # Opening it again finds nothing to do.
    Database(database_url).close()


def test_processes_opening_an_old_database_together_take_turns_and_all_find_it_upgraded(database_url: str) -> None:
    engine = create_db_engine(database_url)
    load_previous_release(engine)
    engine.dispose()
    opened: list[Database] = []
    with ThreadPoolExecutor(4) as pool:
        # Each Database upgrades on open, under the schema lock; the first upgrades, the rest find it done.
        opened += pool.map(lambda _: Database(database_url), range(4))
    try:
        for db in opened:
            with db.engine.connect() as connection:
                assert current_revision(connection) == head_revision()
        assert schema_differences(opened[0].engine) == []
        with opened[0].session() as session:
            assert session.query(Job).count() == 2
    finally:
        for db in opened:
            db.close()


def test_downgrading_to_the_first_revision_and_back_ends_in_the_models_schema(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'koubo.db'}")
    try:
        for target in ("head", "0001", "head"):
            with engine.begin() as connection:
                (command.upgrade if target == "head" else command.downgrade)(alembic_config(connection), target)
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
