"""Signed direct links against a real `koubo links` process over loopback, for a job really rendered
by a `python -m koubo.jobs.queue` consumer."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from koubo.config import Settings
from koubo.jobs.service import JobService, JobStatus
from koubo.links.signing import Keyring, LinkError, sign, verify

from media_fixtures import make_speech, make_talking_video
from servers import free_port, wait_until

DOWNLOAD_NAME = "主播__问候.mp4"


@dataclass
class LinkServer:
    data_dir: Path
    port: int
    job_id: str
    output: Path
    sha256: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def keyring(self) -> Keyring:
        return Keyring(self.data_dir)

    def link(self, name: str = DOWNLOAD_NAME, job_id: str | None = None, **kwargs: float) -> str:
        return sign(self.keyring(), job_id or self.job_id, name, **kwargs)

    def get(self, target: str, **headers: str) -> httpx.Response:
        return httpx.get(self.url + target, headers=headers, timeout=30.0)

    def raw(self, target: str) -> tuple[int, bytes]:
        """A request whose path goes out byte for byte as given (no client-side normalisation)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _finished_job(work: Path, data_dir: Path, env: dict[str, str]) -> str:
    speech = make_speech(work / "speech.wav", seconds=1.0)
    video = make_talking_video(work / "face.mp4", seconds=1.0, size=(128, 128))
    service = JobService(Settings(data_dir=data_dir))
    try:
        ids = []
        for source, name, kind in ((speech, "问候.wav", "audio"), (video, "主播.mp4", "video")):
            temp = service.upload_tmp_dir / f"{kind}.part"
            shutil.copyfile(source, temp)
            ids.append(service.add_asset(temp, name, kind).id)  # type: ignore[arg-type]
        job = service.submit(ids[0], ids[1])
        assert job.output_name == DOWNLOAD_NAME
        with open(work / "consumer.out", "ab") as log:
            consumer = subprocess.Popen(
                [sys.executable, "-m", "koubo.jobs.queue"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(
                lambda: service.get(job.id).status not in (JobStatus.queued, JobStatus.running),
                120,
                "the job to finish",
                interval=0.2,
            )
        finally:
            consumer.send_signal(signal.SIGTERM)
            try:
                consumer.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            # Its workers and their children too, whatever state they were left in.
            try:
                os.killpg(consumer.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            consumer.wait()
        done = service.get(job.id)
        assert done.status == JobStatus.done, done.error
        return job.id
    finally:
        service.close()


def _answers(url: str, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"koubo links exited with {process.returncode}:\n{log.read_text(errors='replace')}")
    try:
        httpx.get(f"{url}/d/x/y", timeout=2.0)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkServer]:
    work = tmp_path_factory.mktemp("links")
    data_dir = work / "data"
    port = free_port()
    base = {key: value for key, value in os.environ.items() if not key.startswith("KOUBO_")}
    env = {
        **base,
        "KOUBO_CONFIG": str(work / "no-koubo.toml"),
        "KOUBO_DATA_DIR": str(data_dir),
        "KOUBO_LINKS_PORT": str(port),
    }
    job_id = _finished_job(work, data_dir, env)
    output = data_dir / "outputs" / job_id / DOWNLOAD_NAME
    log = work / "links.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "koubo.cli", "links"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url, process, log), 60, "koubo links to answer", interval=0.2)
        yield LinkServer(data_dir, port, job_id, output, hashlib.sha256(output.read_bytes()).hexdigest(), env)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _with(link: str, **changes: str) -> str:
    """`link` with some query fields replaced."""
    path, _, query = link.partition("?")
    fields = {key: values[0] for key, values in parse_qs(query).items()}
    fields.update(changes)
    return path + "?" + "&".join(f"{key}={quote(value, safe='')}" for key, value in fields.items())


# --- whole files, headers ---------------------------------------------------------------------------------


def test_full_get_sends_the_file_with_download_headers(server):
    response = server.get(server.link())
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == server.sha256
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] and response.headers["last-modified"]
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert f"filename*=UTF-8''{quote(DOWNLOAD_NAME, safe='')}" in disposition
    cache = response.headers["cache-control"]
    max_age = int(cache.split("max-age=")[1].split(",")[0])
    assert cache.startswith("public,") and cache.endswith("immutable")
    assert 7 * 24 * 3600 - 60 <= max_age <= 7 * 24 * 3600


def test_inline_and_never_expiring_links(server):
    response = server.get(server.link(lifetime=0) + "&inline=1")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("inline;")
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "exp=0&" in server.link(lifetime=0)


def test_head_has_the_length_and_no_body(server):
    response = httpx.head(server.url + server.link(), timeout=30.0)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == server.output.stat().st_size
    assert response.content == b""


# --- ranges and conditional requests -----------------------------------------------------------------------


def test_ranges(server):
    data = server.output.read_bytes()
    size = len(data)
    link = server.link()
    for spec, expected, first, last in (
        ("bytes=0-99", data[:100], 0, 99),
        ("bytes=100-", data[100:], 100, size - 1),
        ("bytes=-100", data[-100:], size - 100, size - 1),
    ):
        response = server.get(link, Range=spec)
        assert response.status_code == 206, spec
        assert response.content == expected, spec
        assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
    assert server.get(link, Range=f"bytes={size}-").status_code == 416


def test_resume_reassembles_the_file(server):
    link = server.link()
    first = server.get(link, Range="bytes=0-999")
    assert first.status_code == 206
    rest = server.get(link, Range="bytes=1000-", **{"If-Range": first.headers["etag"]})
    assert rest.status_code == 206
    assert hashlib.sha256(first.content + rest.content).hexdigest() == server.sha256


def test_conditional_requests(server):
    link = server.link()
    etag = server.get(link).headers["etag"]
    not_modified = server.get(link, **{"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    stale = server.get(link, Range="bytes=0-99", **{"If-Range": '"not-the-etag"'})
    assert stale.status_code == 200
    assert hashlib.sha256(stale.content).hexdigest() == server.sha256


# --- refusals ------------------------------------------------------------------------------------------------


def _error_code(response: httpx.Response) -> str:
    body = response.json()["error"]
    assert body["message_en"] and body["message_zh"]
    return body["code"]


def test_changed_links_are_refused(server):
    link = server.link()
    query = parse_qs(link.partition("?")[2])
    other_job = "0" * len(server.job_id)
    cases = {
        "sig": _with(link, sig=query["sig"][0][:-2] + ("AA" if not query["sig"][0].endswith("AA") else "BB")),
        "job": link.replace(server.job_id, other_job, 1),
        "name": link.replace(quote(DOWNLOAD_NAME, safe=""), quote("主播__问候2.mp4", safe=""), 1),
        "exp": _with(link, exp=str(int(query["exp"][0]) + 1)),
        "exp=0": _with(link, exp="0"),
        "kid": _with(link, kid="nope"),
    }
    for what, target in cases.items():
        for method in ("GET", "HEAD"):
            response = httpx.request(method, server.url + target, headers={"Range": "bytes=0-99"}, timeout=30.0)
            assert response.status_code == 403, (what, method)
            if method == "GET":
                assert _error_code(response) == "link_tampered", what


def test_expired_link_is_gone(server):
    link = server.link(lifetime=10, now=time.time() - 100)
    response = server.get(link, Range="bytes=0-99")
    assert response.status_code == 410
    assert _error_code(response) == "link_expired"


def test_traversal_attempts_never_return_other_files(server):
    database = (server.data_dir / "koubo.db").read_bytes()[:100]
    passwd = Path("/etc/passwd").read_bytes()[:32]
    keyring = server.keyring()
    job = server.job_id
    names = ["../../koubo.db", "..\\..\\koubo.db", "..", "a\x00.mp4", "/etc/passwd", "x/../../koubo.db"]
    # Signed with the real key: even a correctly signed link may not name such a file.
    targets = [sign(keyring, job, name) for name in names]
    targets += [sign(keyring, name, DOWNLOAD_NAME) for name in ("..", "../outputs")]
    query = targets[0].partition("?")[2]
    targets += [
        f"/d/{job}/..%2F..%2Fkoubo.db?{query}",
        f"/d/{job}/%2e%2e%2f%2e%2e%2fkoubo.db?{query}",
        f"/d/{job}/%2E%2E?{query}",
        f"/d/{job}/..%5C..%5Ckoubo.db?{query}",
        f"/d/{job}/koubo.db%00.mp4?{query}",
        f"/d/{job}//etc/passwd?{query}",
        f"/d/{job}/%2Fetc%2Fpasswd?{query}",
        f"/d/{job}/../../koubo.db?{query}",
        f"/d/%2e%2e/koubo.db?{query}",
    ]
    for target in targets:
        status, body = server.raw(target)
        assert status in (400, 403, 404), (target, status)
        assert database not in body and passwd not in body, target


def test_symlink_out_of_outputs_is_refused(server):
    secret = server.data_dir / "koubo.db"
    kept = server.output.with_name("kept.bin")
    os.replace(server.output, kept)
    try:
        server.output.symlink_to(secret)
        response = server.get(server.link())
        assert response.status_code == 403
        assert _error_code(response) == "link_tampered"
        assert secret.read_bytes()[:100] not in response.content
    finally:
        server.output.unlink(missing_ok=True)
        os.replace(kept, server.output)
    assert server.get(server.link()).status_code == 200


# --- keys -----------------------------------------------------------------------------------------------------


def test_keyring_file_is_private(server):
    path = server.data_dir / "keys" / "links.json"
    assert path.stat().st_mode & 0o777 == 0o600


def test_key_rotation_keeps_old_links(server):
    keyring = server.keyring()
    old_link = server.link()
    old_kid = parse_qs(old_link.partition("?")[2])["kid"][0]
    new_kid = keyring.add_key()
    assert new_kid != old_kid and keyring.current()[0] == new_kid
    assert old_kid in keyring.by_id()
    new_link = server.link()
    assert parse_qs(new_link.partition("?")[2])["kid"][0] == new_kid
    for link in (old_link, new_link):
        response = server.get(link)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == server.sha256


def test_verify_checks_in_process(tmp_path):
    keyring = Keyring(tmp_path)
    link = sign(keyring, "job1", "名.mp4", lifetime=60, now=1000.0)
    fields = {key: values[0] for key, values in parse_qs(urlsplit(link).query).items()}
    assert verify(keyring, "job1", "名.mp4", fields["exp"], fields["kid"], fields["sig"], now=1000.0) == 1060
    with pytest.raises(LinkError) as expired_error:
        verify(keyring, "job1", "名.mp4", fields["exp"], fields["kid"], fields["sig"], now=1060.0)
    assert expired_error.value.code == "link_expired"
    for exp, sig in (
        ("01060", fields["sig"]),
        ("1060", fields["sig"] + "="),
        ("1060", "名"),
        ("x", fields["sig"]),
        ("1" * 5000, fields["sig"]),
    ):
        with pytest.raises(LinkError) as tampered_error:
            verify(keyring, "job1", "名.mp4", exp, fields["kid"], sig, now=1000.0)
        assert tampered_error.value.code == "link_tampered"
    # The fields cannot be shifted into one another.
    shifted = sign(keyring, "a", "b\nc.mp4", lifetime=0)
    fields = {key: values[0] for key, values in parse_qs(urlsplit(shifted).query).items()}
    with pytest.raises(LinkError):
        verify(keyring, "a\nb", "c.mp4", "0", fields["kid"], fields["sig"])


# --- the command line ----------------------------------------------------------------------------------------


def test_koubo_link_prints_a_working_url(server):
    result = subprocess.run(
        [sys.executable, "-m", "koubo.cli", "link", server.job_id, "--expires", "3600"],
        check=False,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(f"{server.url}/d/{server.job_id}/")
    response = httpx.get(url, timeout=30.0)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == server.sha256
    assert 3500 <= int(response.headers["cache-control"].split("max-age=")[1].split(",")[0]) <= 3600


def test_koubo_link_refuses_an_unknown_job(server):
    result = subprocess.run(
        [sys.executable, "-m", "koubo.cli", "link", "no-such-job"],
        check=False,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
