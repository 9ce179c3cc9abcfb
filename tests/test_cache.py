"""FeatureCache: memory, then disk, then compute; safe keys; damaged entries recomputed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from koubo.features import AudioFeatures, compute_audio_features
from koubo.features.cache import FeatureCache, content_hash

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
