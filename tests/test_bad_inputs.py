"""A matrix of bad inputs against a real `koubo serve` (with its job consumer): files, form fields,
JSON parameters, query and path parameters, headers. Each gets its status, its stable code and a
whole message in each language; a good job still runs afterwards (issue 10)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from media_fixtures import (
    make_speech,
    make_talking_video,
    make_truncated_mp4,
    write_empty_file,
    write_random_bytes,
    write_text_file,
)
from servers import Server, launch, wait_until

UPLOAD_LIMIT = 1_000_000
REQUEST_LIMIT = 64 * 1024
MAX_AUDIO_SECONDS = 5
MAX_VIDEO_WIDTH = 320
MAX_JOB_PIXELS = 5_000_000  # the good job (160x160, 1.5 s at 25 fps) needs under 1 million
JOB_TIMEOUT = 240.0


def black_clip(path: Path, size: tuple[int, int], frames: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(1))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((size[1], size[0], 3), np.uint8), format="rgb24")
        for index in range(frames):
            black.pts = index
            out.mux(stream.encode(black))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("bad-media")
    return {
        "speech": make_speech(work / "speech.wav", seconds=1.5),
        "long speech": make_speech(work / "long.wav", seconds=MAX_AUDIO_SECONDS + 1.0),
        "video": make_talking_video(work / "template.mp4", seconds=1.0, size=(160, 160)),
        "text": write_text_file(work / "notes.mp4"),
        "empty": write_empty_file(work / "empty.wav"),
        "random": write_random_bytes(work / "noise.mp4"),
        "cut": make_truncated_mp4(work / "cut.mp4", faststart=True, keep=0.5),
        "wide": black_clip(work / "wide.mp4", (480, 270), 2),
        "many pixels": black_clip(work / "pixels.mp4", (320, 180), 100),
        "big": write_random_bytes(work / "big.mp4", size=UPLOAD_LIMIT + 200_000),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "KOUBO_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT),
        "KOUBO_REQUEST_MAX_BYTES": str(REQUEST_LIMIT),
        "KOUBO_MAX_AUDIO_SECONDS": str(MAX_AUDIO_SECONDS),
        "KOUBO_MAX_VIDEO_WIDTH": str(MAX_VIDEO_WIDTH),
        "KOUBO_MAX_JOB_PIXELS": str(MAX_JOB_PIXELS),
    }
    running = launch(tmp_path_factory.mktemp("bad-server"), "--no-links", env=env)
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def upload(client: httpx.Client, path: Path, kind: str) -> httpx.Response:
    with path.open("rb") as file:
        return client.post("/api/uploads", files={"file": (path.name, file)}, data={"kind": kind})


@pytest.fixture(scope="module")
def assets(client: httpx.Client, media: dict[str, Path]) -> dict[str, str]:
    ids = {}
    for key, kind in (("speech", "audio"), ("video", "video")):
        response = upload(client, media[key], kind)
        assert response.status_code == 201, response.text
        ids[kind] = response.json()["id"]
    return ids


@dataclass(frozen=True)
class Ctx:
    client: httpx.Client
    media: dict[str, Path]
    assets: dict[str, str]

    def job(self, **fields: Any) -> httpx.Response:
        body = {"audio_id": self.assets["audio"], "video_id": self.assets["video"], **fields}
        return self.client.post("/api/jobs", json=body)

    def raw(self, request: bytes) -> httpx.Response:
        """`request` sent as is (httpx will not send a Content-Length its body does not match)."""
        with socket.create_connection((self.client.base_url.host, self.client.base_url.port), timeout=60) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return httpx.Response(int(head.split(b" ")[1]), content=body)

    def multipart(self, body: bytes, boundary: str = "b") -> httpx.Response:
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.client.post("/api/uploads", content=body, headers=headers)


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--b\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


END = b"--b--\r\n"
Case = Callable[[Ctx], httpx.Response]

# (name, request, status, code)
CASES: list[tuple[str, Case, int, str]] = [
    # --- files, judged by content ---
    ("text named .mp4", lambda c: upload(c.client, c.media["text"], "video"), 400, "not_media"),
    ("text named .mp4 as audio", lambda c: upload(c.client, c.media["text"], "audio"), 400, "not_media"),
    ("empty file", lambda c: upload(c.client, c.media["empty"], "audio"), 400, "empty"),
    ("random bytes", lambda c: upload(c.client, c.media["random"], "video"), 400, "not_media"),
    ("truncated mp4", lambda c: upload(c.client, c.media["cut"], "video"), 400, "truncated"),
    ("audio sent as video", lambda c: upload(c.client, c.media["speech"], "video"), 400, "no_video"),
    ("silent video sent as audio", lambda c: upload(c.client, c.media["video"], "audio"), 400, "no_audio"),
    ("file over the upload limit", lambda c: upload(c.client, c.media["big"], "video"), 413, "too_large"),
    ("audio over the length limit", lambda c: upload(c.client, c.media["long speech"], "audio"), 400, "too_long"),
    ("frames wider than allowed", lambda c: upload(c.client, c.media["wide"], "video"), 400, "frame_too_large"),
    ("more pixels than a job may decode", lambda c: upload(c.client, c.media["many pixels"], "video"), 400,
     "too_many_pixels"),
    # --- form fields ---
    ("no kind field", lambda c: c.client.post("/api/uploads", files={"file": ("x.wav", b"RIFF")}), 422,
     "invalid_request"),
    ("kind is neither audio nor video",
     lambda c: c.client.post("/api/uploads", files={"file": ("x.wav", b"RIFF")}, data={"kind": "image"}), 422,
     "invalid_request"),
    ("no file field", lambda c: c.client.post("/api/uploads", files={"kind": (None, b"audio")}), 422,
     "invalid_request"),
    ("two files", lambda c: c.multipart(part("file", b"a", "a.wav") + part("file", b"b", "b.wav") + END), 422,
     "invalid_request"),
    ("file in another field", lambda c: c.multipart(part("kind", b"audio") + part("other", b"a", "a.wav") + END),
     422, "invalid_request"),
    ("form field too long", lambda c: c.multipart(part("kind", b"a" * 5000) + END), 422, "invalid_request"),
    ("too many form fields", lambda c: c.multipart(b"".join(part(f"f{i}", b"x") for i in range(12)) + END), 422,
     "invalid_request"),
    ("multipart cut short", lambda c: c.multipart(b'--b\r\nContent-Disposition: form-data; name="file"; '
                                                  b'filename="x.wav"\r\n\r\nRIFF'), 422, "invalid_request"),
    ("JSON sent to the upload route",
     lambda c: c.client.post("/api/uploads", json={"kind": "audio"}), 422, "invalid_request"),
    ("multipart without a boundary",
     lambda c: c.client.post("/api/uploads", content=b"x", headers={"Content-Type": "multipart/form-data"}), 422,
     "invalid_request"),
    # --- JSON parameters ---
    ("job without video_id", lambda c: c.client.post("/api/jobs", json={"audio_id": c.assets["audio"]}), 422,
     "invalid_request"),
    ("audio_id is a number", lambda c: c.client.post("/api/jobs", json={"audio_id": 5, "video_id": "x"}), 422,
     "invalid_request"),
    ("unknown field", lambda c: c.job(colour="red"), 422, "invalid_request"),
    ("crf out of range", lambda c: c.job(params={"crf": 99}), 422, "invalid_request"),
    ("expressiveness below zero", lambda c: c.job(params={"expressiveness": -1}), 422, "invalid_request"),
    ("expressiveness not a number", lambda c: c.job(params={"expressiveness": "loud"}), 422, "invalid_request"),
    ("unknown preset", lambda c: c.job(params={"preset": "warp"}), 422, "invalid_request"),
    ("unknown device", lambda c: c.job(params={"device": "tpu"}), 422, "invalid_request"),
    ("unknown engine", lambda c: c.job(params={"engine": "nope"}), 400, "unknown_engine"),
    ("unknown audio id", lambda c: c.job(audio_id="0" * 32), 404, "not_found"),
    ("audio and video swapped",
     lambda c: c.job(audio_id=c.assets["video"], video_id=c.assets["audio"]), 400, "wrong_kind"),
    ("body is not JSON",
     lambda c: c.client.post("/api/jobs", content=b"{audio", headers={"Content-Type": "application/json"}), 422,
     "invalid_request"),
    ("body is a JSON list", lambda c: c.client.post("/api/jobs", json=[1, 2]), 422, "invalid_request"),
    ("body over the request limit",
     lambda c: c.client.post("/api/jobs", content=b" " * (REQUEST_LIMIT + 1),
                             headers={"Content-Type": "application/json"}), 413, "too_large"),
    ("batch of many audios and many videos",
     lambda c: c.client.post("/api/batches", json={"audio_ids": ["a", "b"], "video_ids": ["c", "d"]}), 422,
     "invalid_request"),
    ("batch with no video", lambda c: c.client.post("/api/batches", json={"audio_ids": ["a"], "video_ids": []}), 422,
     "invalid_request"),
    ("batch of 201 videos",
     lambda c: c.client.post("/api/batches", json={"audio_ids": ["a"], "video_ids": ["v"] * 201}), 422,
     "invalid_request"),
    # --- query and path parameters ---
    ("offset past 64 bits", lambda c: c.client.get("/api/jobs?offset=9223372036854775808"), 400, "invalid_request"),
    ("negative offset", lambda c: c.client.get("/api/jobs?offset=-1"), 400, "invalid_request"),
    ("empty limit", lambda c: c.client.get("/api/jobs?limit="), 400, "invalid_request"),
    ("limit zero", lambda c: c.client.get("/api/jobs?limit=0"), 400, "invalid_request"),
    ("limit too large", lambda c: c.client.get("/api/jobs?limit=100000"), 400, "invalid_request"),
    ("unknown status", lambda c: c.client.get("/api/jobs?status=nonsense"), 400, "invalid_request"),
    ("batch id too long", lambda c: c.client.get("/api/jobs", params={"batch_id": "x" * 100}), 400,
     "invalid_request"),
    ("link lasting forever", lambda c: c.client.get("/api/jobs/0123/link?expires=inf"), 400, "invalid_request"),
    ("link lasting 1e12 s", lambda c: c.client.get("/api/jobs/0123/link?expires=1e12"), 400, "invalid_request"),
    ("link with negative life", lambda c: c.client.get("/api/batches/0123/link?expires=-5"), 400,
     "invalid_request"),
    ("log tail of 10^30 lines", lambda c: c.client.get("/api/logs?lines=" + "9" * 30), 400, "invalid_request"),
    ("unknown job", lambda c: c.client.get("/api/jobs/" + "f" * 32), 404, "not_found"),
    ("download of an unknown job", lambda c: c.client.get("/api/jobs/nope/download"), 404, "not_found"),
    ("retry of an unknown job", lambda c: c.client.post("/api/jobs/nope/retry"), 404, "not_found"),
    # --- headers and routes ---
    ("declared upload over the limit",
     lambda c: c.raw(b"POST /api/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: %d\r\n\r\n" % (UPLOAD_LIMIT * 2)), 413, "too_large"),
    ("streamed body over the request limit",
     lambda c: c.client.post("/api/jobs", content=iter([b" " * 8192] * (REQUEST_LIMIT // 8192 + 2)),
                             headers={"Content-Type": "application/json"}), 413, "too_large"),
    ("JSON sent as XML",
     lambda c: c.client.post("/api/jobs", content=b"<job/>", headers={"Content-Type": "application/xml"}), 422,
     "invalid_request"),
    ("unknown endpoint", lambda c: c.client.get("/api/no-such-thing"), 404, "not_found"),
]  # fmt: skip


def has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize(("request_", "status", "code"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_its_status_code_and_whole_messages(
    client: httpx.Client,
    media: dict[str, Path],
    assets: dict[str, str],
    request_: Case,
    status: int,
    code: str,
) -> None:
    response = request_(Ctx(client, media, assets))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    en, zh = error["message_en"], error["message_zh"]
    assert en.strip() and zh.strip(), error
    # Whole in each language: Chinese text in zh; no Chinese, and no English sentence glued on, in en.
    assert has_cjk(zh) and not has_cjk(en), error
    assert en.rstrip().endswith((".", ")")) and zh.rstrip().endswith(("。", "）")), error
    assert "Input should" not in zh and "Field required" not in zh, error


def test_the_matrix_is_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_a_good_job_still_runs_after_the_bad_inputs(client: httpx.Client, assets: dict[str, str]) -> None:
    response = client.post("/api/jobs", json={"audio_id": assets["audio"], "video_id": assets["video"]})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]

    def finished() -> dict[str, Any] | None:
        job = client.get(f"/api/jobs/{job_id}").json()
        return job if job["status"] in ("done", "failed", "cancelled", "timed_out") else None

    job = wait_until(finished, JOB_TIMEOUT, f"job {job_id}", interval=0.5)
    assert job["status"] == "done", json.dumps(job, ensure_ascii=False)
    video = client.get(f"/api/jobs/{job_id}/download")
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
