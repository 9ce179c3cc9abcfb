"""Signed direct links against a real `koubo links` process over loopback."""

from __future__ import annotations

import hashlib
import html
import http.client
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import bcrypt
import httpx
import pytest

from koubo.config import Settings
from koubo.links.signing import Keyring, LinkError, sign, signed_batch_link, signed_link, verify
from koubo.links.zipstream import batch_zip_name

import nginx_server
from job_fixtures import finished_job
from servers import free_port, links_process, wait_until

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkServer]:
    work = tmp_path_factory.mktemp("links")
    data_dir = work / "data"
    job_id = finished_job(work, data_dir)
    output = data_dir / "outputs" / job_id / DOWNLOAD_NAME
    with links_process(work, data_dir) as links:
        digest = hashlib.sha256(output.read_bytes()).hexdigest()
        yield LinkServer(data_dir, links.port, job_id, output, digest, links.env)


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
    for exp, sig, code in (
        ("1060", fields["sig"] + "=", "link_tampered"),
        ("1060", "名", "link_tampered"),
        # An expiry no signed link spells that way: malformed (400), not a wrong signature.
        ("01060", fields["sig"], "link_invalid"),
        ("x", fields["sig"], "link_invalid"),
        ("1" * 5000, fields["sig"], "link_invalid"),
        ("1e12", fields["sig"], "link_invalid"),
        ("inf", fields["sig"], "link_invalid"),
        ("9223372036854775808", fields["sig"], "link_invalid"),
    ):
        with pytest.raises(LinkError) as refused:
            verify(keyring, "job1", "名.mp4", exp, fields["kid"], sig, now=1000.0)
        assert refused.value.code == code, exp
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


# --- multipart ranges, batch ZIP, listing, limits, nginx ------------------------------------------------------


def test_multiple_ranges_come_back_as_multipart_byteranges(server):
    data = server.output.read_bytes()
    response = server.get(server.link(), Range="bytes=0-9,100-199,-5")
    assert response.status_code == 206
    kind, _, boundary = response.headers["content-type"].partition("; boundary=")
    assert kind == "multipart/byteranges"
    assert int(response.headers["content-length"]) == len(response.content)
    parts = response.content.split(f"--{boundary}".encode())
    assert parts[0] == b"\r\n" and parts[-1] == b"--\r\n"
    bodies = [part.split(b"\r\n\r\n", 1) for part in parts[1:-1]]
    size = len(data)
    expected = [(0, 9), (100, 199), (size - 5, size - 1)]
    for (head, body), (first, last) in zip(bodies, expected, strict=True):
        assert f"Content-Range: bytes {first}-{last}/{size}".encode() in head
        assert body == data[first : last + 1] + b"\r\n"


def test_head_of_a_range(server):
    response = httpx.head(server.url + server.link(), headers={"Range": "bytes=10-19"}, timeout=30.0)
    assert response.status_code == 206
    assert response.headers["content-length"] == "10" and response.content == b""


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str, Settings]]:
    work = tmp_path_factory.mktemp("batch")
    data_dir = work / "data"
    batch_id = finished_job(work, data_dir, batch=3)
    with links_process(work, data_dir) as links:
        yield links.url, data_dir, batch_id, Settings(data_dir=data_dir, links_port=links.port)


def test_batch_zip_link_streams_every_finished_video(batch_server):
    url, data_dir, batch_id, settings = batch_server
    link = signed_batch_link(settings, batch_id, batch_zip_name(batch_id))
    response = httpx.get(link.url, timeout=60.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert int(response.headers["content-length"]) == len(response.content)
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    outputs = sorted(data_dir.glob("outputs/*/*.mp4"))
    assert len(archive.namelist()) == len(outputs) == 3
    assert sorted(archive.read(name) for name in archive.namelist()) == sorted(p.read_bytes() for p in outputs)
    head = httpx.head(link.url, timeout=30.0)
    assert head.headers["content-length"] == response.headers["content-length"] and head.content == b""
    # A batch link is not a job link: its signature cannot be moved to a job, nor the other way.
    job_path = urlsplit(link.url).path.replace("/z/", "/d/", 1)
    assert httpx.get(url + job_path + "?" + urlsplit(link.url).query, timeout=30.0).status_code in (400, 403)
    tampered = link.url.replace(batch_id, batch_id[::-1], 1)
    assert httpx.get(tampered, timeout=30.0).status_code == 403


def test_listing_is_off_unless_asked_for(server):
    assert server.get("/downloads/").status_code == 404


def test_listing_needs_a_password(tmp_path, batch_server):
    _, data_dir, _, _ = batch_server
    work = tmp_path
    bad = subprocess.run(
        [sys.executable, "-m", "koubo.cli", "links"],
        env={
            **os.environ,
            "KOUBO_CONFIG": str(work / "none.toml"),
            "KOUBO_DATA_DIR": str(data_dir),
            "KOUBO_LINKS_PORT": str(free_port()),
            "KOUBO_LINKS_LISTING": "true",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0 and "htpasswd_file" in bad.stderr
    htpasswd = work / "htpasswd"
    htpasswd.write_text("ops:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode() + "\n")
    with links_process(work, data_dir, links_listing="true", htpasswd_file=str(htpasswd)) as links:
        url = links.url
        refused = httpx.get(url + "/downloads/", timeout=30.0)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(url + "/downloads/", auth=("ops", "wrong"), timeout=30.0).status_code == 401
        page = httpx.get(url + "/downloads/", auth=("ops", "s3cret"), timeout=30.0)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        links = re.findall(r'href="([^"]+/d/[^"]+)"', page.text)
        assert len(links) == 3 and "问候" in page.text
        first = httpx.get(html.unescape(links[0]), timeout=30.0)
        assert first.status_code == 200 and first.content[4:8] == b"ftyp"


def _big_job(work: Path) -> tuple[Path, str]:
    data_dir = work / "data"
    job_id = finished_job(work, data_dir)
    output = next(data_dir.glob(f"outputs/{job_id}/*.mp4"))
    # Only the link server reads it: any bytes do, as long as there are enough to take a while.
    output.write_bytes(os.urandom(600_000))
    return data_dir, job_id


def test_rate_limit_and_per_address_cap(tmp_path):
    data_dir, job_id = _big_job(tmp_path)
    with links_process(tmp_path, data_dir, links_rate_limit="200000", links_max_per_ip="1") as links:
        url = links.url
        settings = Settings(data_dir=data_dir)
        name = next(data_dir.glob(f"outputs/{job_id}/*.mp4")).name
        link = signed_link(settings, job_id, name).url.replace(settings.links_base, url)
        results: dict[str, object] = {}
        # The server takes the address's one slot before it sends the headers, and keeps it to the last byte.
        holding_slot = threading.Event()

        def slow_download() -> None:
            started = time.monotonic()
            with httpx.stream("GET", link, timeout=60.0) as response:
                holding_slot.set()
                results["size"] = len(response.read())
            results["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=slow_download)
        thread.start()
        wait_until(holding_slot.is_set, 60, "the first download's headers")
        second = httpx.get(link, timeout=30.0)
        assert second.status_code == 429 and second.headers["retry-after"]
        assert second.json()["error"]["code"] == "too_many_downloads"
        thread.join(timeout=60)
        assert results["size"] == 600_000
        assert results["seconds"] >= 2.5  # 600 kB at 200 kB/s: three seconds, less the first slices
        # The slot is free again once the first download has ended on the server's side too.
        wait_until(
            lambda: httpx.get(link, headers={"Range": "bytes=0-99"}, timeout=30.0).status_code == 206, 10, "a slot"
        )


@pytest.mark.skipif(not nginx_server.available(), reason="Debian's nginx is not installed (apt-get install nginx)")
def test_behind_nginx_with_x_accel_redirect(tmp_path):
    """docs/nginx-links.conf as written, on a real nginx: koubo checks the link, nginx sends the bytes."""
    data_dir, job_id = _big_job(tmp_path)
    output = next(data_dir.glob(f"outputs/{job_id}/*.mp4"))
    accel = {"links_accel_redirect": "/_koubo_outputs", "links_trusted_proxies": '["127.0.0.1"]'}
    with links_process(tmp_path, data_dir, **accel) as links:
        links_url = links.url
        port = free_port()
        conf = (Path(__file__).parents[1] / "docs" / "nginx-links.conf").read_text(encoding="utf-8")
        conf = conf.replace("127.0.0.1:7861", links_url.removeprefix("http://"))
        conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
        conf = conf.replace("/srv/koubo/data/outputs/", f"{data_dir.resolve()}/outputs/")
        front = nginx_server.start_nginx(tmp_path / "nginx", conf, port)
        try:
            settings = Settings(data_dir=data_dir)
            path = urlsplit(signed_link(settings, job_id, output.name).url)
            link = f"{front.url}{path.path}?{path.query}"
            whole = httpx.get(link, timeout=30.0)
            assert whole.status_code == 200, (whole.text, front.log())
            assert whole.content == output.read_bytes()
            assert whole.headers["content-disposition"].startswith("attachment;")
            assert "x-accel-redirect" not in whole.headers
            part = httpx.get(link, headers={"Range": "bytes=100-199"}, timeout=30.0)
            assert part.status_code == 206 and part.content == output.read_bytes()[100:200]
            resumed = httpx.get(link, headers={"Range": "bytes=100-", "If-Range": whole.headers["etag"]}, timeout=30.0)
            assert resumed.status_code == 206
            assert httpx.get(link, headers={"If-None-Match": whole.headers["etag"]}, timeout=30.0).status_code == 304
            tampered = httpx.get(link.replace("sig=", "sig=A"), timeout=30.0)
            assert tampered.status_code == 403 and tampered.json()["error"]["code"] == "link_tampered"
            # The internal location is unreachable from outside.
            direct = httpx.get(f"{front.url}/_koubo_outputs/{job_id}/{quote(output.name)}", timeout=30.0)
            assert direct.status_code == 404
        finally:
            front.stop()


def test_large_file_hang_ups_free_their_slot_and_big_multipart_parts_stay_in_order(tmp_path):
    data_dir, job_id = _big_job(tmp_path)
    output = next(data_dir.glob(f"outputs/{job_id}/*.mp4"))
    output.write_bytes(os.urandom(64 * 2**20))  # more than the socket buffers hold
    with links_process(tmp_path, data_dir, links_max_per_ip="1") as links:
        link = urlsplit(signed_link(Settings(data_dir=data_dir), job_id, output.name).url)

        def hang_up_mid_file() -> bool:
            with socket.create_connection(("127.0.0.1", links.port), timeout=30) as sock:
                sock.sendall(f"GET {link.path}?{link.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                status = sock.recv(65536).partition(b"\r\n")[0]
            assert status in (b"HTTP/1.1 200 OK", b"HTTP/1.1 429 Too Many Requests"), status
            return status.startswith(b"HTTP/1.1 200")

        # Each download starts once the server has noticed the hang-up before it (429 until then;
        # on a loaded machine that takes a moment): three hang-ups, each of which frees the slot.
        for _ in range(3):
            wait_until(hang_up_mid_file, 30, "the slot of the last hang-up to be free")
        target = links.url + f"{link.path}?{link.query}"

        def whole_file() -> bytes | None:
            response = httpx.get(target, timeout=60.0)
            return response.content if response.status_code == 200 else None

        # 429 until the server has noticed every hang-up, then the whole file again.
        data = output.read_bytes()
        assert wait_until(whole_file, 30, "the slot to be free again") == data

        # Parts far larger than the socket buffers: each delimiter still comes before its bytes.
        spans = [(0, 20 * 2**20 - 1), (30 * 2**20, 50 * 2**20 - 1), (60 * 2**20, len(data) - 1)]
        ranges = ",".join(f"{first}-{last}" for first, last in spans)
        response = httpx.get(target, headers={"Range": f"bytes={ranges}"}, timeout=60.0)
        boundary = response.headers["content-type"].partition("; boundary=")[2]
        parts = response.content.split(f"\r\n--{boundary}".encode())[1:-1]
        assert [part.split(b"\r\n\r\n", 1)[1] for part in parts] == [data[a : b + 1] for a, b in spans]


def test_koubo_link_keys_rotates_and_retires(tmp_path):
    env = {**os.environ, "KOUBO_CONFIG": str(tmp_path / "none.toml"), "KOUBO_DATA_DIR": str(tmp_path)}

    def link_keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "koubo.cli", "link-keys", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    keyring = Keyring(tmp_path)
    old = parse_qs(urlsplit(sign(keyring, "job", "a.mp4")).query)
    assert link_keys("--rotate").returncode == 0
    new = parse_qs(urlsplit(sign(keyring, "job", "a.mp4")).query)
    assert old["kid"] != new["kid"]
    for fields in (old, new):
        verify(keyring, "job", "a.mp4", fields["exp"][0], fields["kid"][0], fields["sig"][0])
    listed = link_keys()
    assert listed.stdout.count("\n") == 2 and "(signs new links)" in listed.stdout.splitlines()[-1]
    assert link_keys("--retire", old["kid"][0]).returncode == 0
    with pytest.raises(LinkError):
        verify(keyring, "job", "a.mp4", old["exp"][0], old["kid"][0], old["sig"][0])
    verify(keyring, "job", "a.mp4", new["exp"][0], new["kid"][0], new["sig"][0])
    last = link_keys("--retire", new["kid"][0])
    assert last.returncode == 2 and "rotate first" in last.stderr
