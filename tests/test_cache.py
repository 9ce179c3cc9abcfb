"""FeatureCache: memory, then disk, then compute; safe keys; damaged entries recomputed."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from koubo.features import AudioFeatures, compute_audio_features
from koubo.features.cache import FeatureCache, content_hash

from servers import wait_until

KEY = hashlib.sha256(b"speech.wav").hexdigest()


class CountingCompute:
    def __init__(self, value: object) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return self.value


def test_repeated_lookups_compute_once_then_hit_memory_then_disk(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    compute = CountingCompute(np.arange(5.0))
    first = cache.get_or_compute("audio-v1", KEY, compute)
    second = cache.get_or_compute("audio-v1", KEY, compute)
    cache.clear_memory()
    third = cache.get_or_compute("audio-v1", KEY, compute)
    assert compute.calls == 1
    assert np.array_equal(first, second) and np.array_equal(first, third)
    assert cache.stats["audio-v1"] == {"misses": 1, "memory_hits": 1, "disk_hits": 1}
    assert (tmp_path / "audio-v1" / KEY[:2] / f"{KEY}.pkl").is_file()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


def test_audio_features_survive_the_disk_round_trip(tmp_path: Path) -> None:
    samples = (0.1 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16_000)).astype(np.float32)
    features = compute_audio_features(samples, KEY)
    stored = FeatureCache(tmp_path).get_or_compute("audio-v1", KEY, lambda: features)
    loaded = FeatureCache(tmp_path).get_or_compute("audio-v1", KEY, lambda: pytest.fail("recomputed"))
    assert isinstance(loaded, AudioFeatures) and loaded.audio_hash == KEY
    assert np.array_equal(loaded.mel, stored.mel)
    assert np.array_equal(loaded.envelope.loudness, stored.envelope.loudness)


def test_a_second_cache_on_the_same_root_reads_the_disk_entry(tmp_path: Path) -> None:
    FeatureCache(tmp_path).get_or_compute("audio-v1", KEY, CountingCompute({"mel": [1, 2]}))
    other = FeatureCache(tmp_path)
    compute = CountingCompute({"mel": [9]})
    assert other.get_or_compute("audio-v1", KEY, compute) == {"mel": [1, 2]}
    assert compute.calls == 0
    assert other.stats["audio-v1"]["disk_hits"] == 1


def test_kinds_are_separate_namespaces(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    cache.get_or_compute("audio-v1", KEY, CountingCompute("old algorithm"))
    assert cache.get_or_compute("audio-v2", KEY, CountingCompute("new algorithm")) == "new algorithm"
    assert cache.stats["audio-v2"]["misses"] == 1


@pytest.mark.parametrize("damage", [b"", b"not a pickle at all", b"\x80\x05\x95truncated"])
def test_a_damaged_disk_entry_is_recomputed_and_replaced(tmp_path: Path, damage: bytes) -> None:
    cache = FeatureCache(tmp_path)
    path = cache.path("audio-v1", KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(damage)
    compute = CountingCompute([1, 2, 3])
    assert cache.get_or_compute("audio-v1", KEY, compute) == [1, 2, 3]
    assert compute.calls == 1
    assert cache.stats["audio-v1"]["misses"] == 1
    assert FeatureCache(tmp_path).get_or_compute("audio-v1", KEY, CountingCompute(None)) == [1, 2, 3]


def test_an_entry_stored_under_another_key_is_not_trusted(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    other_key = "ab" + KEY[2:]
    cache.get_or_compute("audio-v1", KEY, CountingCompute("for KEY"))
    target = cache.path("audio-v1", other_key)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(cache.path("audio-v1", KEY), target)
    assert FeatureCache(tmp_path).get_or_compute("audio-v1", other_key, CountingCompute("fresh")) == "fresh"


@pytest.mark.parametrize("key", ["../x", "a/b", "..", ".hidden", "a\\b", "", "x" * 200, "naïve"])
def test_keys_that_could_leave_the_cache_folder_are_refused(tmp_path: Path, key: str) -> None:
    cache = FeatureCache(tmp_path / "cache")
    compute = CountingCompute(1)
    with pytest.raises(ValueError):
        cache.get_or_compute("audio-v1", key, compute)
    with pytest.raises(ValueError):
        cache.get_or_compute(key, KEY, compute)
    assert compute.calls == 0
    assert not (tmp_path / "cache").exists()


def test_memory_keeps_only_the_most_recently_used_entries(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, memory_entries=2)
    for key in ("k1", "k2", "k3"):
        cache.get_or_compute("faces-v1", key, CountingCompute(key))
    cache.get_or_compute("faces-v1", "k3", CountingCompute(None))  # most recent: in memory
    cache.get_or_compute("faces-v1", "k1", CountingCompute(None))  # evicted: from disk
    assert cache.stats["faces-v1"] == {"misses": 3, "memory_hits": 1, "disk_hits": 1}


def test_zero_memory_entries_always_reads_the_disk(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, memory_entries=0)
    cache.get_or_compute("audio-v1", KEY, CountingCompute(1))
    cache.get_or_compute("audio-v1", KEY, CountingCompute(2))
    assert cache.stats["audio-v1"] == {"misses": 1, "disk_hits": 1}


def test_an_unwritable_cache_folder_still_returns_the_value(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_bytes(b"a file where the folder should be")
    cache = FeatureCache(blocker)
    assert cache.get_or_compute("audio-v1", KEY, CountingCompute("value")) == "value"


def test_content_hash_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several read chunks
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    assert content_hash(path) == hashlib.sha256(data).hexdigest()
    assert content_hash(str(path)) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert content_hash(empty) == hashlib.sha256(b"").hexdigest()


def test_memory_keeps_the_most_recently_used_entries_within_its_byte_budget(tmp_path: Path) -> None:
    mib = np.zeros(2**20, np.uint8)
    cache = FeatureCache(tmp_path, memory_entries=16, memory_bytes=3 * 2**20 + 4096)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4)]
    for key in keys[:3]:
        cache.get_or_compute("face-v1", key, lambda: {"landmarks": mib.copy()})
    cache.get_or_compute("face-v1", keys[0], CountingCompute(None))  # a memory hit: now the newest
    cache.get_or_compute("audio-v1", keys[3], lambda: {"mel": mib.copy()})  # another kind, same budget
    assert 3 * 2**20 <= cache.memory_used <= 3 * 2**20 + 4096
    # keys[1] was the least recently used: it went, and comes back from disk, not memory.
    before = dict(cache.stats["face-v1"])
    cache.get_or_compute("face-v1", keys[1], CountingCompute(None))
    assert cache.stats["face-v1"]["disk_hits"] == before.get("disk_hits", 0) + 1
    cache.get_or_compute("face-v1", keys[0], CountingCompute(None))
    assert cache.stats["face-v1"]["memory_hits"] == 2


def test_an_entry_larger_than_the_memory_budget_stays_on_disk_only(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, memory_bytes=1000)
    cache.get_or_compute("face-v1", KEY, lambda: np.zeros(2000, np.uint8))
    assert cache.memory_used == 0
    assert cache.get_or_compute("face-v1", KEY, CountingCompute(None)).nbytes == 2000
    assert cache.stats["face-v1"]["disk_hits"] == 1


# --- several processes on one cache folder --------------------------------------------------------


def _blocked_flock_waiters(pids: set[int]) -> set[int]:
    """Those of `pids` now blocked waiting for an flock (the "->" lines of /proc/locks)."""
    waiting = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[2] == "FLOCK" and int(fields[5]) in pids:
            waiting.add(int(fields[5]))
    return waiting


def _recording_compute(calls: Path, release: Any, value: str) -> Callable[[], str]:
    def compute() -> str:
        with calls.open("a") as file:
            file.write(f"{os.getpid()}\n")
        release.wait()
        return value

    return compute


def _get_in_process(root: Path, calls: Path, release: Any, results: Any) -> None:
    value = FeatureCache(root).get_or_compute("faces-v1", KEY, _recording_compute(calls, release, f"by {os.getpid()}"))
    results.put((os.getpid(), value))


def test_two_processes_asking_at_once_compute_the_entry_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    calls, release, results = tmp_path / "calls", context.Event(), context.Queue()
    workers = [
        context.Process(target=_get_in_process, args=(tmp_path / "cache", calls, release, results)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        # The first to lock computes and holds on until the other is seen blocked on the lock: both
        # asked while the entry was missing, which is the case the lock is for.
        pids = {worker.pid for worker in workers}
        wait_until(lambda: calls.exists() and _blocked_flock_waiters(pids), 120, "one process blocked on the lock")
        release.set()
        answers = dict(results.get(timeout=120) for _ in workers)
    finally:
        release.set()
        for worker in workers:
            worker.join(60)
    computed_by = [int(line) for line in calls.read_text().split()]
    assert len(computed_by) == 1
    assert answers == {pid: f"by {computed_by[0]}" for pid in pids}
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert not any(p.name.endswith((".lock", ".tmp")) for p in (tmp_path / "cache").rglob("*"))


def test_a_lock_held_by_a_killed_process_is_released_to_the_waiting_one(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    calls, never, results = tmp_path / "calls", context.Event(), context.Queue()
    holder = context.Process(target=_get_in_process, args=(tmp_path / "cache", calls, never, results))
    holder.start()
    try:
        wait_until(calls.exists, 120, "the other process computing")
        cache = FeatureCache(tmp_path / "cache")
        compute = CountingCompute("computed here")
        answer: list[object] = []
        waiter = threading.Thread(target=lambda: answer.append(cache.get_or_compute("faces-v1", KEY, compute)))
        waiter.start()
        wait_until(lambda: _blocked_flock_waiters({os.getpid()}), 60, "this process blocked on the lock")
        os.kill(holder.pid, signal.SIGKILL)
        waiter.join(60)
    finally:
        holder.kill()
        holder.join(60)
    assert holder.exitcode == -signal.SIGKILL
    assert answer == ["computed here"] and compute.calls == 1
    assert cache.stats["faces-v1"] == {"misses": 1}
    assert FeatureCache(tmp_path / "cache").get_or_compute("faces-v1", KEY, CountingCompute(None)) == "computed here"
