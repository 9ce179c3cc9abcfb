"""What the link server sends: bytes, live rate, downloads per link, and a fair share of a total cap.

A line of 100 Mbit/s serves many viewers evenly only if each download gets its share instead of the
first ones taking it all: with `links_egress_cap` set, every transfer is paced to the cap divided by
the transfers in progress, recomputed as they come and go. The figures reach `/metrics` and the UI
through a small JSON snapshot each link server writes into the data folder every second (the link
server and the web app are separate processes, possibly on separate machines sharing the folder).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from koubo.errors import ErrorCode, KouboError

# The live rate is the bytes of the last RATE_WINDOW_S seconds over that window.
RATE_WINDOW_S = 5
# Snapshots older than this belong to a link server that has stopped.
FRESH_S = 10.0
BUSIEST = 10


def link_exhausted(limit: int) -> KouboError:
    return KouboError(
        ErrorCode.LINK_EXHAUSTED,
        f"This link has been downloaded {limit} times, the most it allows; ask for a new link.",
        f"此链接已被下载 {limit} 次，达到上限；请重新获取链接。",
    )


class Egress:
    """Counters shared by the event loop and the sending threads (hence the lock)."""

    def __init__(self, cap: int | None, per_link: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap, self.per_link, self._clock = cap, per_link, clock
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.active = 0
        self.downloads: Counter[str] = Counter()  # "<job>/<name>" -> downloads started
        self._buckets: dict[int, int] = {}  # whole second -> bytes sent in it

    @contextmanager
    def transfer(self, link: str, whole: bool) -> Iterator[None]:
        """One response in progress; `whole`: it starts at byte 0, so it counts as a download (the
        Range requests of a resumed or multi-connection download do not count again)."""
        with self._lock:
            if whole:
                if self.per_link is not None and self.downloads[link] >= self.per_link:
                    raise link_exhausted(self.per_link)
                self.downloads[link] += 1
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1

    def sent(self, count: int) -> None:
        second = int(self._clock())
        with self._lock:
            self.bytes_sent += count
            self._buckets[second] = self._buckets.get(second, 0) + count
            for old in [s for s in self._buckets if s <= second - RATE_WINDOW_S]:
                del self._buckets[old]

    def share(self) -> int | None:
        """Bytes per second each transfer may use now; None without a cap."""
        if self.cap is None:
            return None
        with self._lock:
            return max(1, self.cap // max(1, self.active))

    def rate(self) -> float:
        """Bytes per second over the last RATE_WINDOW_S seconds."""
        now = int(self._clock())
        with self._lock:
            recent = sum(count for second, count in self._buckets.items() if second > now - RATE_WINDOW_S)
        return recent / RATE_WINDOW_S

    def snapshot(self) -> dict[str, Any]:
        rate = self.rate()
        with self._lock:
            return {
                "written_at": time.time(),
                "bytes_sent": self.bytes_sent,
                "active": self.active,
                "rate": rate,
                "cap": self.cap,
                "downloads": dict(self.downloads.most_common(BUSIEST)),
                "downloads_total": sum(self.downloads.values()),
            }


def snapshot_path(data_dir: Path, port: int) -> Path:
    return data_dir / "run" / f"egress-{socket.gethostname()}-{port}.json"


def write_snapshot(path: Path, snapshot: dict[str, Any]) -> None:
    """Atomically (temp name, rename): a reader never sees half a snapshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(snapshot, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_snapshots(data_dir: Path, now: float | None = None) -> list[dict[str, Any]]:
    """The fresh snapshots of every link server writing into `data_dir`."""
    now = time.time() if now is None else now
    found = []
    for path in sorted((data_dir / "run").glob("egress-*.json")):
        try:
            snapshot = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if now - float(snapshot.get("written_at", 0)) <= FRESH_S:
            found.append(snapshot)
    return found


def combined(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """All link servers' figures as one: sums, and the busiest links over all of them."""
    downloads: Counter[str] = Counter()
    for snapshot in snapshots:
        downloads.update(snapshot.get("downloads", {}))
    return {
        "servers": len(snapshots),
        "bytes_sent": sum(s["bytes_sent"] for s in snapshots),
        "active": sum(s["active"] for s in snapshots),
        "rate": sum(s["rate"] for s in snapshots),
        "downloads_total": sum(s.get("downloads_total", 0) for s in snapshots),
        "busiest": downloads.most_common(BUSIEST),
    }
