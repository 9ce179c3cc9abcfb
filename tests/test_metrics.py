"""/metrics' figures from aggregate queries: counts per status, the run-time histogram, the workers
alive from the workers table; on SQLite and on a real PostgreSQL, with a scrape whose number of
queries does not grow with the jobs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from koubo.config import Settings
from koubo.jobs.service import JobService
from koubo.jobs.store import Asset, Job, JobStatus, Routing, Worker, new_id, utcnow
from koubo.web.api.metrics import DURATION_BUCKETS, EgressCollector, JobCollector, exposition

import postgres_server

# Seconds each done job ran, and how many jobs of each other status there are.
DONE_SECONDS = (3.0, 5.0, 14.5, 59.0, 4000.0)
OTHERS = {JobStatus.queued: 2, JobStatus.running: 1, JobStatus.failed: 3, JobStatus.expired: 1}


@pytest.fixture(scope="module")
def postgres() -> Iterator[postgres_server.Postgres]:
    postgres_server.require()
    with postgres_server.running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobService]:
    settings = Settings(data_dir=tmp_path / "data", worker_timeout=30, max_concurrent=7)
    if request.param == "postgresql":
        server: postgres_server.Postgres = request.getfixturevalue("postgres")
        server.reset()
        settings = settings.model_copy(update={"database_url": server.url})
    service = JobService(settings)
    yield service
    service.close()


def add_jobs(service: JobService, done_seconds: tuple[float, ...], others: dict[JobStatus, int]) -> None:
    start = utcnow() - timedelta(hours=3)
    with service._db.session() as session:
        # Each call its own assets (their content hashes are unique).
        audio = Asset(
            kind="audio", name="a.wav", sha256=new_id() * 2, size=1, duration=1.0, container="wav", stored_name="a"
        )
        video = Asset(
            kind="video", name="v.mp4", sha256=new_id() * 2, size=1, duration=1.0, container="mp4", stored_name="v"
        )
        session.add_all([audio, video])
        session.flush()
        rows = [(JobStatus.done, seconds) for seconds in done_seconds]
        rows += [(status, 1.0) for status, n in others.items() for _ in range(n)]
        for status, seconds in rows:
            finished = status in (JobStatus.done, JobStatus.failed, JobStatus.expired)
            session.add(
                Job(
                    audio_id=audio.id,
                    video_id=video.id,
                    status=status,
                    params={},
                    output_name="o.mp4",
                    started_at=None if status is JobStatus.queued else start,
                    finished_at=start + timedelta(seconds=seconds) if finished else None,
                )
            )


def add_workers(service: JobService) -> None:
    """One alive (3 at a time), one silent past worker_timeout, one stopped: only the first counts."""
    db = service._db
    for name, concurrency in (("alive", 3), ("silent", 5), ("stopped", 4)):
        db.register_worker(
            Routing(name, ("classic",), "cpu"),
            host="h",
            pid=1,
            concurrency=concurrency,
            forget_before=utcnow() - timedelta(days=1),
        )
    db.worker_beat("stopped", stopped=True)
    with db.session() as session:
        session.get_one(Worker, "silent").heartbeat_at = utcnow() - timedelta(seconds=120)


def scrape(service: JobService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(JobCollector(service)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_statuses_bucket_durations_and_read_workers_from_the_table(service: JobService) -> None:
    add_jobs(service, DONE_SECONDS, OTHERS)
    add_workers(service)
    samples = scrape(service)

    assert samples[("koubo_queue_length", ())] == OTHERS[JobStatus.queued]
    for status in JobStatus:
        expected = len(DONE_SECONDS) if status is JobStatus.done else OTHERS.get(status, 0)
        assert samples[("koubo_jobs", (("status", status.value),))] == expected
    # The workers table's alive worker, not this process's max_concurrent (7).
    assert samples[("koubo_workers", ())] == 3 and samples[("koubo_workers_alive", ())] == 1
    for bound in DURATION_BUCKETS:
        within = sum(1 for seconds in DONE_SECONDS if seconds <= bound)
        assert samples[("koubo_job_duration_seconds_bucket", (("le", str(bound)),))] == within, bound
    assert samples[("koubo_job_duration_seconds_bucket", (("le", "+Inf"),))] == len(DONE_SECONDS)
    assert samples[("koubo_job_duration_seconds_count", ())] == len(DONE_SECONDS)
    assert samples[("koubo_job_duration_seconds_sum", ())] == pytest.approx(sum(DONE_SECONDS), abs=1e-3)


def test_a_scrape_runs_the_same_queries_for_five_jobs_as_for_five_hundred(service: JobService) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(service._db.engine, "before_cursor_execute", count)
    add_jobs(service, DONE_SECONDS, {})
    statements.clear()
    few = scrape(service)
    few_queries = len(statements)
    add_jobs(service, DONE_SECONDS * 100, {})
    statements.clear()
    many = scrape(service)
    assert len(statements) == few_queries <= 8, statements  # 4 queries (+ a BEGIN each on SQLite)
    assert many[("koubo_job_duration_seconds_count", ())] == 101 * few[("koubo_job_duration_seconds_count", ())]


def test_metrics_show_the_link_servers_figures_beside_the_jobs(service: JobService) -> None:
    egress = {"bytes_sent": 123, "active": 2, "rate": 4.5, "busiest": [('j1/主播 "a".mp4', 3)], "servers": 1}
    text = exposition(JobCollector(service), EgressCollector(lambda: egress)).decode()
    assert "# TYPE koubo_links_sent_bytes_total counter" in text
    assert "koubo_links_sent_bytes_total 123.0" in text and 'koubo_jobs{status="done"} 0.0' in text
