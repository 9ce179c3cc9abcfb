"""A long-lived generation process, as its supervisor sees it, and the slot that keeps one warm.

Each worker slot (a Huey worker process) keeps one generation process: a fresh interpreter
(MediaPipe's threads and fork do not mix) that loads the pipeline once and then takes job after
job, so its imports, models and the Generator's caches outlive each job. Isolation stays per job:
a crash, a timeout or a cancel ends that process (closing its stdin asks it to stop; it is killed
STOP_GRACE_S later), the job is settled by the supervisor, and a spare is started at once so the
next job finds a process that has already loaded everything. A process is also retired, and
replaced the same way, after settings.generation_max_jobs jobs or once its resident memory passes
settings.generation_max_rss, which bounds what a long run of jobs can leave behind.

The protocol (koubo.jobs.child is the other side): the first line on the child's stdin is the
settings as JSON, each further line one job `{"job": id, "worker": name}`; the end of stdin means
"stop". The child answers on a pipe of its own (stdout belongs to native libraries that print):
`{"ready": true}` once the pipeline is loaded, then `{"job": id}` each time it has finished with a
job, whatever the job's outcome (which the child has written to the database). A worker claims a
job only once its process is ready, so the job's time (and task_timeout) is the generation's own.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from typing import IO

from koubo.config import Settings

log = logging.getLogger(__name__)

STOP_GRACE_S = 2.0
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class GenerationProcess:
    """One generation child: started with the settings, given jobs one at a time."""

    def __init__(self, settings: Settings) -> None:
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        env.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        command = [sys.executable, "-m", "koubo.jobs.queue", "--generation-process", "--results-fd", str(write_end)]
        try:
            self.popen = subprocess.Popen(command, stdin=subprocess.PIPE, env=env, pass_fds=(write_end,))
        finally:
            os.close(write_end)  # the child's copy is the only one: its exit ends the pipe
        self._results = read_end
        self._buffer = b""
        self.jobs_taken = 0
        self.ready = False  # it has loaded the pipeline and waits for jobs
        self.current: str | None = None  # the job it works on, until it says it has finished
        # The settings travel whole: they may come from code (serve(settings)), not only from the environment.
        self._send(settings.model_dump_json())

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def start(self, job_id: str, worker: str) -> bool:
        """Hand over a job; False if the process has gone (it must be replaced)."""
        self.current = job_id
        self.jobs_taken += 1
        return self._send(json.dumps({"job": job_id, "worker": worker}))

    def wait_ready(self, timeout: float) -> bool:
        """Up to `timeout` seconds for it to have loaded the pipeline; False if it has not (or exited)."""
        deadline = time.monotonic() + timeout
        while not self.ready and self._read(deadline - time.monotonic()):
            pass
        return self.ready

    def wait(self, timeout: float) -> bool:
        """Up to `timeout` seconds for the current job to end (reported) or the process to exit;
        True when either happened."""
        deadline = time.monotonic() + timeout
        while self.current is not None:
            if not self._read(deadline - time.monotonic()):
                return not self.alive()
        return True

    def _read(self, timeout: float) -> bool:
        """Read what it has said within `timeout` seconds; False when nothing came (or it has exited)."""
        if timeout <= 0:
            return False
        ready, _, _ = select.select([self._results], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(self._results, 4096)
        if not chunk:  # the pipe's only writer, the process, has exited
            self.popen.wait()
            return False
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            message = json.loads(line)
            if message.get("ready"):
                self.ready = True
            elif message.get("job") is not None and message.get("job") == self.current:
                self.current = None
        return True

    def stop(self) -> None:
        """Ask it to stop (the end of its stdin) and kill it if it has not exited STOP_GRACE_S later."""
        self._close_stdin()
        try:
            self.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.popen.kill()
        self.popen.wait()
        self._close_stdin()

    def close(self) -> None:
        """Stop it and release the pipes; nothing may be asked of it after."""
        if self.alive():
            self.stop()
        try:
            os.close(self._results)
        except OSError:
            pass

    def rss_bytes(self) -> int | None:
        """Its resident memory now, where /proc tells (Linux); None elsewhere or once it has gone."""
        try:
            resident = int(open(f"/proc/{self.pid}/statm").read().split()[1])
        except (OSError, IndexError, ValueError):
            return None
        return resident * _PAGE_SIZE

    def _send(self, line: str) -> bool:
        try:
            stdin = self._stdin()
            stdin.write(line.encode("utf-8") + b"\n")
            stdin.flush()
        except (OSError, ValueError):
            log.warning("generation process %d has exited (%s)", self.pid, self.returncode)
            return False
        return True

    def _close_stdin(self) -> None:
        try:
            self._stdin().close()
        except OSError:
            pass  # it has gone already

    def _stdin(self) -> IO[bytes]:
        if self.popen.stdin is None:
            raise RuntimeError("the generation process was started without a stdin pipe")
        return self.popen.stdin


class WarmSlot:
    """The generation process of one worker slot: kept between jobs, replaced ahead of need."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: GenerationProcess | None = None

    def prepare(self) -> None:
        """Have a process starting up now (it loads the pipeline while the slot waits for a job)."""
        if self.process is None or not self.process.alive():
            self._replace()

    def take(self) -> GenerationProcess:
        self.prepare()
        assert self.process is not None
        return self.process

    def after_job(self, process: GenerationProcess) -> None:
        """The job on `process` is settled: keep the process for the next one, or retire it (it
        exited, was stopped, or reached its job or memory limit) and start its replacement now."""
        if process is not self.process:
            return
        reason = self._retire_reason(process)
        if reason is None:
            return
        log.info("generation process %d retires after %d job(s): %s", process.pid, process.jobs_taken, reason)
        self._replace()

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None

    def _retire_reason(self, process: GenerationProcess) -> str | None:
        if not process.alive() or process.current is not None:
            return f"it has exited ({process.returncode})" if not process.alive() else "it was stopped"
        if process.jobs_taken >= self.settings.generation_max_jobs:
            return f"generation_max_jobs = {self.settings.generation_max_jobs}"
        rss = process.rss_bytes()
        if rss is not None and rss > self.settings.generation_max_rss:
            return f"{rss / 2**20:.0f} MiB resident, above generation_max_rss"
        return None

    def _replace(self) -> None:
        # The spare starts first: it loads the pipeline while the old one is waited for.
        old, self.process = self.process, GenerationProcess(self.settings)
        log.info("generation process %d started", self.process.pid)
        if old is not None:
            old.close()
