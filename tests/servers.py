"""Real server processes for tests: `koubo serve` and `koubo links` on free loopback ports, and
`wait_until`, the one way tests wait for something to happen (never a fixed sleep)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """`check()`'s first true result, asked every `interval` seconds; AssertionError naming `what`
    after `timeout` seconds. Give a generous timeout: it only bounds a failure, a pass returns early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def koubo_env(work: Path, data_dir: Path, overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment without any KOUBO_ setting of the caller's, a config file that
    does not exist, `data_dir`, and then `overrides`."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("KOUBO_")}
    return {**base, "KOUBO_CONFIG": str(work / "no-koubo.toml"), "KOUBO_DATA_DIR": str(data_dir), **overrides}


@dataclass
class Server:
    """A `koubo serve` process; its stdout and stderr go to files so nothing blocks on a full pipe."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    links_port: int
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"koubo serve did not stop on signal {sig}:\n{self.output()}") from None
        return self.process.returncode


def launch(
    work: Path,
    *args: str,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    wait: bool = True,
    ports: tuple[int, int] | None = None,
) -> Server:
    """Start `python -m koubo.cli serve` with its own data dir and a free port (or `ports`: the web
    app's and the link server's); wait for /api/health."""
    data_dir = work / "data"
    port, links_port = ports or (free_port(host), free_port(host))
    # Its own link-server port too: several test servers may run at once.
    full_env = koubo_env(work, data_dir, {"KOUBO_PORT": str(port), "KOUBO_LINKS_PORT": str(links_port), **(env or {})})
    stdout, stderr = work / "serve.stdout", work / "serve.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "koubo.cli", "serve", *args], env=full_env, stdout=out, stderr=err
        )
    server = Server(process, data_dir, port, links_port, stdout, stderr)
    if wait:
        wait_until(lambda: _healthy(server), 180, "koubo serve to answer /api/health", interval=0.3)
    return server


def _healthy(server: Server) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"koubo serve exited with {server.process.returncode}:\n{server.output()}")
    try:
        return httpx.get(f"{server.url}/api/health", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def processes(where: Callable[[list[str]], bool]) -> list[int]:
    """Pids whose /proc/<pid>/stat fields after the command name (state, ppid, pgrp, ...) satisfy `where`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses; the fields after the last ")" do not.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if where(fields):
            found.append(int(stat.parent.name))
    return found


@dataclass
class LinksProcess:
    """A `koubo links` process; its output goes to `log`."""

    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> bool:
        if self.process.poll() is not None:
            output = self.log.read_text(errors="replace")
            raise AssertionError(f"koubo links exited with {self.process.returncode}:\n{output}")
        try:
            httpx.get(f"{self.url}/d/x/y", timeout=2.0)
        except httpx.TransportError:
            return False
        return True


@contextmanager
def links_process(work: Path, data_dir: Path, **settings: str) -> Iterator[LinksProcess]:
    """`koubo links` on a free port with KOUBO_<NAME> settings, until the block ends (SIGTERM)."""
    port = free_port()
    env = koubo_env(
        work,
        data_dir,
        {"KOUBO_LINKS_PORT": str(port), **{f"KOUBO_{name.upper()}": value for name, value in settings.items()}},
    )
    log = work / f"links-{port}.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "koubo.cli", "links"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    links = LinksProcess(process, port, env, log)
    try:
        wait_until(links.answers, 60, "koubo links to answer", interval=0.2)
        yield links
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
