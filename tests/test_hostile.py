"""The link server under clients that abort, half-close and hammer it: every byte still goes to the
one who asked for it, and nothing is left behind (issue 10)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from koubo.config import Settings
from koubo.links.signing import signed_link

from job_fixtures import finished_job
from servers import free_port, wait_until

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


@contextmanager
def links_server(work: Path, data_dir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`koubo links` on a free port: its port and process (whose descriptors and threads are counted)."""
    port = free_port()
    base = {key: value for key, value in os.environ.items() if not key.startswith("KOUBO_")}
    env = {
        **base,
        "KOUBO_CONFIG": str(work / "no-koubo.toml"),
        "KOUBO_DATA_DIR": str(data_dir),
        "KOUBO_LINKS_PORT": str(port),
    }
    log = work / "links.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "koubo.cli", "links"], env=env, stdout=out, stderr=subprocess.STDOUT
        )

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"koubo links exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/d/x/y", timeout=2.0)
        except httpx.TransportError:
            return False
        return True

    try:
        wait_until(answers, 60, "koubo links to answer", interval=0.2)
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    with links_server(tmp_path, data_dir) as (port, process):
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


@pytest.mark.parametrize("how", ["half-close", "reset", "close"])
def test_an_aborted_download_frees_its_descriptors(tmp_path, how):
    """One abort at a time: the duplicates a transfer holds are closed whichever way the client went."""
    data_dir = tmp_path / "data"
    big = _job_with_output(tmp_path, data_dir, os.urandom(BIG))
    outputs = data_dir / "outputs"
    with links_server(tmp_path, data_dir) as (port, process):
        for _ in range(3):
            _abort_mid_transfer(port, big, how)
        _let_go(process.pid, outputs)
