"""The link server under clients that abort, half-close and hammer it: every byte still goes to the
one who asked for it, and nothing is left behind (issue 10)."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import select
import socket
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import bcrypt
import httpx
import pytest
from fastapi.testclient import TestClient

from koubo.config import Settings
from koubo.links.signing import MAX_LIFETIME, Keyring, LinkError, signed_link, verify
from koubo.logs import OneLineRateLimit
from koubo.web.app import create_app

from job_fixtures import finished_job
from servers import links_process, wait_until

BIG = 16 * 2**20  # far more than loopback's socket buffers hold: a transfer waits on its client
SMALL = 300_000


@dataclass
class Target:
    path: str  # path and query of a signed link
    data: bytes


@dataclass
class Tally:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self) -> None:
        with self.lock:
            self.checked += 1

    def bad(self, what: str) -> None:
        with self.lock:
            self.problems.append(what)


def _job_with_output(work: Path, data_dir: Path, data: bytes) -> Target:
    work.mkdir(parents=True, exist_ok=True)
    job_id = finished_job(work, data_dir)
    output = next(data_dir.glob(f"outputs/{job_id}/*.mp4"))
    # Only the link server reads it: random bytes make any misplaced byte show.
    output.write_bytes(data)
    link = urlsplit(signed_link(Settings(data_dir=data_dir), job_id, output.name).url)
    return Target(f"{link.path}?{link.query}", data)


def _request(target: Target, extra: str = "") -> bytes:
    return f"GET {target.path} HTTP/1.1\r\nHost: koubo\r\nConnection: close\r\n{extra}\r\n".encode()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _check_range(
    port: int, target: Target, first: int, last: int, tally: Tally, meanwhile: Callable[[], None] = lambda: None
) -> None:
    """One Range request on its own connection; every byte that came back must be the one asked for.
    `meanwhile` runs between sending the request and reading the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(_request(target, f"Range: bytes={first}-{last}\r\n"))
        meanwhile()
        answer = _read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    expected = target.data[first : last + 1]
    if not head.startswith(b"HTTP/1.1 206 "):
        tally.bad(f"bytes={first}-{last}: the answer starts with {answer[:40]!r}")
    elif f"content-range: bytes {first}-{last}/{len(target.data)}".encode() not in head.lower():
        tally.bad(f"bytes={first}-{last}: wrong Content-Range in {head!r}")
    elif hashlib.sha256(body).digest() != hashlib.sha256(expected).digest():
        tally.bad(f"bytes={first}-{last}: {len(body)} bytes that are not the file's {len(expected)}")
    else:
        tally.ok()


def _abort_mid_transfer(port: int, target: Target, how: str, tally: Tally | None = None) -> None:
    """Start a download, take a little of it, then go as browsers do: a half-close, a reset or a close.

    After a half-close the server's loop closes its side of the connection at once, while the
    transfer still has megabytes to send; the next connection accepted gets the same descriptor
    number. So a Range request goes out right then (checked into `tally`), and only while it waits
    for its answer does this client read on, which is when the transfer sends again.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        sock.sendall(_request(target))
        sock.recv(1 << 16)  # the transfer is under way
        if how == "half-close":
            sock.shutdown(socket.SHUT_WR)
            _check_range(port, target, 1000, 1099, tally or Tally(), meanwhile=lambda: _read_some(sock, 1 << 20))
        elif how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def _read_some(sock: socket.socket, size: int) -> None:
    while size > 0 and (chunk := sock.recv(min(size, 1 << 16))):
        size -= len(chunk)


def _storm(port: int, big: Target, small: Target, rounds: int, tally: Tally) -> None:
    """Aborting clients and Range clients at once, for a fixed number of requests each."""

    def aborter(seed: int) -> None:
        chooser = random.Random(seed)
        for _ in range(rounds):
            _abort_mid_transfer(port, big, chooser.choice(["half-close", "half-close", "reset", "close"]), tally)

    def ranger(seed: int) -> None:
        chooser = random.Random(seed)
        for _ in range(rounds * 3):
            target = chooser.choice([big, small])
            first = chooser.randrange(len(target.data))
            last = min(len(target.data) - 1, first + chooser.choice([99, 4095, 200_000]))
            _check_range(port, target, first, last, tally)

    workers: list[Callable[[int], None]] = [aborter] * 4 + [ranger] * 6
    threads = [threading.Thread(target=work, args=(seed,)) for seed, work in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "the storm's clients did not finish"


def _connections_and_outputs(pid: int, outputs: Path) -> tuple[int, int]:
    """How many TCP connections (listening sockets aside), and how many descriptors on files under
    `outputs`, process `pid` holds."""
    connected = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # 0A: LISTEN
                connected.add(f"socket:[{fields[9]}]")
    connections = files = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        connections += target in connected
        files += target.startswith(str(outputs.resolve()))
    return connections, files


def _let_go(pid: int, outputs: Path) -> None:
    """Wait for the server to hold no connection and no output file (every client here has gone)."""
    wait_until(lambda: _connections_and_outputs(pid, outputs) == (0, 0), 120, "the server to let go of everything")


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def test_aborted_downloads_never_send_bytes_to_another_client_or_the_database(tmp_path):
    data_dir = tmp_path / "data"
    chooser = random.Random(10)
    big = _job_with_output(tmp_path / "a", data_dir, chooser.randbytes(BIG))
    small = _job_with_output(tmp_path / "b", data_dir, chooser.randbytes(SMALL))
    outputs = data_dir / "outputs"
    with links_process(tmp_path, data_dir) as links:
        port, process = links.port, links.process
        _let_go(process.pid, outputs)
        threads_at_start = _threads(process.pid)
        tally = Tally()
        _storm(port, big, small, rounds=25, tally=tally)

        assert not tally.problems, f"{len(tally.problems)} of {tally.checked + len(tally.problems)}: {tally.problems[:5]}"
        assert tally.checked >= 6 * 25 * 3
        # Every connection was closed by its client: the server lets go of them and of the files,
        # and the transfers' threads end with them. What may stay is the loop's pool for blocking
        # calls, at most min(32, cpus + 4) threads.
        _let_go(process.pid, outputs)
        pool = min(32, (os.cpu_count() or 1) + 4)
        wait_until(lambda: _threads(process.pid) <= threads_at_start + pool, 120, "the transfer threads to end")
        whole = httpx.get(f"http://127.0.0.1:{port}{big.path}", timeout=60.0)
        assert whole.status_code == 200 and whole.content == big.data

    with sqlite3.connect(data_dir / "koubo.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_an_aborted_download_frees_its_descriptors(tmp_path):
    """One abort at a time: the duplicates a transfer holds are closed whichever way the client went."""
    data_dir = tmp_path / "data"
    big = _job_with_output(tmp_path, data_dir, os.urandom(BIG))
    outputs = data_dir / "outputs"
    with links_process(tmp_path, data_dir) as links:
        port, process = links.port, links.process
        for how in ("half-close", "reset", "close"):
            tally = Tally()
            _abort_mid_transfer(port, big, how, tally)
            _let_go(process.pid, outputs)
            assert not tally.problems, (how, tally.problems)


# --- one server for the hostile requests below ---------------------------------------------------------------

HEADER_TIMEOUT = 2.0


@dataclass
class Hostile:
    port: int
    data_dir: Path
    log: Path
    dotted: tuple[str, str]  # (job id, output name) of a job whose audio was take1..final.wav
    plain: tuple[str, str]  # of an ordinary job

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def link(self, job: tuple[str, str] | None = None) -> str:
        settings = Settings(data_dir=self.data_dir)
        return signed_link(settings, *(job or self.plain)).url.replace(settings.links_base, self.url)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    work = tmp_path_factory.mktemp("hostile")
    data_dir = work / "data"
    # An audio file named as people name takes: the output's name must still make a working link.
    jobs = [
        finished_job(work, data_dir, audio_name=audio, speech_seconds=seconds)
        for audio, seconds in (("take1..final.wav", 1.0), ("问候.wav", 1.2))
    ]
    dotted, plain = ((job, next(data_dir.glob(f"outputs/{job}/*.mp4")).name) for job in jobs)
    htpasswd = work / "htpasswd"
    htpasswd.write_text("ops:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode() + "\n")
    settings = {
        "links_listing": "true",
        "htpasswd_file": str(htpasswd),
        "http_header_timeout": str(HEADER_TIMEOUT),
    }
    with links_process(work, data_dir, **settings) as links:
        yield Hostile(links.port, data_dir, data_dir / "logs" / "koubo.log", dotted, plain)


def _json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:200])
    body = response.json()["error"]
    assert body["code"] == code and body["message_en"] and body["message_zh"]


def test_an_output_named_after_a_take_with_dots_gets_a_working_link(hostile):
    assert ".." not in hostile.dotted[1] and "take1.final" in hostile.dotted[1]
    response = httpx.get(hostile.link(hostile.dotted), timeout=30.0)
    assert response.status_code == 200 and response.content[4:8] == b"ftyp"


@pytest.mark.parametrize("exp", ["1e12", "inf", "9223372036854775808", "-1", "1" * 5000, "０"])
def test_absurd_expiry_in_a_link_is_malformed(hostile, exp):
    link = re.sub(r"exp=\d+", f"exp={exp}", hostile.link())
    _json_error(httpx.get(link, timeout=30.0), 400, "link_invalid")


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        ("bytes=0-" + "9" * 5000, 206),  # a last position past the end is the end (RFC 9110 14.1.2)
        ("bytes=" + "9" * 5000 + "-", 416),  # a first position past the end is unsatisfiable
        ("bytes=-" + "9" * 5000, 206),  # a suffix longer than the file is the whole file
        ("bytes=0-" + "0" * 4000 + "9", 206),
        ("bytes=²-9", 200),  # not ASCII digits: the header is ignored
        ("bytes=0-99" + ",0-1" * 2000, 200),  # too many parts: ignored
    ],
)
def test_absurd_ranges_answer_by_the_rfc(hostile, spec, status):
    response = httpx.get(hostile.link(), headers={"Range": spec.encode()}, timeout=30.0)
    assert response.status_code == status
    if status == 206:
        assert response.headers["content-range"].startswith("bytes ")


def test_bad_page_numbers_are_400_and_one_line_each_in_the_log(hostile):
    auth = ("ops", "s3cret")
    for page in ["9" * 30, "9" * 5000, "0", "-1", "1e3", "２"]:
        _json_error(httpx.get(f"{hostile.url}/downloads/", params={"page": page}, auth=auth, timeout=30.0), 400, "invalid_parameter")
    last = httpx.get(f"{hostile.url}/downloads/", params={"page": "999999999"}, auth=auth, timeout=30.0)
    assert last.status_code == 200 and "page 999999999/" in last.text
    # Nothing above was an error of the server's: its log has no traceback.
    assert "Traceback" not in hostile.log.read_text(encoding="utf-8", errors="replace")


def test_password_guessing_from_one_address_backs_off(hostile):
    url = f"{hostile.url}/downloads/"
    statuses = [httpx.get(url, auth=("ops", f"guess{n}"), timeout=30.0).status_code for n in range(5)]
    assert statuses == [401] * 5
    # From the sixth wrong guess on the address waits, twice as long each time: however slow this
    # machine, a guess soon lands inside a wait and is refused unchecked, saying how long to wait.
    for n in range(5, 25):
        locked = httpx.get(url, auth=("ops", f"guess{n}"), timeout=30.0)
        if locked.status_code == 429:
            break
        assert locked.status_code == 401
    _json_error(locked, 429, "too_many_attempts")
    assert int(locked.headers["retry-after"]) >= 1
    # Once the wait is over the right password gets in (and the count starts again).
    wait_until(lambda: httpx.get(url, auth=("ops", "s3cret"), timeout=30.0).status_code == 200, 600, "the wait to end")


def test_a_slow_loris_is_dropped_after_the_header_timeout(hostile):
    """A client that sends its request head a byte at a time is dropped after http_header_timeout
    (here HEADER_TIMEOUT s), long before it has sent everything it meant to (40 s)."""
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=60) as sock:
        sock.sendall(b"GET /downloads/ HTTP/1.1\r\nHost: koubo\r\n")
        dropped = False
        for _ in range(80):
            try:
                sock.sendall(b"X")
                # The client's pace, not a synchronisation: one byte each half second.
                readable, _, _ = select.select([sock], [], [], 0.5)
                if readable and sock.recv(1024) == b"":
                    dropped = True
                    break
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
        assert dropped, "the server still held a connection that had dribbled for 40 s"


def test_an_unexpected_error_is_a_json_500_and_one_log_line(hostile):
    """A database the server cannot read (here: the job table gone) answers 500 in the usual shape;
    the log gets one line for it, without a traceback or the link's signature."""
    link = hostile.link()
    database = sqlite3.connect(hostile.data_dir / "koubo.db")
    try:
        database.execute("ALTER TABLE jobs RENAME TO jobs_away")
        database.commit()
        response = httpx.get(link, timeout=30.0)
    finally:
        database.execute("ALTER TABLE jobs_away RENAME TO jobs")
        database.commit()
        database.close()
    _json_error(response, 500, "internal_error")
    log = hostile.log.read_text(encoding="utf-8", errors="replace")
    lines = [line for line in log.splitlines() if f"/d/{hostile.plain[0]}/" in line]
    assert len(lines) == 1 and "failed" in lines[0] and "sig=" not in lines[0]
    assert "Traceback" not in log
    assert httpx.get(link, timeout=30.0).status_code == 200


def test_link_lifetimes_beyond_a_century_or_not_finite_are_refused(tmp_path):
    """`GET /api/jobs/{id}/link?expires=` in process: a lifetime no expiry can hold is refused in
    the API's error shape (it was a 500, or a link that could never work)."""
    data_dir = tmp_path / "data"
    job_id = finished_job(tmp_path, data_dir)
    with TestClient(create_app(Settings(data_dir=data_dir))) as client:
        for expires in ["1e12", "inf", "-inf", "nan", "9223372036854775808", "-1"]:
            response = client.get(f"/api/jobs/{job_id}/link", params={"expires": expires})
            # A bad query parameter is the request's fault: 400, in the API's error shape.
            assert response.status_code == 400, (expires, response.status_code, response.text[:200])
            body = response.json()["error"]
            assert body["code"] and body["message_en"] and body["message_zh"]
        longest = client.get(f"/api/jobs/{job_id}/link", params={"expires": str(MAX_LIFETIME)})
        assert longest.status_code == 200
        assert verify_url(data_dir, longest.json()["url"])
    with pytest.raises(LinkError) as refused:
        signed_link(Settings(data_dir=data_dir, link_lifetime=MAX_LIFETIME * 2), job_id, "a.mp4")
    assert refused.value.code == "link_lifetime_invalid"


def verify_url(data_dir: Path, url: str) -> bool:
    """Whether the link server would accept `url`'s signature and expiry."""
    parts = urlsplit(url)
    _, _, job_id, name = parts.path.split("/")
    fields = dict(pair.split("=", 1) for pair in parts.query.split("&"))
    verify(Keyring(data_dir), unquote(job_id), unquote(name), fields["exp"], fields["kid"], unquote(fields["sig"]))
    return True


def test_log_lines_from_strangers_are_one_line_each_and_rate_limited():
    now = [0.0]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("koubo.test_hostile")
    logger.propagate = False
    logger.addHandler(Collect())
    logger.addFilter(OneLineRateLimit(burst=3, period=60.0, clock=lambda: now[0]))
    for n in range(10):
        try:
            raise ValueError(f"bad\nrequest {n}")
        except ValueError:
            logger.exception("GET /d/x\r\n/y failed")
    now[0] += 61.0
    logger.error("later")
    assert len(records) == 4 and all("\n" not in line and "Traceback" not in line for line in records)
    assert records[0] == "GET /d/x\\r\\n/y failed: ValueError: bad\\nrequest 0"
    assert records[-1] == "later (7 lines like it were dropped before this one)"
