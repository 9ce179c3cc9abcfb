"""The web app against hostile and careless clients, over real HTTP (`koubo serve` in a subprocess):
Gradio file parameters, Gradio uploads, body sizes and pace, slow headers, absurd numbers and
password guessing (issue 10, items 2, 3, 7 and 8)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest

from koubo import errors
from koubo.auth.throttle import LoginThrottle
from koubo.config import Settings
from koubo.jobs.service import JobService, JobStatus
from koubo.jobs.store import utcnow
from koubo.links.handout import LinkMaker
from koubo.ops.retention import stale_temp_files
from koubo.web.ui import Handlers

from media_fixtures import make_speech, make_talking_video
from servers import Server, launch

HEADER_TIMEOUT = 2  # seconds: the servers here drop a client this slow
REQUEST_LIMIT = 64 * 1024
UPLOAD_LIMIT = 1_000_000
PASSWORD = "口令 secret"
# Far longer than any test takes: a blocked address stays blocked while it is checked.
BACKOFF_SECONDS = 600


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Media outside every upload folder: what a stranger names by path must never be used."""
    work = tmp_path_factory.mktemp("private")
    return {
        "speech": make_speech(work / "private speech.wav", seconds=1.0),
        "video": make_talking_video(work / "private face.mp4", seconds=1.0, size=(128, 128)),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "KOUBO_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "KOUBO_REQUEST_MAX_BYTES": str(REQUEST_LIMIT),
        "KOUBO_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT),
    }
    running = launch(tmp_path_factory.mktemp("limits"), "--no-worker", "--no-links", env=env)
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """With a password (3 wrong guesses, then a long back-off) and a disk that is always "full"."""
    work = tmp_path_factory.mktemp("strict")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (work / "htpasswd").write_text(f"alice:{hashed}\n", encoding="utf-8")
    env = {
        "KOUBO_HTPASSWD_FILE": str(work / "htpasswd"),
        "KOUBO_LOGIN_MAX_FAILURES": "3",
        "KOUBO_LOGIN_BACKOFF": str(BACKOFF_SECONDS),
        "KOUBO_MIN_FREE_BYTES": "1P",
    }
    running = launch(work, "--no-worker", "--no-links", env=env)
    yield running
    assert running.stop() == 0, running.output()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message_en"] and any("\u4e00" <= ch <= "\u9fff" for ch in error["message_zh"]), error
    return error


# --- item 2: Gradio file parameters ------------------------------------------------------------------


def gradio_call(server: Server, name: str, data: list[Any]) -> tuple[str, Any]:
    """POST /gradio_api/call/<name>, then read its event stream: ("complete" or "error", data)."""
    with server.client() as client:
        started = client.post(f"/gradio_api/call/{name}", json={"data": data})
        assert started.status_code == 200, started.text
        event_id = started.json()["event_id"]
        stream = client.get(f"/gradio_api/call/{name}/{event_id}").text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], json.loads(payloads[-1]) if payloads[-1] != "null" else None


def file_data(path: str) -> dict[str, Any]:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def files_named(folder: Path, name: str, since: float) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob(name) if p.is_file() and p.stat().st_mtime >= since]


def test_a_gradio_call_naming_a_file_outside_its_upload_folder_is_refused_and_copies_nothing(
    server: Server, media: dict[str, Path]
) -> None:
    started = time.time() - 1
    options = ["classic", 1.0, "standard", "off"]
    # The first input is the click's token (koubo/web/ui.py CLICK_TOKEN_JS).
    single = ["t1", "en", file_data(str(media["speech"])), {"video": file_data(str(media["video"]))}, *options]
    kind, data = gradio_call(server, "submit_single", single)
    assert kind == "error", data
    with server.client() as client:
        assert client.get("/api/jobs").json()["total"] == 0

    answers = {}
    for path in ("/etc/passwd", str(server.data_dir / "koubo.db"), "/etc/no-such-file", "../../../../etc/passwd"):
        batch = [f"t-{len(answers)}", "en", [file_data(path)], [file_data(path)], *options]
        kind, data = gradio_call(server, "submit_batch", batch)
        assert kind == "error", data
        answers[path] = json.dumps(data).replace(json.dumps(path)[1:-1], "<path>")
    # The same answer whether the file exists or not.
    assert answers["/etc/passwd"] == answers["/etc/no-such-file"] == answers[str(server.data_dir / "koubo.db")]
    for folder in (server.data_dir, Path(tempfile.gettempdir()) / "gradio"):
        for name in ("passwd", "koubo.db", media["speech"].name, media["video"].name):
            copies = [p for p in files_named(folder, name, started) if p != server.data_dir / "koubo.db"]
            assert not copies, copies
    with server.client() as client:
        assert client.get("/api/jobs").json()["total"] == 0


def test_the_ui_refuses_a_path_outside_gradios_folder_without_saying_whether_it_exists(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    service = JobService(settings)
    try:
        handlers = Handlers(service, settings, LinkMaker(settings))
        outside = tmp_path / "private.wav"
        outside.write_bytes(b"RIFF")
        messages = set()
        for path in (outside, tmp_path / "missing.wav", settings.gradio_dir / ".." / "koubo.db"):
            with pytest.raises(errors.KouboError) as caught:
                handlers.stage_upload(str(path), "audio")
            assert caught.value.code == "not_an_upload"
            messages.add((caught.value.en, caught.value.zh))
        assert len(messages) == 1
    finally:
        service.close()


# --- item 3: Gradio's uploads --------------------------------------------------------------------------


def test_gradio_uploads_land_under_data_dir_and_obey_the_size_limit(server: Server, media: dict[str, Path]) -> None:
    with server.client() as client, media["speech"].open("rb") as file:
        accepted = client.post("/gradio_api/upload", files={"files": ("speech.wav", file)})
        assert accepted.status_code == 200, accepted.text
        (stored,) = accepted.json()
        assert Path(stored).resolve().is_relative_to((server.data_dir / "gradio").resolve())
        big = client.post("/gradio_api/upload", files={"files": ("big.wav", b"\0" * (UPLOAD_LIMIT + 100_000))})
        assert big.status_code == 413
    assert not files_named(server.data_dir / "gradio", "big.wav", 0)


def test_gradio_uploads_obey_the_free_space_guard(strict_server: Server) -> None:
    with strict_server.client(auth=("alice", PASSWORD)) as client:
        refused = client.post("/gradio_api/upload", files={"files": ("speech.wav", b"RIFF" * 1000)})
        assert_error(refused, 507, "disk_full")
    assert not files_named(strict_server.data_dir / "gradio", "speech.wav", 0)


def test_retry_obeys_the_free_space_guard(tmp_path: Path, media: dict[str, Path]) -> None:
    roomy = JobService(Settings(data_dir=tmp_path, min_free_bytes=0))
    try:
        ids = []
        for source, kind in ((media["speech"], "audio"), (media["video"], "video")):
            staged = roomy.upload_tmp_dir / source.name
            shutil.copyfile(source, staged)
            ids.append(roomy.add_asset(staged, source.name, kind).id)  # type: ignore[arg-type]
        job = roomy.cancel(roomy.submit(ids[0], ids[1]).id)
        assert job.status is JobStatus.cancelled
    finally:
        roomy.close()
    full = JobService(Settings(data_dir=tmp_path, min_free_bytes=2**60))
    try:
        with pytest.raises(errors.KouboError) as caught:
            full.retry(job.id)
        assert caught.value.code == "disk_full"
        assert full.get(job.id).status is JobStatus.cancelled
    finally:
        full.close()


def test_retention_sweeps_old_files_in_gradios_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    old = settings.gradio_dir / "0a1b" / "speech.wav"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"RIFF")
    fresh = settings.gradio_dir / "2c3d" / "video.mp4"
    fresh.parent.mkdir(parents=True)
    fresh.write_bytes(b"mp4")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    stale = set(stale_temp_files(settings, set(), utcnow() - timedelta(days=1)))
    assert old in stale and fresh not in stale


# --- items 7 and 8: bodies, headers, numbers ------------------------------------------------------------


def raw_exchange(server: Server, request: bytes, wait: float = 60.0) -> bytes:
    """Send `request` as is and read until the server closes; b"" when it closed without answering."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_a_client_that_trickles_its_headers_is_dropped(server: Server) -> None:
    # Would hang until the socket's own timeout (socket.timeout) if the server waited forever.
    assert raw_exchange(server, b"GET /api/health HTTP/1.1\r\nHost: x\r\n") == b""


def test_a_body_that_stops_arriving_gets_408(server: Server) -> None:
    answer = raw_exchange(
        server,
        b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_bodies_over_the_limit_get_413_declared_or_streamed(server: Server) -> None:
    with server.client() as client:
        json_type = {"content-type": "application/json"}
        declared = client.post("/api/jobs", content=b"{" + b" " * REQUEST_LIMIT + b"}", headers=json_type)
        assert_error(declared, 413, "too_large")
        streamed = client.post(
            "/api/jobs",
            content=iter([b" " * 16384] * (REQUEST_LIMIT // 16384 + 2)),
            headers=json_type,
        )
        assert_error(streamed, 413, "too_large")
        assert client.get("/api/health").status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        "/api/jobs?offset=9223372036854775808",
        "/api/jobs?offset=99999999999999999999999",
        "/api/jobs?limit=",
        "/api/jobs?limit=1e3",
        "/api/jobs/0123/link?expires=inf",
        "/api/jobs/0123/link?expires=1e12",
        "/api/jobs/0123/link?expires=nan",
        "/api/batches/0123/link?expires=-1",
    ],
)
def test_absurd_numbers_in_the_query_get_400(server: Server, query: str) -> None:
    with server.client() as client:
        assert_error(client.get(query), 400, "invalid_request")


def test_password_guessing_is_slowed_with_429_and_retry_after(strict_server: Server) -> None:
    with strict_server.client(auth=("alice", PASSWORD)) as alice:
        assert alice.get("/api/jobs").status_code == 200
    with strict_server.client(auth=("alice", "wrong")) as guesser:
        assert [guesser.get("/api/jobs").status_code for _ in range(3)] == [401, 401, 401]
        blocked = guesser.get("/api/jobs")
    error = assert_error(blocked, 429, "too_many_attempts")
    assert 0 < int(blocked.headers["retry-after"]) <= BACKOFF_SECONDS
    assert str(blocked.headers["retry-after"]) in error["message_en"]
    # The right password does not get through during the back-off either: a guess learns nothing.
    with strict_server.client(auth=("alice", PASSWORD)) as alice:
        assert alice.get("/api/jobs").status_code == 429
    # Health checks carry no credentials and stay open.
    assert httpx.get(f"{strict_server.url}/api/health", timeout=10).status_code == 200


# --- pure parts: the validation sentences and the login back-off ------------------------------------------


@pytest.mark.parametrize("kind", sorted(set(errors._PROBLEMS) | {"some_future_type"}))
@pytest.mark.parametrize("loc", [("body", "params", "crf"), ("query", "offset"), ("body",), ()])
def test_every_validation_problem_is_a_whole_sentence_in_each_language(kind: str, loc: tuple[str, ...]) -> None:
    # No ctx at all: a template's missing value must not raise (that would be a 500).
    en, zh = errors.validation_messages([{"type": kind, "loc": loc, "msg": "Input should be x"}])
    assert en.endswith(".") and not any("\u4e00" <= ch <= "\u9fff" for ch in en)
    assert zh.endswith("。") and any("\u4e00" <= ch <= "\u9fff" for ch in zh)
    assert "Input should" not in en + zh


def test_login_back_off_doubles_up_to_its_cap_and_a_success_clears_it() -> None:
    now = [1000.0]
    throttle = LoginThrottle(max_failures=2, base_delay=1.0, max_delay=5.0, clock=lambda: now[0])
    throttle.failed("a")
    assert throttle.retry_after("a") is None  # one failure is a typo
    waits = []
    for _ in range(5):
        throttle.failed("a")
        waits.append(throttle.retry_after("a"))
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert throttle.retry_after("b") is None  # other addresses are not affected
    now[0] += 5.0
    assert throttle.retry_after("a") is None
    throttle.succeeded("a")
    throttle.failed("a")
    assert throttle.retry_after("a") is None


def test_a_kept_alive_connection_that_trickles_its_next_request_is_dropped(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        # Sent after the answer: new bytes stop uvicorn's keep-alive timer, so only a header deadline ends this.
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost:")
        assert sock.recv(65536) == b""


def test_gradios_file_route_serves_nothing_from_outside_its_folder(server: Server) -> None:
    with server.client() as client:
        for path in ("/etc/passwd", str(server.data_dir / "koubo.db")):
            assert client.get(f"/gradio_api/file={path}").status_code in (403, 404)
