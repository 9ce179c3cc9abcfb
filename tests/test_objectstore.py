"""Object storage against a real S3-protocol server: moto's, started as its own process on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select, update

from koubo.config import Settings
from koubo.errors import KouboError
from koubo.jobs.service import JobService
from koubo.jobs.store import Database, Job, StorageState, upload_pending, utcnow
from koubo.links.handout import LinkMaker
from koubo.ops.notify import Notifier
from koubo.ops.offload import Uploader
from koubo.ops.retention import cleanup
from koubo.storage import PART_BYTES, ObjectStore, expected_etag

from job_fixtures import finished_job
from servers import free_port, wait_until

BUCKET = "koubo-videos"
KEYS = {"AWS_ACCESS_KEY_ID": "koubo-test", "AWS_SECRET_ACCESS_KEY": "koubo-test-secret"}


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), 60, "the S3 server to answer")
        yield url
    finally:
        server.terminate()
        server.wait(20)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an S3 error answer is an answer
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def settings(tmp_path: Path, s3_url: str) -> Settings:
    settings = Settings(
        data_dir=tmp_path / "data",
        storage_upload="copy",
        s3_endpoint_url=s3_url,
        s3_bucket=BUCKET,
        s3_addressing_style="path",
        s3_retry_interval=30,
    )
    client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return settings


def _job(tmp_path: Path, settings: Settings, audio_name: str = "问候.wav") -> tuple[str, Path]:
    job_id = finished_job(tmp_path, settings.data_dir, audio_name=audio_name)
    db = Database(settings.database_location)
    try:
        with db.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(**upload_pending(True)))
            job = session.scalars(select(Job).where(Job.id == job_id)).one()
            return job_id, settings.outputs_dir / job.output_path
    finally:
        db.close()


def _row(settings: Settings, job_id: str) -> Job:
    db = Database(settings.database_location)
    try:
        with db.session() as session:
            return session.scalars(select(Job).where(Job.id == job_id)).one()
    finally:
        db.close()


def _upload_due(settings: Settings) -> int:
    db = Database(settings.database_location)
    try:
        return Uploader(settings, db, ObjectStore(settings)).upload_due()
    finally:
        db.close()


def test_a_large_file_goes_up_in_parts_and_its_etag_is_checked(settings: Settings, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(PART_BYTES + 12345))
    stored = ObjectStore(settings).put_verified(big, "koubo/test/big.bin")
    assert stored.etag.endswith("-2") and stored.etag == expected_etag(big, PART_BYTES, multipart=True)
    body = boto3.client("s3", endpoint_url=settings.s3_endpoint_url).get_object(Bucket=BUCKET, Key=stored.key)["Body"]
    assert body.read() == big.read_bytes()


def test_a_done_job_is_uploaded_and_its_link_is_a_presigned_url_with_its_chinese_name(
    settings: Settings, tmp_path: Path
) -> None:
    job_id, local = _job(tmp_path, settings)
    assert _upload_due(settings) == 1
    row = _row(settings, job_id)
    assert row.storage_state == StorageState.uploaded and row.storage_key == f"koubo/{job_id}/{row.output_name}"
    assert row.storage_etag == expected_etag(local, PART_BYTES, multipart=False)
    assert local.is_file()  # copy keeps the local file

    service = JobService(settings)
    try:
        job = service.get(job_id)
        link = LinkMaker(settings).job_link(job.id, job.output_name, job.storage_key, lifetime=600)
    finally:
        service.close()
    assert link.kind == "bucket"
    query = parse_qs(urlsplit(link.url).query)
    assert query["X-Amz-Expires"] == ["600"]
    with urllib.request.urlopen(link.url, timeout=30) as answer:
        assert answer.read() == local.read_bytes()
        disposition = answer.headers["Content-Disposition"]
    assert "attachment" in disposition and "filename*=UTF-8''" in disposition and "%E9%97%AE%E5%80%99" in disposition


def test_links_longer_than_a_week_are_refused_for_the_bucket(settings: Settings, tmp_path: Path) -> None:
    job_id, _ = _job(tmp_path, settings)
    _upload_due(settings)
    key = _row(settings, job_id).storage_key
    links = LinkMaker(settings)
    for asked in (0, 8 * 24 * 3600):
        with pytest.raises(KouboError) as refused:
            links.job_link(job_id, "a.mp4", key, lifetime=asked)
        assert refused.value.code == "link_too_long" and "7" in refused.value.zh
    # Without a lifetime asked for, the configured one (7 days by default) is used as it is.
    default = links.job_link(job_id, "a.mp4", key)
    assert parse_qs(urlsplit(default.url).query)["X-Amz-Expires"] == [str(7 * 24 * 3600)]


def test_move_deletes_the_local_copy_only_after_a_verified_upload_and_retention_deletes_the_object(
    settings: Settings, tmp_path: Path
) -> None:
    moving = settings.model_copy(update={"storage_upload": "move", "retention_days": 1})
    job_id, local = _job(tmp_path, moving)
    _upload_due(moving)
    row = _row(moving, job_id)
    assert row.storage_state == StorageState.uploaded and not local.exists()
    client = boto3.client("s3", endpoint_url=moving.s3_endpoint_url)
    client.head_object(Bucket=BUCKET, Key=row.storage_key)

    db = Database(moving.database_location)
    try:
        report = cleanup(moving, db, now=utcnow() + timedelta(days=2))
    finally:
        db.close()
    assert report.expired_jobs == [job_id]
    with pytest.raises(ClientError) as gone:
        client.head_object(Bucket=BUCKET, Key=row.storage_key)
    assert gone.value.response["Error"]["Code"] == "404"


def test_a_bucket_that_is_down_leaves_the_job_done_with_its_error_and_it_is_retried(
    settings: Settings, tmp_path: Path
) -> None:
    down = settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    job_id, local = _job(tmp_path, down)
    assert _upload_due(down) == 1
    row = _row(down, job_id)
    assert row.status == "done" and local.is_file()
    assert row.storage_state == StorageState.pending and row.storage_error and row.storage_key is None
    assert row.storage_next_at > utcnow() + timedelta(seconds=20)  # not before the retry interval
    assert _upload_due(settings) == 0  # not due yet

    db = Database(settings.database_location)
    try:
        with db.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(storage_next_at=utcnow()))
    finally:
        db.close()
    assert _upload_due(settings) == 1
    row = _row(settings, job_id)
    assert row.storage_state == StorageState.uploaded and row.storage_error is None


def test_the_webhook_waits_for_the_first_upload_attempt(settings: Settings, tmp_path: Path) -> None:
    # Nothing listens there: each attempt fails, which is all that is counted here.
    hooked = settings.model_copy(update={"webhook_url": f"http://127.0.0.1:{free_port()}/hook", "webhook_timeout": 2})
    job_id, _ = _job(tmp_path, hooked)
    db = Database(hooked.database_location)
    try:
        with db.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(notify_state="pending", notify_attempts=0, notify_next_at=utcnow()))
        notifier = Notifier(hooked, db)
        assert notifier.deliver_due() == 0
        _upload_due(hooked)
        assert notifier.deliver_due() == 1
    finally:
        db.close()


def test_a_credentials_file_others_can_read_is_refused(settings: Settings, tmp_path: Path) -> None:
    credentials = tmp_path / "s3.ini"
    credentials.write_text("[default]\naws_access_key_id = a\naws_secret_access_key = b\n")
    credentials.chmod(0o644)
    with pytest.raises(KouboError) as refused:
        ObjectStore(settings.model_copy(update={"s3_credentials_file": credentials}))
    assert refused.value.code == "storage_config" and "chmod 600" in refused.value.en and "chmod 600" in refused.value.zh
    credentials.chmod(0o600)
    ObjectStore(settings.model_copy(update={"s3_credentials_file": credentials}))
