"""Retention, the free-space guard and webhooks, on real files, a real database and real HTTP receivers.

Most tests write job rows straight into the database with real files where the outputs would be,
so no video is generated; one test runs the whole path through `koubo serve`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, unquote, urlsplit

import httpx
import pytest
from sqlalchemy import select, update

from koubo.config import Settings
from koubo.diskspace import free_bytes
from koubo.errors import KouboError
from koubo.jobs.service import JobService
from koubo.jobs.store import Asset, Database, Job, JobStatus, new_id, utcnow
from koubo.links.handout import LinkMaker
from koubo.links.signing import Keyring, verify
from koubo.ops import notify
from koubo.ops.notify import Notifier, build_delivery, job_event
from koubo.ops.retention import cleanup

from media_fixtures import make_speech, make_talking_video
from servers import launch, wait_until

SECRET = "s3cret-密钥"
REPORT = {
    "sync_offset": 1,
    "sync_confidence": 0.62,
    "face_coverage": 1.0,
    "video_duration": 1.5,
    "audio_duration": 1.5,
    "frames": 38,
    "fps": 25.0,
}


def make_settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", **values)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(make_settings(tmp_path).database_location)
    yield database
    database.close()


def add_job(
    settings: Settings,
    db: Database,
    status: JobStatus,
    *,
    age: timedelta = timedelta(0),
    size: int = 1000,
    name: str = "主播__讲话.mp4",
) -> str:
    """A job row as a worker leaves it; a done job gets a real file of `size` bytes as its output."""
    job_id = new_id()
    finished = status not in (JobStatus.queued, JobStatus.running)
    with db.session() as session:
        audio = Asset(kind="audio", name="讲话.wav", sha256=new_id(), size=1, duration=1.5, container="wav")
        video = Asset(kind="video", name="主播.mp4", sha256=new_id(), size=1, duration=1.0, container="mp4")
        audio.stored_name, video.stored_name = f"{audio.sha256}.wav", f"{video.sha256}.mp4"
        session.add_all([audio, video])
        session.flush()
        session.add(
            Job(
                id=job_id,
                audio_id=audio.id,
                video_id=video.id,
                status=status,
                params={},
                output_name=name,
                output_path=f"{job_id}/{name}" if status is JobStatus.done else None,
                output_size=size if status is JobStatus.done else None,
                report=REPORT if status is JobStatus.done else None,
                worker="host:1" if status is JobStatus.running else None,
                finished_at=utcnow() - age if finished else None,
            )
        )
    if status is JobStatus.done:
        path = settings.outputs_dir / job_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return job_id


def job_row(db: Database, job_id: str) -> Job:
    with db.session() as session:
        return session.scalars(select(Job).where(Job.id == job_id)).one()


def age_file(path: Path, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(b"partial")
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))
    return path


# --- retention --------------------------------------------------------------------------------------


def test_retention_by_age_expires_old_videos_and_keeps_their_history(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, retention_days=3)
    old = add_job(settings, db, JobStatus.done, age=timedelta(days=10), size=3000)
    older_than_limit = add_job(settings, db, JobStatus.done, age=timedelta(days=4), size=2000)
    recent = add_job(settings, db, JobStatus.done, age=timedelta(days=1), size=1000)
    failed = add_job(settings, db, JobStatus.failed, age=timedelta(days=30))

    report = cleanup(settings, db)

    assert report.expired_jobs == [old, older_than_limit]  # oldest first
    assert report.bytes_freed == 5000
    for job_id in (old, older_than_limit):
        row = job_row(db, job_id)
        assert row.status is JobStatus.expired and row.output_path is None
        assert row.output_size is not None and row.finished_at is not None  # the history stays
        assert not (settings.outputs_dir / job_id).exists()
    assert job_row(db, recent).status is JobStatus.done
    assert (settings.outputs_dir / recent / "主播__讲话.mp4").stat().st_size == 1000
    assert job_row(db, failed).status is JobStatus.failed

    service = JobService(settings)
    try:
        with pytest.raises(KouboError) as caught:
            service.output_file(old)
        assert (
            caught.value.code == "output_expired" and "retention" in caught.value.en and "保留策略" in caught.value.zh
        )
        assert service.get(old).status is JobStatus.expired
        assert service.output_file(recent)[0].is_file()
    finally:
        service.close()
    assert cleanup(settings, db).expired_jobs == []  # nothing left to do


def test_retention_by_quota_deletes_the_oldest_until_the_rest_fit(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, retention_max_bytes="250K")
    jobs = [add_job(settings, db, JobStatus.done, age=timedelta(hours=10 - i), size=100 * 1024) for i in range(4)]

    report = cleanup(settings, db)

    assert report.expired_jobs == jobs[:2]
    assert {removal.reason for removal in report.removals} == {"quota"}
    assert report.bytes_freed == 2 * 100 * 1024
    kept = sum(p.stat().st_size for p in settings.outputs_dir.rglob("*.mp4"))
    assert kept == 2 * 100 * 1024 <= settings.retention_max_bytes
    assert [job_row(db, j).status for j in jobs] == [JobStatus.expired] * 2 + [JobStatus.done] * 2


def test_cleanup_sweeps_stale_temporary_files_but_never_a_running_jobs(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path, retention_days=3)
    running = add_job(settings, db, JobStatus.running)
    failed = add_job(settings, db, JobStatus.failed)
    outputs, uploads, cache = settings.outputs_dir, settings.uploads_dir, settings.cache_dir
    # A render that has run for days is impossible (task_timeout), but even its file is left alone.
    running_part = age_file(outputs / running / ".主播.mp4.part-1a2b3c4d.mp4", days=2)
    stale_part = age_file(outputs / failed / ".主播.mp4.part-5e6f7a8b.mp4", days=2)
    fresh_part = age_file(outputs / failed / ".other.mp4.part-9c0d1e2f.mp4", days=0.5)
    stale_upload = age_file(uploads / ".tmp" / "0123abcd", days=2)
    fresh_upload = age_file(uploads / ".tmp" / "4567ef01", days=0)
    stale_staged = age_file(uploads / "ab" / ".deadbeef.part", days=2)
    kept_upload = age_file(uploads / "ab" / "abcdef.wav", days=30)  # a stored upload, however old
    stale_cache = age_file(cache / "audio-v1" / "ab" / "abcd.pkl", days=5)
    fresh_cache = age_file(cache / "audio-v1" / "cd" / "cdef.pkl", days=1)
    # Left by a computation that was killed; a lock in use is touched when taken, so it is fresh.
    stale_lock = age_file(cache / "audio-v1" / "ef" / "ef01.pkl.lock", days=5)

    dry = cleanup(settings, db, dry_run=True)
    assert {r.path for r in dry.removals} == {stale_part, stale_upload, stale_staged, stale_cache, stale_lock}
    assert all(path.exists() for path in (stale_part, stale_upload, stale_staged, stale_cache, stale_lock))

    report = cleanup(settings, db)

    assert {r.path for r in report.removals} == {stale_part, stale_upload, stale_staged, stale_cache, stale_lock}
    assert not any(path.exists() for path in (stale_part, stale_upload, stale_staged, stale_cache, stale_lock))
    assert all(path.exists() for path in (running_part, fresh_part, fresh_upload, kept_upload, fresh_cache))
    assert running_part.read_bytes() == b"partial"


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KOUBO_")}
    env |= {"KOUBO_CONFIG": str(settings.data_dir / "none.toml"), "KOUBO_DATA_DIR": str(settings.data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "koubo.cli", *args], check=False, env=env, capture_output=True, text=True, timeout=120
    )


def test_koubo_cleanup_dry_run_deletes_nothing_and_reports_what_it_would(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path)
    old = add_job(settings, db, JobStatus.done, age=timedelta(days=8), size=4096)
    new = add_job(settings, db, JobStatus.done, age=timedelta(days=1), size=4096)
    old_file = settings.outputs_dir / old / "主播__讲话.mp4"

    dry = run_cli(settings, "cleanup", "--dry-run", "--days", "7")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {old_file} (4096 bytes, job {old})" in dry.stdout
    assert new not in dry.stdout and "1 video(s) expired" in dry.stdout
    assert old_file.is_file() and job_row(db, old).status is JobStatus.done

    real = run_cli(settings, "cleanup", "--max-size", "4K")
    assert real.returncode == 0, real.stderr
    assert f"deleted {old_file} (4096 bytes, job {old})" in real.stdout
    assert not old_file.exists() and job_row(db, old).status is JobStatus.expired
    assert job_row(db, new).status is JobStatus.done

    bad = run_cli(settings, "cleanup", "--max-size", "lots")
    assert bad.returncode == 2 and "not a size" in bad.stderr


# --- the free-space guard -----------------------------------------------------------------------------


def test_free_space_guard_refuses_uploads_and_jobs_with_disk_full(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path)
    threshold = free_bytes(tmp_path) + 2**40  # a TiB more than the disk has free
    guarded = make_settings(tmp_path, min_free_bytes=threshold)
    speech = make_speech(tmp_path / "speech.wav", seconds=0.5)
    service = JobService(settings)
    try:
        audio = service.add_asset(speech, "speech.wav", "audio")
    finally:
        service.close()
    video_id = add_job(settings, db, JobStatus.failed)  # any job: only its video asset is used
    video = job_row(db, video_id).video_id

    service = JobService(guarded)
    try:
        source = tmp_path / "again.wav"
        make_speech(source, seconds=0.7)
        for attempt in (
            lambda: service.add_asset(source, "again.wav", "audio"),
            lambda: service.submit(audio.id, video),
            lambda: service.submit_batch([audio.id], [video]),
        ):
            with pytest.raises(KouboError) as caught:
                attempt()
            assert caught.value.code == "disk_full"
            assert "GiB free" in caught.value.en and "磁盘空间不足" in caught.value.zh
        assert not source.exists()  # the refused upload is not left behind
        assert service.list_jobs(status=JobStatus.queued)[1] == 0
    finally:
        service.close()


def test_the_rest_api_answers_507_while_the_disk_is_nearly_full(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from koubo.web.app import create_app

    settings = make_settings(tmp_path, min_free_bytes=free_bytes(tmp_path) + 2**40)
    speech = make_speech(tmp_path / "speech.wav", seconds=0.5)
    with TestClient(create_app(settings)) as client:
        with speech.open("rb") as file:
            upload = client.post("/api/uploads", files={"file": ("speech.wav", file)}, data={"kind": "audio"})
        job = client.post("/api/jobs", json={"audio_id": "a" * 32, "video_id": "b" * 32})
    for response in (upload, job):
        assert response.status_code == 507, response.text
        assert response.json()["error"]["code"] == "disk_full"
    assert list((settings.uploads_dir / ".tmp").iterdir()) == []


# --- webhooks -----------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server on a free loopback port that records every POST. The n-th request is
    answered after delays[n] seconds with statuses[n] (then 200) and `answer` as its body."""

    def __init__(self, statuses: tuple[int, ...] = (), delays: tuple[float, ...] = (), answer: bytes = b"{}") -> None:
        self.requests: list[Received] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    n = len(receiver.requests)
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                time.sleep(delays[n] if n < len(delays) else 0.0)
                self.send_response(statuses[n] if n < len(statuses) else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except OSError:
                    pass  # the sender gave up waiting (the timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?key=abc"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def finished_job(settings: Settings, db: Database, status: JobStatus = JobStatus.done) -> str:
    """A job finished the way a worker finishes it: running, then Database.finish_run."""
    job_id = add_job(settings, db, JobStatus.running)
    values: dict[str, Any] = {}
    if status is JobStatus.done:
        path = settings.outputs_dir / job_id / "主播__讲话.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 2048)
        values = {"output_path": f"{job_id}/主播__讲话.mp4", "output_size": 2048, "report": REPORT}
    error = None if status is JobStatus.done else KouboError("no_face", "No face was found.", "未检测到人脸。")
    assert db.finish_run(job_id, "host:1", status, error, **values)
    return job_id


def later(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def test_finishing_a_job_queues_one_notification_and_a_cancel_none(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path)
    done, failed = finished_job(settings, db), finished_job(settings, db, JobStatus.failed)
    cancelled = add_job(settings, db, JobStatus.running)
    db.finish_run(cancelled, "host:1", JobStatus.cancelled)
    assert [job_row(db, j).notify_state for j in (done, failed, cancelled)] == ["pending", "pending", None]


def test_json_webhook_carries_a_link_that_verifies_the_report_and_an_hmac_signature(
    tmp_path: Path, db: Database, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    settings = make_settings(tmp_path, webhook_url=receiver.url, webhook_secret=SECRET)
    job_id = finished_job(settings, db)

    assert Notifier(settings, db).deliver_due() == 1

    (request,) = receiver.requests
    assert request.path == "/hook?key=abc" and request.headers["Content-Type"].startswith("application/json")
    timestamp = request.headers["X-Koubo-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Koubo-Signature"] == f"sha256={expected}"
    assert request.headers["X-Koubo-Event"] == "job.done"
    event = request.json()
    assert event["event"] == "job.done" and event["report"] == REPORT
    job = event["job"]
    assert job["id"] == job_id and job["status"] == "done" and job["size"] == 2048 and job["error"] is None
    assert job["output_name"] == "主播__讲话.mp4" and job["duration"] == 1.5 and job["worker"] == "host:1"
    link = urlsplit(event["link"])
    assert f"{link.scheme}://{link.netloc}" == settings.links_base
    _, route, link_job, name = link.path.split("/")
    query = {key: values[0] for key, values in parse_qs(link.query).items()}
    exp = verify(Keyring(settings.data_dir), link_job, unquote(name), query["exp"], query["kid"], query["sig"])
    assert route == "d" and link_job == job_id and unquote(name) == "主播__讲话.mp4"
    assert datetime.fromisoformat(event["expires_at"]).timestamp() == exp
    assert exp == pytest.approx(time.time() + settings.link_lifetime, abs=60)

    row = job_row(db, job_id)
    assert row.notify_state == "sent" and row.notify_attempts == 1
    assert Notifier(settings, db).deliver_due(later(3600)) == 0 and len(receiver.requests) == 1


def test_a_failed_job_is_reported_with_its_error_in_both_languages(
    tmp_path: Path, db: Database, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    settings = make_settings(tmp_path, webhook_url=receiver.url)
    job_id = finished_job(settings, db, JobStatus.failed)
    Notifier(settings, db).deliver_due()
    (request,) = receiver.requests
    event = request.json()
    assert event["event"] == "job.failed" and event["link"] is None and event["expires_at"] is None
    assert event["job"]["error"] == {
        "code": "no_face",
        "message_en": "No face was found.",
        "message_zh": "未检测到人脸。",
    }
    assert "X-Koubo-Signature" not in request.headers  # no secret, no signature
    assert job_row(db, job_id).notify_state == "sent"


def test_a_receiver_that_fails_twice_gets_the_notification_on_the_third_attempt(
    tmp_path: Path, db: Database, receiver_factory: Any
) -> None:
    receiver = receiver_factory(statuses=(500, 503))
    settings = make_settings(tmp_path, webhook_url=receiver.url)
    job_id = finished_job(settings, db)
    notifier = Notifier(settings, db)

    assert notifier.deliver_due() == 1
    first_retry = job_row(db, job_id)
    assert first_retry.notify_state == "pending" and first_retry.notify_attempts == 1
    assert first_retry.notify_next_at == pytest.approx(later(notify.RETRY_DELAYS[0]), abs=timedelta(seconds=5))
    assert notifier.deliver_due() == 0  # not due yet: the backoff holds
    assert notifier.deliver_due(later(notify.RETRY_DELAYS[0] + 1)) == 1
    assert notifier.deliver_due(later(notify.RETRY_DELAYS[1] + 1)) == 1

    assert len(receiver.requests) == 3
    assert len({request.body for request in receiver.requests}) == 1  # the same notification each time
    row = job_row(db, job_id)
    assert row.notify_state == "sent" and row.notify_attempts == 3


def test_a_receiver_that_never_accepts_is_given_up_after_the_last_attempt(
    tmp_path: Path, db: Database, receiver_factory: Any
) -> None:
    # A bot refuses with HTTP 200 and an error code in the body: that is a failure too.
    receiver = receiver_factory(answer=json.dumps({"errcode": 310000, "errmsg": "sign not match"}).encode())
    settings = make_settings(tmp_path, webhook_url=receiver.url, webhook_format="dingtalk")
    job_id = finished_job(settings, db)
    notifier = Notifier(settings, db)
    for attempt in range(notify.MAX_ATTEMPTS):
        assert notifier.deliver_due(later(sum(notify.RETRY_DELAYS[:attempt]) + attempt + 1)) == 1
    assert notifier.deliver_due(later(3600)) == 0
    assert len(receiver.requests) == notify.MAX_ATTEMPTS
    row = job_row(db, job_id)
    assert row.notify_state == "failed" and row.notify_attempts == notify.MAX_ATTEMPTS


def test_a_receiver_that_hangs_hits_the_timeout_and_is_retried(
    tmp_path: Path, db: Database, receiver_factory: Any
) -> None:
    receiver = receiver_factory(delays=(5.0,))
    settings = make_settings(tmp_path, webhook_url=receiver.url, webhook_timeout=0.5)
    job_id = finished_job(settings, db)
    notifier = Notifier(settings, db)

    started = time.monotonic()
    assert notifier.deliver_due() == 1
    assert time.monotonic() - started < 3.0
    assert job_row(db, job_id).notify_state == "pending"
    assert notifier.deliver_due(later(notify.RETRY_DELAYS[0] + 1)) == 1
    assert len(receiver.requests) == 2 and job_row(db, job_id).notify_state == "sent"


def test_two_notifiers_on_one_database_deliver_each_notification_exactly_once(
    tmp_path: Path, db: Database, receiver_factory: Any
) -> None:
    receiver = receiver_factory(delays=(0.05,) * 8)
    settings = make_settings(tmp_path, webhook_url=receiver.url)
    jobs = {finished_job(settings, db) for _ in range(8)}
    databases = [Database(settings.database_location) for _ in range(2)]
    barrier = threading.Barrier(2)

    def drain(database: Database) -> None:
        barrier.wait()
        for _ in range(5):
            Notifier(settings, database).deliver_due()

    threads = [threading.Thread(target=drain, args=(database,)) for database in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for database in databases:
        database.close()

    delivered = [request.json()["job"]["id"] for request in receiver.requests]
    assert sorted(delivered) == sorted(jobs)
    assert {job_row(db, job_id).notify_state for job_id in jobs} == {"sent"}


def test_stale_or_outdated_notifications_are_skipped_not_sent(
    tmp_path: Path, db: Database, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    settings = make_settings(tmp_path, webhook_url=receiver.url)
    # Finished while no webhook was configured, two days ago: configuring one now must not send it.
    stale = finished_job(settings, db)
    with db.session() as session:
        session.execute(update(Job).where(Job.id == stale).values(notify_next_at=utcnow() - timedelta(days=2)))
    # Retried before its notification went out: it is queued again, and its old news is out of date.
    retried = finished_job(settings, db, JobStatus.failed)
    assert db.requeue_for_retry(retried)

    assert Notifier(settings, db).deliver_due() == 1
    assert receiver.requests == []
    assert job_row(db, stale).notify_state == "skipped" and job_row(db, retried).notify_state == "skipped"


def test_bot_formats_and_their_signatures_are_as_the_bots_document(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path)
    job_id = finished_job(settings, db)
    event = job_event(LinkMaker(settings), job_row(db, job_id))
    now = 1_700_000_000.25

    wecom = build_delivery(settings.model_copy(update={"webhook_format": "wecom"}), "https://wecom/send?key=k", event)
    body = json.loads(wecom.body)
    assert body["msgtype"] == "markdown" and wecom.url == "https://wecom/send?key=k"
    content = body["markdown"]["content"]
    for text in ("视频生成完成", "Video ready", "主播__讲话.mp4", "0.0 MiB", "置信度 / confidence 0.62", event["link"]):
        assert text in content

    ding_settings = settings.model_copy(update={"webhook_format": "dingtalk", "webhook_secret": SECRET})
    ding = build_delivery(ding_settings, "https://oapi.dingtalk.com/robot/send?access_token=t", event, now=now)
    query = parse_qs(urlsplit(ding.url).query)
    assert query["access_token"] == ["t"] and query["timestamp"] == ["1700000000250"]
    # DingTalk's documented recipe: HMAC-SHA256(key=secret, msg=timestamp + "\n" + secret), base64, urlencode.
    digest = hmac.new(SECRET.encode(), f"1700000000250\n{SECRET}".encode(), hashlib.sha256).digest()
    assert ding.url.endswith("&sign=" + quote_plus(base64.b64encode(digest).decode()))
    ding_body = json.loads(ding.body)
    assert ding_body["msgtype"] == "markdown" and "Video ready" in ding_body["markdown"]["title"]
    assert event["link"] in ding_body["markdown"]["text"]

    feishu_settings = settings.model_copy(update={"webhook_format": "feishu", "webhook_secret": SECRET})
    feishu = json.loads(build_delivery(feishu_settings, "https://open.feishu.cn/hook/x", event, now=now).body)
    # Feishu's documented recipe: HMAC-SHA256 keyed by timestamp + "\n" + secret over an empty message, base64.
    expected = base64.b64encode(hmac.new(f"1700000000\n{SECRET}".encode(), b"", hashlib.sha256).digest()).decode()
    assert feishu["timestamp"] == "1700000000" and feishu["sign"] == expected
    assert feishu["msg_type"] == "interactive"
    assert feishu["card"]["header"]["template"] == "green"
    assert event["link"] in feishu["card"]["elements"][0]["text"]["content"]


# --- the whole path -----------------------------------------------------------------------------------


def test_koubo_serve_posts_the_webhook_and_an_expired_video_answers_410(tmp_path: Path, receiver_factory: Any) -> None:
    receiver = receiver_factory()
    speech = make_speech(tmp_path / "speech.wav", seconds=1.0)
    template = make_talking_video(tmp_path / "template.mp4", seconds=1.0, size=(160, 160))
    env = {"KOUBO_WEBHOOK_URL": receiver.url, "KOUBO_WEBHOOK_SECRET": SECRET}
    server = launch(tmp_path, env=env)
    try:
        with server.client() as client:
            ids = {}
            for kind, path in (("audio", speech), ("video", template)):
                with path.open("rb") as file:
                    response = client.post("/api/uploads", files={"file": (path.name, file)}, data={"kind": kind})
                assert response.status_code == 201, response.text
                ids[kind] = response.json()["id"]
            job = client.post("/api/jobs", json={"audio_id": ids["audio"], "video_id": ids["video"]}).json()
            wait_until(lambda: receiver.requests, 240, "the webhook", interval=0.2)
            (request,) = receiver.requests
            event = request.json()
            assert event["event"] == "job.done" and event["job"]["id"] == job["id"]
            assert (
                event["report"]["sync_confidence"]
                == client.get(f"/api/jobs/{job['id']}").json()["report"]["sync_confidence"]
            )
            timestamp = request.headers["X-Koubo-Timestamp"]
            signature = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
            assert request.headers["X-Koubo-Signature"] == f"sha256={signature}"
            link = event["link"]
            assert link.startswith(f"http://127.0.0.1:{server.links_port}/d/{job['id']}/")
            downloaded = httpx.get(link, timeout=30)
            assert downloaded.status_code == 200 and len(downloaded.content) == event["job"]["size"]

            settings = Settings(data_dir=server.data_dir)
            cleaned = run_cli(settings, "cleanup", "--max-size", "0")
            assert cleaned.returncode == 0 and f"job {job['id']}" in cleaned.stdout, cleaned.stdout + cleaned.stderr

            assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "expired"
            gone = client.get(f"/api/jobs/{job['id']}/download")
            assert gone.status_code == 410 and gone.json()["error"]["code"] == "output_expired"
            expired_link = httpx.get(link, timeout=30)
            assert expired_link.status_code == 410 and expired_link.json()["error"]["code"] == "output_expired"
            time.sleep(2.5)  # a few notifier polls: nothing is sent twice
            assert len(receiver.requests) == 1
    finally:
        assert server.stop() == 0, server.output()
    assert "webhook: job.done for job" in server.output()
