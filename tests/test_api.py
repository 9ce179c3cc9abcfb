"""The REST API over real HTTP: `koubo serve` in a subprocess (with its job consumer), driven by httpx."""

from __future__ import annotations

import hashlib
import io
import secrets
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from media_fixtures import make_speech, make_talking_video, write_text_file
from servers import Server, launch, wait_until

UPLOAD_LIMIT = 1_000_000  # bytes; the fixtures are far smaller, the "too large" file far bigger
JOB_TIMEOUT = 240.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("api-media")
    return {
        "speech": make_speech(work / "speech.wav", seconds=1.5),
        "video": make_talking_video(work / "template.mp4", seconds=1.0, size=(160, 160)),
        "video2": make_talking_video(work / "template2.mp4", seconds=1.2, size=(160, 160)),
        "text": write_text_file(work / "notes.mp4"),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(tmp_path_factory.mktemp("api-server"), env={"KOUBO_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT)})
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def upload(client: httpx.Client, path: Path, kind: str, name: str | None = None) -> httpx.Response:
    with path.open("rb") as file:
        return client.post("/api/uploads", files={"file": (name or path.name, file)}, data={"kind": kind})


@pytest.fixture(scope="module")
def assets(client: httpx.Client, media: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """The speech and two templates, uploaded under Unicode names."""
    found = {}
    for key, path, kind, name in [
        ("audio", media["speech"], "audio", "讲话 录音.wav"),
        ("video", media["video"], "video", "主播 模板.mp4"),
        ("video2", media["video2"], "video", "第二个模板.mp4"),
    ]:
        response = upload(client, path, kind, name)
        assert response.status_code == 201, response.text
        found[key] = response.json()
    return found


def wait_for_job(client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def poll() -> dict[str, Any] | None:
        job = client.get(f"/api/jobs/{job_id}").json()
        return job if until(job) else None

    return wait_until(poll, JOB_TIMEOUT, f"job {job_id}")


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("done", "failed", "cancelled", "timed_out")


@pytest.fixture(scope="module")
def done_job(client: httpx.Client, assets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One job run to the end, with every state seen while polling it."""
    response = client.post("/api/jobs", json={"audio_id": assets["audio"]["id"], "video_id": assets["video"]["id"]})
    assert response.status_code == 201, response.text
    seen: list[dict[str, Any]] = [response.json()]

    def poll() -> dict[str, Any] | None:
        seen.append(client.get(f"/api/jobs/{seen[0]['id']}").json())
        return seen[-1] if finished(seen[-1]) else None

    job = wait_until(poll, JOB_TIMEOUT, f"job {seen[0]['id']} to finish", interval=0.05)
    assert job["status"] == "done", job
    return {**job, "seen": seen}


def settled(client: httpx.Client) -> dict[str, Any]:
    """The queue summary once no job is queued or running: other tests' jobs on this shared server
    have ended, so counts read one after the other agree."""

    def idle() -> dict[str, Any] | None:
        summary = client.get("/api/queue").json()
        return summary if not summary.get("queued") and not summary.get("running") else None

    return wait_until(idle, 2 * JOB_TIMEOUT, "the shared server's jobs to end", interval=0.2)


def output_file(server: Server, job: dict[str, Any]) -> Path:
    (path,) = (server.data_dir / "outputs" / job["id"]).glob("*.mp4")
    return path


def test_health_is_ok_with_version_and_database(client: httpx.Client) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["version"] and body["queue"]["workers"] == 1


def test_upload_returns_the_asset_and_same_bytes_give_the_same_asset(
    client: httpx.Client, media: dict[str, Path], assets: dict[str, dict[str, Any]]
) -> None:
    audio, video = assets["audio"], assets["video"]
    assert audio["kind"] == "audio" and audio["name"] == "讲话 录音.wav"
    assert audio["size"] == media["speech"].stat().st_size
    assert audio["sha256"] == sha256(media["speech"].read_bytes())
    assert audio["duration"] == pytest.approx(1.5, abs=0.05)
    assert video["kind"] == "video" and video["duration"] == pytest.approx(1.0, abs=0.05)
    assert set(audio) >= {"id", "kind", "name", "size", "duration", "sha256", "created_at"}

    again = upload(client, media["speech"], "audio", "another name.wav")
    assert again.status_code == 201 and again.json()["id"] == audio["id"]


def test_text_file_named_mp4_is_refused_in_english_and_chinese(
    client: httpx.Client, server: Server, media: dict[str, Path]
) -> None:
    response = upload(client, media["text"], "video", "notes.mp4")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "not_media"
    assert "notes.mp4" in error["message_en"] and "notes.mp4" in error["message_zh"]
    assert list((server.data_dir / "uploads" / ".tmp").iterdir()) == []


def test_upload_over_the_limit_is_refused_with_413_and_leaves_no_file(
    client: httpx.Client, server: Server, tmp_path: Path
) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(secrets.token_bytes(UPLOAD_LIMIT + 200_000))
    stored_before = sorted((server.data_dir / "uploads").rglob("*"))

    # Announced by Content-Length: refused before the body is read.
    response = upload(client, big, "audio")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"

    # Chunked, no Content-Length: refused while streaming, once the limit is passed.
    boundary = "koubo-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\naudio\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        data = big.read_bytes()
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    with httpx.Client(base_url=server.url, timeout=30.0) as fresh:
        response = fresh.post(
            "/api/uploads", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert sorted((server.data_dir / "uploads").rglob("*")) == stored_before
    assert list((server.data_dir / "uploads" / ".tmp").iterdir()) == []


def test_file_names_are_display_text_never_paths(client: httpx.Client, server: Server, tmp_path: Path) -> None:
    names = ["../../escape.wav", "a\\b.wav", "nul\x00byte.wav", "/etc/passwd.wav", "语音 テスト 🎤.wav"]
    # httpx, like browsers, sends control characters percent-encoded (the HTML5 form rule).
    shown = ["../../escape.wav", "a\\b.wav", "nul%00byte.wav", "/etc/passwd.wav", "语音 テスト 🎤.wav"]
    for index, (name, expected) in enumerate(zip(names, shown, strict=True)):
        speech = make_speech(tmp_path / f"s{index}.wav", seconds=1.0 + index / 10)
        response = upload(client, speech, "audio", name)
        assert response.status_code == 201, response.text
        assert response.json()["name"] == expected
    work = server.data_dir.parent
    assert not any("escape" in p.name or p.name == "b.wav" for p in work.parent.rglob("*"))
    stored = [p for p in (server.data_dir / "uploads").rglob("*") if p.is_file()]
    # Stored names come from the content hash, never from what the client said.
    assert stored and all(len(p.stem) == 64 and set(p.stem) <= set("0123456789abcdef") for p in stored)


def test_job_reports_stage_and_progress_until_done(done_job: dict[str, Any]) -> None:
    running = [job for job in done_job["seen"] if job["status"] == "running"]
    assert running, "never saw the job running"
    assert any(job["stage"] for job in running)
    progress = [job["progress"] for job in done_job["seen"]]
    assert all(0.0 <= p <= 1.0 for p in progress) and any(0.0 < p < 1.0 for p in progress)
    assert done_job["progress"] == 1.0 and done_job["output_size"] > 0
    assert done_job["download_url"] == f"/api/jobs/{done_job['id']}/download"
    assert done_job["finished_at"] >= done_job["started_at"]


def test_download_returns_the_output_bytes_with_a_unicode_file_name(
    client: httpx.Client, server: Server, done_job: dict[str, Any]
) -> None:
    path = output_file(server, done_job)
    response = client.get(f"/api/jobs/{done_job['id']}/download")
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert sha256(response.content) == sha256(path.read_bytes())
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "主播 模板" in done_job["output_name"]
    assert f"filename*=UTF-8''{quote(done_job['output_name'], safe='')}" in disposition
    assert 'filename="' in disposition and disposition.isascii()

    inline = client.get(f"/api/jobs/{done_job['id']}/download", params={"inline": 1})
    assert inline.headers["content-disposition"].startswith("inline;")

    head = client.head(f"/api/jobs/{done_job['id']}/download")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == path.stat().st_size


def test_range_request_returns_206_with_those_bytes(
    client: httpx.Client, server: Server, done_job: dict[str, Any]
) -> None:
    data = output_file(server, done_job).read_bytes()
    response = client.get(f"/api/jobs/{done_job['id']}/download", headers={"Range": "bytes=100-1099"})
    assert response.status_code == 206
    assert response.content == data[100:1100]
    assert response.headers["content-range"] == f"bytes 100-1099/{len(data)}"


def test_list_filters_by_status_and_pages(client: httpx.Client, done_job: dict[str, Any]) -> None:
    settled(client)
    done = client.get("/api/jobs", params={"status": "done"}).json()
    assert done_job["id"] in [job["id"] for job in done["items"]]
    assert all(job["status"] == "done" for job in done["items"]) and done["total"] == len(done["items"])

    everything = client.get("/api/jobs").json()
    pages = [client.get("/api/jobs", params={"limit": 1, "offset": i}).json() for i in range(everything["total"])]
    assert all(page["total"] == everything["total"] and page["limit"] == 1 for page in pages)
    assert [page["items"][0]["id"] for page in pages] == [job["id"] for job in everything["items"]]
    assert client.get("/api/jobs", params={"status": "nonsense"}).json()["error"]["code"] == "invalid_request"


def test_cancel_queued_retry_it_and_delete_removes_the_output(
    client: httpx.Client, server: Server, assets: dict[str, dict[str, Any]], done_job: dict[str, Any]
) -> None:
    pair = {"audio_id": assets["audio"]["id"], "video_id": assets["video2"]["id"]}
    first = client.post("/api/jobs", json=pair).json()
    queued = client.post("/api/jobs", json=pair).json()
    # One worker: the second job waits behind the first.
    assert queued["status"] == "queued" and queued["queue_position"] >= 1

    cancelled = client.post(f"/api/jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    retried = client.post(f"/api/jobs/{queued['id']}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "queued" and retried.json()["attempts"] == queued["attempts"] + 1

    not_retryable = client.post(f"/api/jobs/{done_job['id']}/retry")
    assert not_retryable.status_code == 409 and not_retryable.json()["error"]["code"] == "not_retryable"

    for job in (first, queued):
        job = wait_for_job(client, job["id"], finished)
        assert job["status"] == "done", job
        output = output_file(server, job)
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
        assert not output.exists()
        gone = client.get(f"/api/jobs/{job['id']}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def test_batch_of_one_audio_and_two_videos_finishes_both(
    client: httpx.Client, server: Server, assets: dict[str, dict[str, Any]]
) -> None:
    response = client.post(
        "/api/batches",
        json={"audio_ids": [assets["audio"]["id"]], "video_ids": [assets["video"]["id"], assets["video2"]["id"]]},
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    assert len(batch["jobs"]) == 2 and all(job["batch_id"] == batch["id"] for job in batch["jobs"])

    def batch_done() -> dict[str, Any] | None:
        current = client.get(f"/api/batches/{batch['id']}").json()
        return current if all(finished(job) for job in current["jobs"]) else None

    final = wait_until(batch_done, 2 * JOB_TIMEOUT, "the batch")
    assert [job["status"] for job in final["jobs"]] == ["done", "done"]
    assert final["counts"].get("done") == 2
    outputs = {output_file(server, job) for job in final["jobs"]}
    assert len(outputs) == 2 and all(path.read_bytes()[4:8] == b"ftyp" for path in outputs)
    listed = client.get("/api/jobs", params={"batch_id": batch["id"]}).json()
    assert listed["total"] == 2
    zip_link = client.get(f"/api/batches/{batch['id']}/link").json()["url"]
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(zip_link, timeout=60.0).content))
    assert sorted(archive.read(name) for name in archive.namelist()) == sorted(
        output_file(server, job).read_bytes() for job in final["jobs"]
    )


def test_the_same_client_token_submits_once_even_when_sent_together(
    server: Server, client: httpx.Client, assets: dict[str, dict[str, Any]]
) -> None:
    pair = {"audio_id": assets["audio"]["id"], "video_id": assets["video2"]["id"]}
    batch = {"audio_ids": [assets["audio"]["id"]], "video_ids": [assets["video"]["id"], assets["video2"]["id"]]}
    total_before = client.get("/api/jobs", params={"limit": 1}).json()["total"]

    def send(path: str, body: dict[str, Any]) -> dict[str, Any]:
        with server.client() as own:  # a connection per request, as two clicks of a browser would
            response = own.post(path, json=body)
        assert response.status_code == 201, response.text
        return response.json()

    job_token, batch_token = secrets.token_hex(16), secrets.token_hex(16)
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda _: send("/api/jobs", pair | {"client_token": job_token}), range(4)))
        batches = list(pool.map(lambda _: send("/api/batches", batch | {"client_token": batch_token}), range(4)))
    assert {job["id"] for job in jobs} == {jobs[0]["id"]}
    assert {made["id"] for made in batches} == {batches[0]["id"]}
    # One job and one batch of two were made; no token, no idempotency: a new job each time.
    assert client.get("/api/jobs", params={"limit": 1}).json()["total"] == total_before + 3
    assert send("/api/jobs", pair)["id"] != send("/api/jobs", pair)["id"]
    for job in client.get("/api/jobs", params={"status": "queued", "limit": 200}).json()["items"]:
        client.post(f"/api/jobs/{job['id']}/cancel")


def test_queue_summary_matches_the_job_list(client: httpx.Client, done_job: dict[str, Any]) -> None:
    summary = settled(client)
    assert summary["workers"] == 1
    for status in ("queued", "running", "done", "failed", "cancelled"):
        assert summary.get(status, 0) == client.get("/api/jobs", params={"status": status}).json()["total"]


def test_metrics_count_jobs_by_status_and_their_durations(client: httpx.Client, done_job: dict[str, Any]) -> None:
    settled(client)
    done = client.get("/api/jobs", params={"status": "done"}).json()["total"]
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    # Values as Prometheus reads them (prometheus-client writes every number as a float: 1.0).
    samples = {
        (sample.name, tuple(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("koubo_jobs", (("status", "done"),))] == done
    assert samples[("koubo_queue_length", ())] == 0
    assert "# TYPE koubo_job_duration_seconds histogram" in lines
    assert samples[("koubo_job_duration_seconds_count", ())] == done
    assert samples[("koubo_job_duration_seconds_bucket", (("le", "+Inf"),))] == done
    assert samples[("koubo_job_duration_seconds_sum", ())] > 0


def test_logs_tail_mentions_the_job(client: httpx.Client, done_job: dict[str, Any]) -> None:
    response = client.get("/api/logs", params={"lines": 500})
    assert response.status_code == 200
    lines = response.json()["lines"]
    assert 0 < len(lines) <= 500
    assert any(done_job["id"] in line for line in lines)


def test_log_stream_sends_the_tail_then_new_lines(
    client: httpx.Client, server: Server, done_job: dict[str, Any]
) -> None:
    marker = f"written by the test {secrets.token_hex(4)}"
    received: list[str] = []
    with client.stream("GET", "/api/logs/stream", params={"lines": 5}, timeout=httpx.Timeout(10.0)) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            received.append(line.removeprefix("data: "))
            if len(received) == 5:
                with (server.data_dir / "logs" / "koubo.log").open("a", encoding="utf-8") as log:
                    log.write(f"{marker} 日志\n")
            if marker in received[-1]:
                break
    # The shared server's own log lines (a job finishing) may come between the tail and the marker.
    assert len(received) >= 6 and received[-1] == f"{marker} 日志"
    assert all(received[:5]) and not any(marker in line for line in received[:5])


def test_bad_requests_get_json_errors(client: httpx.Client, assets: dict[str, dict[str, Any]]) -> None:
    invalid = client.post("/api/jobs", json={"audio_id": assets["audio"]["id"]})
    assert invalid.status_code == 422
    error = invalid.json()["error"]
    assert error["code"] == "invalid_request" and error["message_en"] and error["message_zh"]

    params = {"audio_id": assets["audio"]["id"], "video_id": assets["video"]["id"], "params": {"crf": 99}}
    assert client.post("/api/jobs", json=params).status_code == 422

    wrong_kind = client.post("/api/jobs", json={"audio_id": assets["video"]["id"], "video_id": assets["audio"]["id"]})
    assert wrong_kind.status_code in (400, 404) and wrong_kind.json()["error"]["code"]

    missing = client.get("/api/jobs/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    unknown = client.get("/api/no-such-endpoint")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    no_kind = client.post("/api/uploads", files={"file": ("x.wav", b"RIFF")})
    assert no_kind.status_code == 422 and no_kind.json()["error"]["code"] == "invalid_request"
    cut_short = client.post(
        "/api/uploads",
        content=iter([b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n\r\nRIFF']),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert cut_short.status_code == 422 and cut_short.json()["error"]["code"] == "invalid_request"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("auth-server")
    # Apache's htpasswd writes $2y$; cost 4 keeps the test fast.
    hashed = bcrypt.hashpw("口令 secret".encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    (work / "htpasswd").write_text(f"# koubo users\nalice:{hashed}\n", encoding="utf-8")
    running = launch(work, "--no-worker", env={"KOUBO_HTPASSWD_FILE": str(work / "htpasswd")})
    yield running
    assert running.stop() == 0, running.output()


@pytest.mark.parametrize("path", ["/api/jobs", "/", "/metrics", "/docs"])
def test_basic_auth_guards_api_and_ui(auth_server: Server, path: str) -> None:
    with auth_server.client() as anonymous:
        refused = anonymous.get(path)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Basic realm="koubo"')
        assert refused.json()["error"]["code"] == "unauthorized"
    with auth_server.client(auth=("alice", "wrong")) as wrong:
        assert wrong.get(path).status_code == 401
    with auth_server.client(auth=("mallory", "口令 secret")) as unknown:
        assert unknown.get(path).status_code == 401
    with auth_server.client(auth=("alice", "口令 secret")) as alice:
        assert alice.get(path).status_code == 200


def test_health_stays_open_with_auth(auth_server: Server) -> None:
    assert httpx.get(f"{auth_server.url}/api/health").json()["status"] == "ok"


def test_signed_links_from_the_api_download_through_the_link_server(
    client: httpx.Client, server: Server, done_job: dict[str, Any]
) -> None:
    response = client.get(f"/api/jobs/{done_job['id']}/link", params={"expires": 600})
    assert response.status_code == 200, response.text
    link = response.json()
    assert link["url"].startswith(f"http://127.0.0.1:{server.links_port}/d/{done_job['id']}/")
    lasts = datetime.fromisoformat(link["expires_at"]) - datetime.now(UTC)
    assert timedelta(seconds=590) < lasts <= timedelta(seconds=600)
    video = wait_until(lambda: httpx.get(link["url"], timeout=30.0), 30, "the link server")
    assert video.status_code == 200
    assert video.content == output_file(server, done_job).read_bytes()
    forever = client.get(f"/api/jobs/{done_job['id']}/link", params={"expires": 0}).json()
    assert forever["expires_at"] is None and "exp=0&" in forever["url"]
    batch_id = done_job.get("batch_id") or "no-such-batch"
    assert client.get(f"/api/batches/{batch_id}/link").status_code == 404
    assert client.get("/api/jobs/no-such-job/link").status_code == 404
