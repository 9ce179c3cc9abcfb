"""koubo's log: one line per event, "time level [job <id>] message", in a rotating UTF-8 file and on stderr.

The web app, the queue consumer, its workers and their generation processes all write to the same
file. Code that works for one job runs inside `job_context(job_id)`, and every line it logs, from
any logger, carries that id; other lines carry "-". `tail_log` and `LogFollower` read it back
(`koubo logs`, /api/logs, the UI's log view). `native_notices_hidden` keeps MediaPipe's start-up
notices, which no setting silences, off stderr.

It sits below every other package (media to web): all of them log, and jobs, links and the web
app read the log back.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from logging.handlers import RotatingFileHandler
from pathlib import Path

from koubo.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s [job %(job_id)s] %(message)s"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5
NO_JOB = "-"

_current_job: ContextVar[str] = ContextVar("koubo_job_id", default=NO_JOB)
# Marks the handlers setup_logging added, so that calling it again replaces them instead of doubling lines.
_OWNED = "_koubo_handler"
_TAIL_BLOCK = 64 * 1024
# A follower that fell far behind skips ahead rather than holding a huge backlog in memory.
_MAX_READ = 4 * 1024 * 1024
# MediaPipe logs through absl before absl::InitializeLog is called, and such lines reach stderr
# whatever GLOG_minloglevel or TF_CPP_MIN_LOG_LEVEL say: a dozen notices of no use to anyone (a model
# without feedback tensors, a square region, the XNNPACK delegate) from every process that loads the
# face models, in front of the command line's progress bars and among the service's console lines.
NATIVE_NOTICE = (
    r"(?:[IW]\d{4} \S+\s+\d+ (?:inference_feedback_manager|landmark_projection_calculator)\.cc:\d+\]"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate|WARNING: All log messages before absl::InitializeLog)"
)
# The filter is a process of its own, so that whatever native code writes just before it aborts the
# process (a failed check) is still read from the pipe and shown.
_NOTICE_FILTER = (
    "import re, sys\n"
    "notice = re.compile(sys.argv[1].encode())\n"
    "for line in sys.stdin.buffer:\n"
    "    if not notice.match(line):\n"
    "        sys.stdout.buffer.write(line)\n"
    "        sys.stdout.buffer.flush()\n"
)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Lines logged inside carry `job_id` (this thread or task only: it is a context variable)."""
    token = _current_job.set(job_id)
    try:
        yield
    finally:
        _current_job.reset(token)


class JobIdFilter(logging.Filter):
    """Gives every record a `job_id`: its own (`extra={"job_id": ...}`), else the current job's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "job_id", None):
            record.job_id = _current_job.get()
        return True


class OneLineRateLimit(logging.Filter):
    """For a logger strangers can make write (a server's error lines): each record becomes one line,
    an exception its type and message without the traceback, and at most `burst` lines pass per
    `period` seconds; the first line after a silence says how many were dropped.

    Attach it to the logger itself (`logger.addFilter`), so it sees that logger's records only."""

    def __init__(self, burst: int = 20, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.period, self._clock = burst, period, clock
        self._window_end = float("-inf")
        self._passed = self._dropped = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            now = self._clock()
            if now >= self._window_end:
                self._window_end, self._passed = now + self.period, 0
            if self._passed >= self.burst:
                self._dropped += 1
                return False
            self._passed += 1
            dropped, self._dropped = self._dropped, 0
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text = f"{text}: {type(error).__name__}: {error}"
        if dropped:
            text = f"{text} ({dropped} lines like it were dropped before this one)"
        # Whatever a request put in the message, it stays on one line.
        record.msg, record.args = text.replace("\r", "\\r").replace("\n", "\\n"), None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def setup_logging(settings: Settings, level: int = logging.INFO) -> Path:
    """Send every logger's records to settings.log_path (rotated) and to stderr; return the file's path."""
    path = Path(settings.log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OWNED, False)]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = [
        RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8"),
        logging.StreamHandler(sys.stderr),
    ]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(JobIdFilter())
        setattr(handler, _OWNED, True)
        root.addHandler(handler)
    root.setLevel(level)
    return path


def tail_log(path: str | Path, lines: int = 200) -> list[str]:
    """The last `lines` lines of the log at `path` (without line ends); [] if there is none yet."""
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as file:
            position = file.seek(0, os.SEEK_END)
            data = b""
            # One newline more than asked for: the first piece read may start mid-line.
            while position > 0 and data.count(b"\n") <= lines:
                step = min(_TAIL_BLOCK, position)
                position -= step
                file.seek(position)
                data = file.read(step) + data
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    return text.rstrip("\n").split("\n")[-lines:] if text else []


class LogFollower:
    """A log file's last lines, then the lines appended since the previous read, like `tail -f`.

    Survives rotation (RotatingFileHandler renames the file and starts a new one) and truncation.
    Works in bytes so offsets stay exact; decodes each whole line as UTF-8.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        self._mark_end()

    def _mark_end(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        self._identity, self._offset, self._partial = (stat.st_dev, stat.st_ino), stat.st_size, b""

    def tail(self, lines: int) -> list[str]:
        """The last `lines` lines; read_new() continues from here.

        The end is marked before the tail is read: a line written in between may come twice, never not at all.
        """
        self._mark_end()
        return tail_log(self.path, lines)

    def read_new(self) -> list[str]:
        try:
            with self.path.open("rb") as file:
                stat = os.fstat(file.fileno())
                if (stat.st_dev, stat.st_ino) != self._identity or stat.st_size < self._offset:
                    self._identity, self._offset, self._partial = (stat.st_dev, stat.st_ino), 0, b""
                if stat.st_size - self._offset > _MAX_READ:
                    self._offset, self._partial = stat.st_size - _MAX_READ, b""
                file.seek(self._offset)
                data = file.read(stat.st_size - self._offset)
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        return [line.rstrip(b"\r").decode("utf-8", errors="replace") for line in complete]


@contextmanager
def native_notices_hidden() -> Iterator[None]:
    """Within: what native code writes to stderr (fd 2) goes through a filter that drops the lines
    NATIVE_NOTICE matches; Python's own sys.stderr writes where stderr went before, unfiltered."""
    shown = _stderr_copy()
    if shown is None:  # no stderr at all: nothing to filter
        yield
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    command = [sys.executable, "-I", "-S", "-c", _NOTICE_FILTER, NATIVE_NOTICE]
    with subprocess.Popen(command, stdin=read_end, stdout=shown):
        os.close(read_end)
        os.dup2(write_end, 2)
        os.close(write_end)
        python_stderr = sys.stderr
        sys.stderr = open(  # noqa: SIM115 (closed below, after the block)
            os.dup(shown),
            "w",
            encoding=getattr(python_stderr, "encoding", None) or "utf-8",
            errors="backslashreplace",
            buffering=1,
        )
        try:
            yield
        finally:
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(shown, 2)  # the pipe's last writer: the filter reads to its end and exits
            os.close(shown)


def _stderr_copy() -> int | None:
    if sys.stderr is None:  # started with stderr closed
        return None
    try:
        return os.dup(2)
    except OSError:  # closed since
        return None
