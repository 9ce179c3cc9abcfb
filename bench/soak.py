"""Soak: downloads under abuse while the service generates, and every byte checked.

    .venv/bin/python bench/soak.py [--minutes 5] [--clients 32] [--size-mb 150] [--videos 2]

Starts `koubo serve` (two workers: KOUBO_MAX_CONCURRENT=2) on free loopback ports with its own
data folder. Writes `--videos` large real MP4s with koubo's own writer (noise frames at a high
quality, so a few hundred frames make the size) and registers each as a finished job's output,
then for `--minutes`:
- keeps two generations running through the API (uploaded speech + the sample template);
- runs `--clients` download clients against the signed links: whole downloads, random Range
  requests, aborts (close, reset, half-close) and resumes (Range + If-Range) - every byte read is
  compared with the file's byte at that offset.
Then prints bytes verified, mismatching answers (must be 0), failed requests, each long-lived
process's descriptor and RSS drift (after the clients, against before them), and the database's
integrity check. Figures are printed last.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from koubo import samples
from koubo.config import Settings
from koubo.links.signing import signed_link
from koubo.media.video import Mp4Writer

from job_fixtures import finished_job
from servers import free_port, wait_until

_CHUNK = 1 << 16
_FRAME = (360, 640)
_FPS = 25
_KINDS_SHOWN = ("socket", "output", "koubo.db", "koubo.db-wal", "koubo.db-shm", "queue.db")


@dataclass
class Download:
    path: str  # path and query of the signed link
    data: mmap.mmap  # the file, to compare against
    etag: str = ""


@dataclass
class Tally:
    verified: int = 0
    requests: int = 0
    mismatches: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, verified: int = 0, requests: int = 0, mismatch: str = "", failure: str = "") -> None:
        with self.lock:
            self.verified += verified
            self.requests += requests
            if mismatch:
                self.mismatches += 1
                self.notes.append("mismatch: " + mismatch)
            if failure:
                self.failed += 1
                self.notes.append("failed: " + failure)


class Answer:
    """One HTTP answer read from a raw socket: status, headers, then the body bit by bit."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(_CHUNK)
            if not chunk:
                raise ConnectionError(f"the answer ended inside its head: {head[:80]!r}")
            head += chunk
        head, _, self.pending = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/1.1 ") else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self.length = int(self.headers.get("content-length", "0"))

    def compare(self, data: mmap.mmap, offset: int, limit: int | None = None) -> tuple[int, bool]:
        """Read up to `limit` body bytes (all by default), comparing each with data[offset...]."""
        wanted = self.length if limit is None else min(limit, self.length)
        seen, same = 0, True
        while seen < wanted:
            chunk = self.pending or self.sock.recv(min(_CHUNK, wanted - seen))
            self.pending = b""
            if not chunk:
                raise ConnectionError(f"the body ended after {seen} of {wanted} bytes")
            chunk = chunk[: wanted - seen]
            if chunk != data[offset + seen : offset + seen + len(chunk)]:
                same = False
            seen += len(chunk)
        return seen, same


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=120)


def _request(download: Download, *headers: str) -> bytes:
    extra = "".join(f"{header}\r\n" for header in headers)
    return f"GET {download.path} HTTP/1.1\r\nHost: koubo\r\nConnection: close\r\n{extra}\r\n".encode()


def _leave(sock: socket.socket, how: str) -> None:
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "half-close":
        sock.shutdown(socket.SHUT_WR)
    sock.close()


def client(port: int, downloads: list[Download], deadline: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        download = rng.choice(downloads)
        size = len(download.data)
        action = rng.choice(["whole", "range", "range", "abort", "resume"])
        what = f"{action} {download.path[:12]}"
        try:
            with _connect(port) as sock:
                if action == "range":
                    first = rng.randrange(size)
                    last = min(size - 1, first + rng.choice([99, 65_535, 4 * 2**20]))
                    sock.sendall(_request(download, f"Range: bytes={first}-{last}"))
                    answer = Answer(sock)
                    if answer.status != 206 or answer.headers.get("content-range") != f"bytes {first}-{last}/{size}":
                        tally.add(requests=1, failure=f"{what}: {answer.status_line}")
                        continue
                    seen, same = answer.compare(download.data, first)
                    tally.add(seen, 1, "" if same else f"{what} bytes={first}-{last}")
                    continue
                sock.sendall(_request(download))
                answer = Answer(sock)
                if answer.status != 200 or answer.length != size:
                    tally.add(requests=1, failure=f"{what}: {answer.status_line}")
                    continue
                if action == "whole":
                    seen, same = answer.compare(download.data, 0)
                    tally.add(seen, 1, "" if same else what)
                    continue
                stop = rng.randrange(size)
                seen, same = answer.compare(download.data, 0, stop)
                tally.add(seen, 1, "" if same else what)
                _leave(sock, rng.choice(["close", "reset", "half-close"]))
            if action == "resume":
                with _connect(port) as sock:
                    sock.sendall(_request(download, f"Range: bytes={seen}-", f"If-Range: {answer.headers['etag']}"))
                    rest = Answer(sock)
                    if rest.status != 206:
                        tally.add(requests=1, failure=f"{what}: {rest.status_line}")
                        continue
                    more, same = rest.compare(download.data, seen)
                    tally.add(more, 1, "" if same else f"{what} from {seen}")
        except OSError as error:
            tally.add(requests=1, failure=f"{what}: {type(error).__name__}: {error}")


def write_large_mp4(path: Path, audio: Path, size_mb: int, rng: np.random.Generator) -> Path:
    """A real H.264 + AAC MP4 by koubo's writer: noise at crf 1 costs about 1.65 bytes a pixel."""
    height, width = _FRAME
    frames = max(_FPS, round(size_mb * 1e6 / (height * width * 1.65)))
    with Mp4Writer(path, width=width, height=height, fps=Fraction(_FPS), audio_path=audio,
                   duration=frames / _FPS, crf=1, preset="ultrafast") as writer:
        for _ in range(frames):
            writer.write(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return path


def process_state(pid: int) -> tuple[int, int, str] | None:
    """(open descriptors, RSS in KiB, what the descriptors are) of `pid`, or None once it is gone."""
    try:
        kinds: dict[str, int] = {}
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            kind = target.split(":")[0] if ":" in target else Path(target).name
            kind = "output" if "/outputs/" in target else kind
            kinds[kind] = kinds.get(kind, 0) + 1
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        summary = " ".join(f"{kind}={n}" for kind, n in sorted(kinds.items()) if kind in _KINDS_SHOWN)
        return sum(kinds.values()), rss, summary
    except (OSError, StopIteration):
        return None


def long_lived(root: int) -> dict[int, str]:
    """`koubo serve` and its children, by pid, with a short name from their command lines."""
    found = {root: "koubo serve"}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == root:
            found[int(stat.parent.name)] = command.split(" -m ")[-1].strip()[:40]
    return found


def link_connections(pid: int) -> int:
    connected = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":
                connected.add(f"socket:[{fields[9]}]")
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd) in connected
        except OSError:
            pass
    return count


def keep_generating(api: httpx.Client, audio: str, video: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """Two jobs running (or queued behind each other) until `stop`; counts how they ended."""
    active: list[str] = []
    while not stop.is_set():
        for job_id in list(active):
            status = api.get(f"/api/jobs/{job_id}").json()["status"]
            if status not in ("queued", "running"):
                active.remove(job_id)
                counts[status] = counts.get(status, 0) + 1
        while len(active) < 2:
            active.append(api.post("/api/jobs", json={"audio_id": audio, "video_id": video}).json()["id"])
        stop.wait(1.0)
    for job_id in active:
        job = api.get(f"/api/jobs/{job_id}").json()
        counts[f"{job['status']} at the end, progress {job['progress']}"] = 1
        api.post(f"/api/jobs/{job_id}/cancel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--size-mb", type=int, default=150, help="size of each large output")
    parser.add_argument("--videos", type=int, default=2, help="large outputs to download")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="koubo-soak-") as temp:
        work = Path(temp)
        data_dir = work / "data"
        rng = np.random.default_rng(args.seed)
        started = time.monotonic()
        downloads, files = [], []
        for number in range(args.videos):
            (work / f"v{number}").mkdir()
            job_id = finished_job(work / f"v{number}", data_dir, audio_name=f"soak{number}.wav",
                                  speech_seconds=1.0 + number / 10)
            output = next(data_dir.glob(f"outputs/{job_id}/*.mp4"))
            speech = samples.write_sample_speech(work / f"soak{number}.wav", seconds=30.0)
            write_large_mp4(output, speech, args.size_mb, rng)
            link = urlsplit(signed_link(Settings(data_dir=data_dir), job_id, output.name).url)
            files.append(output.open("rb"))
            data = mmap.mmap(files[-1].fileno(), 0, access=mmap.ACCESS_READ)
            downloads.append(Download(f"{link.path}?{link.query}", data))
        made = time.monotonic() - started

        port, links_port = free_port(), free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KOUBO_")},
            "KOUBO_CONFIG": str(work / "none.toml"),
            "KOUBO_DATA_DIR": str(data_dir),
            "KOUBO_PORT": str(port),
            "KOUBO_LINKS_PORT": str(links_port),
            "KOUBO_MAX_CONCURRENT": "2",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        log = (work / "serve.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "koubo.cli", "serve"], env=env, stdout=log, stderr=log)
        tally, counts, stop = Tally(), {}, threading.Event()
        try:
            api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

            def healthy() -> bool:
                try:
                    return api.get("/api/health").status_code == 200 and httpx.get(
                        f"http://127.0.0.1:{links_port}/d/x/y", timeout=5).status_code == 400
                except httpx.TransportError:
                    return False

            wait_until(healthy, 300, "koubo serve and its link server")
            uploads = []
            for path, kind in ((samples.write_sample_speech(work / "gen.wav", seconds=8.0), "audio"),
                               (samples.write_sample_template(work / "gen.mp4", seconds=2.0, size=256), "video")):
                with path.open("rb") as f:
                    uploads.append(api.post("/api/uploads", data={"kind": kind}, files={"file": (path.name, f)}).json()["id"])
            generator = threading.Thread(target=keep_generating, args=(api, *uploads, stop, counts))
            generator.start()
            wait_until(lambda: api.get("/api/jobs", params={"status": "running"}).json()["total"] > 0, 300, "a generation")

            processes = long_lived(server.pid)
            links_pid = next(pid for pid, name in processes.items() if "links" in name)
            before = {pid: process_state(pid) for pid in processes}
            deadline = time.monotonic() + args.minutes * 60
            clients = [threading.Thread(target=client, args=(links_port, downloads, deadline, args.seed * 1000 + n, tally))
                       for n in range(args.clients)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join()
            soaked = args.minutes * 60
            # Every client has gone: the link server lets go of their connections, then compare.
            wait_until(lambda: link_connections(links_pid) == 0, 120, "the link server to close every connection")
            after = {pid: process_state(pid) for pid in processes}
            stop.set()
            generator.join()
        finally:
            stop.set()
            server.terminate()
            server.wait(timeout=120)
            log.close()
        with sqlite3.connect(data_dir / "koubo.db") as db:
            integrity = db.execute("PRAGMA integrity_check").fetchall()
        sizes = [len(d.data) for d in downloads]
        for download, file in zip(downloads, files):
            download.data.close()
            file.close()

    print(f"large outputs: {len(sizes)} MP4s by Mp4Writer, {', '.join(f'{s / 1e6:.1f} MB' for s in sizes)} "
          f"(written in {made:.0f} s)")
    for note in tally.notes[:10]:
        print("  " + note)
    print("per process (descriptors, RSS) before the clients -> after them (long-lived processes of koubo serve):")
    for pid, name in processes.items():
        b, a = before[pid], after[pid]
        if b and a:
            print(f"  {name:<20} fds {b[0]} -> {a[0]} ({a[0] - b[0]:+d}), RSS {b[1] / 1024:.0f} -> {a[1] / 1024:.0f} MiB "
                  f"({(a[1] - b[1]) / 1024:+.0f} MiB); [{b[2]}] -> [{a[2]}]")
        else:
            print(f"  {name:<20} (not alive at both points)")
    print(f"generations while downloading: {counts or 'none finished'}")
    print(f"database integrity_check: {integrity}")
    print(f"{args.clients} clients for {soaked / 60:.1f} min: {tally.requests} requests, "
          f"{tally.verified / 1e9:.2f} GB verified byte by byte ({tally.verified / soaked / 1e6:.0f} MB/s), "
          f"mismatching answers {tally.mismatches}, failed requests {tally.failed}")


if __name__ == "__main__":
    main()
