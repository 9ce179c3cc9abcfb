"""Debian's PostgreSQL 15, started for a test on a free loopback port in a temporary folder.

As root (CI, koubo.sh test) the server runs as the `postgres` user, which PostgreSQL insists on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MISSING = "needs Debian's postgresql 15 (koubo.sh test installs it as root)"


def available() -> bool:
    return (PG_BIN / "postgres").exists()


def require() -> None:
    """Skip without PostgreSQL on a developer's machine; in CI (CI=true) its absence is a failure."""
    if available():
        return
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is missing in CI: {MISSING}")
    pytest.skip(MISSING)


@dataclass
class Postgres:
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://koubo@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_postgres, *command], check=False, capture_output=True, timeout=120)
        assert done.returncode == 0, f"{command[0]} failed: {done.stdout.decode()} {done.stderr.decode()}"

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.folder / "db"), "-U", "koubo", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = str(PG_BIN / "pg_ctl")
        self._run(
            pg_ctl, "-D", str(self.folder / "db"), "-l", str(self.folder / "pg.log"), "-o", options, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "db"), "-m", mode, "-w", "-t", "30", "stop")

    def reset(self) -> None:
        """An empty public schema: tests that share one server each start from nothing."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=koubo dbname=postgres", autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    # Not under pytest's temporary folder: the postgres user cannot enter root's (mode 700).
    folder = Path(tempfile.mkdtemp(prefix="koubo-pg-"))
    server = Postgres(folder, free_port())
    try:
        server.init()
        server.start()
        yield server
        server.stop("immediate")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
