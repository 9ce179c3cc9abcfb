"""The free-space guard: new uploads and jobs are refused while a disk is nearly full.

A render that runs out of space midway fails late, after minutes of work, and can leave the
database or the log unwritable too; refusing at the door gives a clear message instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from koubo import errors


def free_bytes(folder: Path) -> int:
    """Free bytes, for an unprivileged user, on the file system that holds `folder`."""
    return shutil.disk_usage(folder).free


def ensure_room_to_write(folder: Path, minimum: int) -> None:
    """For a job that is writing: raises `disk_full` (saying the job was stopped) below `minimum` bytes free."""
    if minimum <= 0:
        return
    free = free_bytes(folder)
    if free < minimum:
        raise errors.disk_low_while_writing(free, minimum)


def ensure_free_space(folder: Path, minimum: int) -> None:
    """Raises the `disk_full` KouboError when `folder`'s disk has fewer than `minimum` bytes free (0: never)."""
    if minimum <= 0:
        return
    free = free_bytes(folder)
    if free < minimum:
        raise errors.disk_full(free, minimum)
