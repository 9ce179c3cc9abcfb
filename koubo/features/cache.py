"""Content-addressed caches for derived data (audio features, face tracks): memory, then disk.

Entries live in `<root>/<kind>/<key[:2]>/<key>.pkl`. Several processes may share a root: every
write goes to a temporary file in the entry's folder and is renamed into place, so a reader sees
either a whole entry or none. An entry is computed under an exclusive flock on `<entry>.lock`, so
the workers of one batch (one audio, many templates) compute the shared entry once and the others
read it. The lock file goes once the entry is written; one left by a failed or killed computation
is harmless (the kernel releases a dead process's flock) and retention's cache trim removes it.
The folder is koubo's own data directory; pickles from it are trusted like the code that wrote them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import os
import pickle
import re
import sys
import tempfile
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

log = logging.getLogger(__name__)

# Bumped when the entry layout changes; an algorithm change bumps the kind name ("audio-v2").
ENTRY_FORMAT = 1
_CHUNK = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def content_hash(path: str | Path) -> str:
    """sha256 hex digest of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _checked_name(what: str, name: str) -> str:
    # A leading dot is refused too: "." and ".." would climb out of the cache folder.
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid cache {what} {name!r}: 1-128 of A-Z a-z 0-9 _ - ., not starting with '.'")
    return name


def memory_size(value: Any) -> int:
    """Roughly the bytes `value` holds: its arrays' buffers, through dataclasses, dicts and sequences."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(memory_size(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return sum(memory_size(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(memory_size(item) for item in value)
    return sys.getsizeof(value)


class FeatureCache:
    """get_or_compute(kind, key, compute): memory LRU per kind, then disk, then compute and store both.

    The memory side keeps at most `memory_entries` entries of each kind and `memory_bytes` in all
    (memory_size): a warm generation process runs job after job with one cache, and the face track
    of a long template is hundreds of MB.
    """

    def __init__(self, root: Path, memory_entries: int = 16, memory_bytes: int = 512 * 1024**2) -> None:
        self.root = Path(root)
        self.memory_entries = memory_entries
        self.memory_bytes = memory_bytes
        self.stats: dict[str, Counter[str]] = defaultdict(Counter)
        self._memory: dict[str, OrderedDict[str, Any]] = defaultdict(OrderedDict)
        self._sizes: OrderedDict[tuple[str, str], int] = OrderedDict()  # every kind's entries, oldest use first
        self._lock = threading.Lock()

    def path(self, kind: str, key: str) -> Path:
        _checked_name("kind", kind)
        _checked_name("key", key)
        return self.root / kind / key[:2] / f"{key}.pkl"

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], T]) -> T:
        path = self.path(kind, key)
        with self._lock:
            entries = self._memory[kind]
            if key in entries:
                entries.move_to_end(key)
                self._sizes.move_to_end((kind, key))
                self.stats[kind]["memory_hits"] += 1
                return entries[key]
        found, value = self._read(path, kind, key)
        if found:
            self._count(kind, "disk_hits")
        else:
            value = self._compute_once(path, kind, key, compute)
        self._remember(kind, key, value)
        return value

    def _compute_once(self, path: Path, kind: str, key: str, compute: Callable[[], T]) -> T:
        """compute() and store its value, under the entry's lock: unless another process has
        written the entry by the time this one holds the lock.

        The wait has no timeout and does not look at the job's should_stop: a cancelled or timed-out
        job's generation process is killed by its supervisor, waiting or not, and the process it
        waits for is bounded by its own job's task_timeout the same way."""
        lock_path = path.with_name(path.name + ".lock")
        with _exclusive(lock_path) as waited:
            found, value = self._read(path, kind, key)
            if found:
                self._count(kind, "disk_hits")
                if waited:
                    self._count(kind, "waits")
                    log.info("cache %s %s: computed by another process, waited %.2f s for it", kind, key, waited)
                return value
            if waited:
                log.info("cache %s %s: the other process stopped without storing it; computing here", kind, key)
            self._count(kind, "misses")
            value = compute()
            if self._write(path, kind, key, value):
                # Safe while held: whoever locks this file or a new one afterwards finds the entry first.
                lock_path.unlink(missing_ok=True)
        return value

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()
            self._sizes.clear()

    @property
    def memory_used(self) -> int:
        """Bytes held in memory now (memory_size of every entry)."""
        with self._lock:
            return sum(self._sizes.values())

    def _count(self, kind: str, event: str) -> None:
        with self._lock:
            self.stats[kind][event] += 1

    def _remember(self, kind: str, key: str, value: Any) -> None:
        size = memory_size(value)
        if self.memory_entries <= 0 or size > self.memory_bytes:
            return  # larger than the whole budget: it would only push everything else out
        with self._lock:
            entries = self._memory[kind]
            entries[key] = value
            entries.move_to_end(key)
            self._sizes[(kind, key)] = size
            self._sizes.move_to_end((kind, key))
            while len(entries) > self.memory_entries:
                oldest, _ = entries.popitem(last=False)
                del self._sizes[(kind, oldest)]
            while sum(self._sizes.values()) > self.memory_bytes:
                (old_kind, old_key), _ = self._sizes.popitem(last=False)
                del self._memory[old_kind][old_key]

    @staticmethod
    def _read(path: Path, kind: str, key: str) -> tuple[bool, Any]:
        try:
            with open(path, "rb") as file:
                entry = pickle.load(file)
        except FileNotFoundError:
            return False, None
        except Exception as error:  # noqa: BLE001 - any damaged entry is a miss, never a failed job
            log.warning("cache entry %s unreadable (%s); recomputing", path, error)
            return False, None
        if not (
            isinstance(entry, dict)
            and entry.get("format") == ENTRY_FORMAT
            and entry.get("kind") == kind
            and entry.get("key") == key
            and "value" in entry
        ):
            log.warning("cache entry %s has an unexpected layout; recomputing", path)
            return False, None
        return True, entry["value"]

    @staticmethod
    def _write(path: Path, kind: str, key: str, value: Any) -> bool:
        """Store the entry; False (logged) where the disk refuses it."""
        entry = {"format": ENTRY_FORMAT, "kind": kind, "key": key, "value": value}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as file:
                    pickle.dump(entry, file, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as error:
            # A full or read-only disk costs a recomputation later, not this job.
            log.warning("cannot store cache entry %s (%s)", path, error)
            return False
        return True


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[float]:
    """Hold an exclusive flock on `lock_path`; yields the seconds spent waiting for another holder.

    Where the lock file cannot be made (a read-only or full disk, a file system without flock) it
    yields 0.0 unlocked: the worst outcome is the same entry computed twice, never a failed job.
    """
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        log.debug("cache lock %s unavailable (%s); computing unlocked", lock_path, error)
        yield 0.0
        return
    try:
        waited = _acquire(fd, lock_path)
        if waited is not None:
            # Retention trims cache files by age: a lock in use is not one left over.
            os.utime(fd)
        yield waited or 0.0
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, lock_path: Path) -> float | None:
    """Seconds waited for the flock on `fd` (0.0 when it was free); None where flock fails."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return 0.0
    except BlockingIOError:
        pass
    except OSError as error:
        log.debug("cache lock %s unavailable (%s); computing unlocked", lock_path, error)
        return None
    log.info("cache lock %s is held: waiting for another process's computation", lock_path.name)
    started = time.monotonic()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as error:
        log.debug("cache lock %s unavailable (%s); computing unlocked", lock_path, error)
        return None
    return time.monotonic() - started
