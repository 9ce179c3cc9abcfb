"""koubo's log: one line per event, "time level [job <id>] message", in a rotating UTF-8 file and on stderr.

The web app, the queue consumer, its workers and their generation processes all write to the same
file. Code that works for one job runs inside `job_context(job_id)`, and every line it logs, from
any logger, carries that id; other lines carry "-".
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
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
