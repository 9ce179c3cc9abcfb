"""Several machines: a web process and two `koubo worker` processes with their own data folders,
sharing only the storage folder, a real Redis (Huey's queue) and a real PostgreSQL (the jobs).

The servers are Debian's redis-server and PostgreSQL, started here on free loopback ports in
temporary folders; PostgreSQL runs as the `postgres` user when the tests run as root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from koubo.config import Settings
from koubo.jobs.huey_queue import create_queue
from koubo.jobs.recovery import recover_jobs
from koubo.jobs.service import JobService, JobStatus
from koubo.jobs.store import Asset, Database, Job, Routing, utcnow

from media_fixtures import make_speech, make_talking_video
from postgres_server import Postgres, running_postgres
from postgres_server import available as postgres_available
from servers import free_port, launch, wait_until

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS is None or not postgres_available(),
    reason="needs Debian's redis-server and postgresql (koubo.sh test installs them as root)",
)
WORKER_TIMEOUT_S = 10  # seconds without a heartbeat before a worker's jobs are taken back
BATCH_SIZE = 6


# --- the servers --------------------------------------------------------------------------------------


@dataclass
class Redis:
    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # No persistence: a restart comes back empty, the worst case for the queue's messages.
        command = [REDIS or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen([*command, "--appendonly", "no", "--dir", str(self.folder)], stdout=log)
        wait_until(self._answers, 20, "redis-server to answer")

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.exceptions.ConnectionError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scale-media")
    speeches = {f"speech{i}": make_speech(folder / f"speech{i}.wav", seconds=1.0 + 0.1 * i) for i in range(BATCH_SIZE)}
    return {"video": make_talking_video(folder / "face.mp4", seconds=1.0, size=(160, 160)), **speeches}


def _reset_database(postgres: Postgres) -> None:
    """Each test starts from an empty schema (the tests share one server)."""
    postgres.reset()


# --- the database alone ---------------------------------------------------------------------------------


def test_old_sqlite_database_gains_the_new_columns_and_tables_and_keeps_its_jobs(tmp_path: Path, media) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    service = JobService(settings)
    video = service.add_asset(_copy(media["video"], service.upload_tmp_dir), "face.mp4", "video")
    audio = service.add_asset(_copy(media["speech0"], service.upload_tmp_dir), "a.wav", "audio")
    job = service.submit(audio.id, video.id)
    service.close()
    # The previous version's shape: no workers table, no routing or worker-name columns, and no
    # schema version (that came with Alembic).
    path = tmp_path / "data" / "koubo.db"
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE alembic_version")
        conn.execute("DROP TABLE workers")
        for column in ("worker_name", "engine", "device"):
            conn.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    assert "engine" not in columns

    service = JobService(settings)
    try:
        old = service.get(job.id)
        assert old.status == JobStatus.queued and old.worker_name is None and old.params["engine"] == "classic"
        assert service.workers() == []
        # The old job (engine unknown: NULL) is still claimed by a worker that routes.
        db = Database(settings.database_location)
        assert db.claim_next("h:1", Routing("w", ("classic",), "cpu")) == job.id
        db.close()
    finally:
        service.close()
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"worker_name", "engine", "device"} <= columns and "workers" in tables


def test_claims_follow_engine_and_device_and_a_lost_worker_gets_one_requeue_then_a_reason(
    tmp_path: Path, redis_server: Redis, postgres: Postgres
) -> None:
    _reset_database(postgres)
    settings = Settings(
        data_dir=tmp_path / "data", queue_url=redis_server.url, database_url=postgres.url, worker_timeout=5
    )
    db = Database(settings.database_location)
    queue = create_queue(settings)
    try:
        ids = _insert_jobs(db, [("wav2lip", None), ("classic", None), ("classic", "cuda")])
        cpu = Routing("cpu-box", ("classic",), "cpu")
        gpu = Routing("gpu-box", ("classic", "wav2lip"), "cuda")
        assert db.claim_next("cpu-host:1", cpu) == ids[1]
        assert db.claim_next("cpu-host:1", cpu) is None  # wav2lip and cuda jobs are not for it
        assert db.claim_next("gpu-host:1", gpu) == ids[0]
        assert db.claim_next("gpu-host:2", gpu) == ids[2]
        assert db.claim_next("gpu-host:3", gpu) is None  # never twice

        # Both jobs of gpu-box: one on its first attempt, one already requeued once. Their worker ran
        # on another machine and fell silent: only the heartbeat's age says it is gone.
        stale = utcnow() - timedelta(seconds=30)
        for job_id, worker, attempts in ((ids[0], "gpu-host:1", 1), (ids[2], "gpu-host:2", 2)):
            assert db.update_run(job_id, worker, heartbeat_at=stale, attempts=attempts)
        assert db.update_run(ids[1], "cpu-host:1", heartbeat_at=utcnow())
        recover_jobs(settings, db, queue)
        with db.session() as session:
            jobs = {job.id: job for job in session.query(Job).all()}
        assert jobs[ids[0]].status == JobStatus.queued and jobs[ids[0]].attempts == 2
        assert jobs[ids[0]].worker is None and jobs[ids[0]].worker_name is None
        assert jobs[ids[2]].status == JobStatus.failed and jobs[ids[2]].error_code == "worker_lost"
        assert "gpu-box" in (jobs[ids[2]].error_en or "") and "gpu-box" in (jobs[ids[2]].error_zh or "")
        assert jobs[ids[1]].status == JobStatus.running  # its worker beats: untouched
        # The requeued job has a queue message again (Redis holds one per queued job).
        assert queue.pending_job_ids() == [ids[0]]
    finally:
        queue.huey.storage.flush_all()
        queue.close()
        db.close()


def _insert_jobs(db: Database, routes: list[tuple[str, str | None]]) -> list[str]:
    with db.session() as session:
        audio = Asset(
            kind="audio", name="a.wav", sha256="a" * 64, size=1, duration=1.0, container="wav", stored_name="a"
        )
        video = Asset(
            kind="video", name="v.mp4", sha256="b" * 64, size=1, duration=1.0, container="mp4", stored_name="v"
        )
        session.add_all([audio, video])
        session.flush()
        jobs = []
        for index, (engine, device) in enumerate(routes):
            now = utcnow() + timedelta(milliseconds=index)
            params = {"engine": engine, "expressiveness": 1.0, "crf": 20, "preset": "veryfast"}
            jobs.append(
                Job(
                    audio_id=audio.id,
                    video_id=video.id,
                    status=JobStatus.queued,
                    params=params,
                    engine=engine,
                    device=device,
                    output_name=f"{index}.mp4",
                    created_at=now,
                    queued_at=now,
                )
            )
        session.add_all(jobs)
    return [job.id for job in jobs]


def _copy(source: Path, folder: Path) -> Path:
    target = folder / f"{time.monotonic_ns()}{source.suffix}"
    shutil.copyfile(source, target)
    return target


# --- the whole system --------------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    data_dir: Path

    def log(self) -> str:
        path = self.data_dir / "logs" / "koubo.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_all(self) -> None:
        """kill -9 the worker, its worker processes and their generation children: a machine gone."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def start_worker(work: Path, name: str, env: dict[str, str]) -> WorkerProcess:
    data_dir = work / name
    data_dir.mkdir(parents=True)
    base = {key: value for key, value in os.environ.items() if not key.startswith("KOUBO_")}
    full_env = {**base, **env, "KOUBO_DATA_DIR": str(data_dir), "KOUBO_CONFIG": str(work / "no-koubo.toml")}
    with (work / f"{name}.out").open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "koubo.cli", "worker", "--name", name, "--concurrency", "1", "--device", "cpu"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return WorkerProcess(name, process, data_dir)


def starts_per_job(workers: list[WorkerProcess]) -> dict[str, list[str]]:
    """Job id -> the workers whose logs say they started it, in log order per worker."""
    found: dict[str, list[str]] = {}
    for worker in workers:
        for job_id in re.findall(r"\[job ([0-9a-f]{32})\] started on ", worker.log()):
            found.setdefault(job_id, []).append(worker.name)
    return found


@pytest.mark.timeout(600)
def test_batch_spreads_over_two_workers_and_survives_a_killed_worker_and_redis_and_postgres_restarts(
    tmp_path: Path, redis_server: Redis, postgres: Postgres, media: dict[str, Path]
) -> None:
    _reset_database(postgres)
    storage = tmp_path / "shared"
    env = {
        "KOUBO_QUEUE_URL": redis_server.url,
        "KOUBO_DATABASE_URL": postgres.url,
        "KOUBO_STORAGE_DIR": str(storage),
        "KOUBO_WORKER_TIMEOUT": str(WORKER_TIMEOUT_S),
    }
    (tmp_path / "web").mkdir()
    web = launch(tmp_path / "web", "--no-worker", "--no-links", env=env)
    workers = [start_worker(tmp_path, name, env) for name in ("box-a", "box-b")]
    try:
        with web.client() as client:
            wait_until(lambda: len(_alive(client)) == 2, 120, "both workers to report in", interval=0.5)
            listed = {w["name"]: w for w in client.get("/api/workers").json()}
            assert listed["box-a"]["device"] == "cpu" and "classic" in listed["box-a"]["engines"]
            video = _upload(client, media["video"], "video")
            audios = [_upload(client, media[f"speech{i}"], "audio") for i in range(BATCH_SIZE)]
            # Nobody offers CUDA: this one must wait, not be taken by a CPU worker.
            cuda_job = client.post(
                "/api/jobs", json={"audio_id": audios[0], "video_id": video, "params": {"device": "cuda"}}
            ).json()
            batch = client.post("/api/batches", json={"audio_ids": audios, "video_ids": [video]}).json()
            job_ids = [job["id"] for job in batch["jobs"]]

            # Spread: both workers run a job at the same time.
            running = wait_until(lambda: _running_on_both(client), 180, "a job running on each worker", interval=0.1)
            killed_job = running["box-b"]
            workers[1].kill_all()
            queued_at_restart = _count(client, "queued")
            redis_server.kill()
            redis_server.start()
            # Then PostgreSQL restarts under the running job (every connection cut) while others wait.
            running_at_db_restart = _count(client, "running")
            postgres.stop("fast")
            time.sleep(2)
            postgres.start()

            finished = wait_until(lambda: _all_finished(client, job_ids), 420, "every job to finish", interval=1.0)
            cuda = client.get(f"/api/jobs/{cuda_job['id']}").json()
            # A worker's row goes stale WORKER_TIMEOUT_S after its last heartbeat; with warm generation
            # processes the batch may finish before that.
            gone = wait_until(
                lambda: (
                    not (found := {w["name"]: w for w in client.get("/api/workers").json()})["box-b"]["alive"] and found
                ),
                WORKER_TIMEOUT_S + 30,
                "the killed worker to show as gone",
                interval=0.5,
            )
    finally:
        for worker in workers:
            worker.kill_all()
        web.stop()

    assert queued_at_restart > 0  # the restart emptied Redis while jobs were waiting
    assert running_at_db_restart > 0
    failures = {job["id"]: job["error"] for job in finished if job["status"] != "done"}
    assert not failures, failures
    # The job of the killed worker ran again, once, on the other one.
    again = next(job for job in finished if job["id"] == killed_job)
    assert again["attempts"] == 2 and again["worker_name"] == "box-a"
    starts = starts_per_job(workers)
    assert sorted(starts[killed_job]) == ["box-a", "box-b"]
    for job in finished:
        assert len(starts[job["id"]]) == job["attempts"], (job["id"], starts.get(job["id"]))
    # Outputs are in the shared storage, whole, with no temporary files beside them.
    for job in finished:
        folder = storage / "outputs" / job["id"]
        assert sorted(p.name for p in folder.iterdir()) == [job["output_name"]]
        assert (folder / job["output_name"]).stat().st_size == job["output_size"] > 0
    assert not (workers[0].data_dir / "outputs").exists() and not (workers[0].data_dir / "uploads").exists()
    # Routing: the CUDA job is still waiting, untouched by the CPU workers.
    assert cuda["status"] == "queued" and cuda["worker_name"] is None and cuda["attempts"] == 1
    assert gone["box-a"]["alive"] and not gone["box-b"]["alive"]


def _upload(client: httpx.Client, path: Path, kind: str) -> str:
    with path.open("rb") as file:
        response = client.post("/api/uploads", files={"file": (path.name, file)}, data={"kind": kind})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _alive(client: httpx.Client) -> list[str]:
    return [w["name"] for w in client.get("/api/workers").json() if w["alive"]]


def _jobs(client: httpx.Client, status: str | None = None) -> list[dict]:
    params = {"limit": 100} | ({"status": status} if status else {})
    return client.get("/api/jobs", params=params).json()["items"]


def _count(client: httpx.Client, status: str) -> int:
    return len(_jobs(client, status))


def _running_on_both(client: httpx.Client) -> dict[str, str] | None:
    running = {job["worker_name"]: job["id"] for job in _jobs(client, "running") if job["progress"] > 0.2}
    return running if {"box-a", "box-b"} <= running.keys() else None


def _all_finished(client: httpx.Client, job_ids: list[str]) -> list[dict] | None:
    jobs = [job for job in _jobs(client) if job["id"] in job_ids]
    return jobs if len(jobs) == len(job_ids) and all(j["status"] not in ("queued", "running") for j in jobs) else None
