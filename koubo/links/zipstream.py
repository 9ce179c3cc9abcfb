"""A ZIP of finished videos, written while it is sent: no temp file, and its length known in advance.

Entries are stored, not deflated (H.264 does not compress further). Each file's CRC is only known
once its data has gone out, so every entry carries a data descriptor (general purpose bit 3); with
the sizes known from stat() beforehand, every byte of the archive is determined before the first
one is sent, so a response can carry an exact Content-Length. ZIP64 records appear only where a
size or an offset needs them (over 4 GiB), so small archives open in the oldest unzip tools.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_LIMIT32 = 0xFFFFFFFF
_LIMIT16 = 0xFFFF
_FLAGS = 0x0008 | 0x0800  # data descriptor follows the data; names are UTF-8
_MADE_BY = (3 << 8) | 45  # Unix, spec 4.5
_UNIX_FILE = 0o100644 << 16
_CHUNK = 1024 * 1024


class ZipSourceChanged(OSError):
    """A file changed size while it was being sent: the promised length can no longer be kept."""


@dataclass(frozen=True)
class ZipEntry:
    path: Path
    name: str  # inside the archive, unique
    size: int
    mtime: float

    @property
    def zip64(self) -> bool:
        return self.size >= _LIMIT32


def zip_entries(files: list[tuple[Path, str]]) -> list[ZipEntry]:
    """(path, wanted name) pairs as entries with unique names and the sizes they have now."""
    used: set[str] = set()
    entries = []
    for path, name in files:
        st = path.stat()
        entries.append(ZipEntry(path, _unique(name, used), st.st_size, st.st_mtime))
    return entries


def zip_size(entries: list[ZipEntry]) -> int:
    """The exact length of zip_chunks(entries)."""
    return sum(len(piece) for piece in _framing(entries, crcs=[0] * len(entries))) + sum(e.size for e in entries)


def zip_chunks(entries: list[ZipEntry], chunk: int = _CHUNK) -> Iterator[bytes]:
    """The archive, piece by piece. Raises ZipSourceChanged if a file's length differs from its entry."""
    crcs: list[int] = []
    for entry in entries:
        header = _local_header(entry)
        yield header
        crc, sent = 0, 0
        with entry.path.open("rb") as source:
            while sent < entry.size and (data := source.read(min(chunk, entry.size - sent))):
                crc = zlib.crc32(data, crc)
                sent += len(data)
                yield data
        if sent != entry.size:
            raise ZipSourceChanged(f"{entry.path} has {sent} bytes, {entry.size} were announced")
        descriptor = _descriptor(entry, crc)
        yield descriptor
        crcs.append(crc)
    yield from _central_directory(entries, crcs)


def _framing(entries: list[ZipEntry], crcs: list[int]) -> Iterator[bytes]:
    for entry, crc in zip(entries, crcs):
        yield _local_header(entry)
        yield _descriptor(entry, crc)
    yield from _central_directory(entries, crcs)


def _local_header(entry: ZipEntry) -> bytes:
    name = entry.name.encode("utf-8")
    # Sizes and CRC are zero here (bit 3): the descriptor after the data carries them. A ZIP64
    # entry announces itself with 0xFFFFFFFF sizes and an extra field, so readers expect 8-byte
    # sizes in its descriptor.
    extra = struct.pack("<HHQQ", 0x0001, 16, 0, 0) if entry.zip64 else b""
    sizes = _LIMIT32 if entry.zip64 else 0
    dos_time, dos_date = _dos_datetime(entry.mtime)
    return (
        struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            45 if entry.zip64 else 20,
            _FLAGS,
            0,  # stored
            dos_time,
            dos_date,
            0,
            sizes,
            sizes,
            len(name),
            len(extra),
        )
        + name
        + extra
    )


def _descriptor(entry: ZipEntry, crc: int) -> bytes:
    if entry.zip64:
        return struct.pack("<IIQQ", 0x08074B50, crc, entry.size, entry.size)
    return struct.pack("<IIII", 0x08074B50, crc, entry.size, entry.size)


def _central_directory(entries: list[ZipEntry], crcs: list[int]) -> Iterator[bytes]:
    offsets = []
    offset = 0
    for entry in entries:
        offsets.append(offset)
        offset += len(_local_header(entry)) + entry.size + (24 if entry.zip64 else 16)
    directory_start = offset
    directory_size = 0
    for entry, crc, local_offset in zip(entries, crcs, offsets):
        record = _central_record(entry, crc, local_offset)
        directory_size += len(record)
        yield record
    count = len(entries)
    needs64 = count >= _LIMIT16 or directory_start >= _LIMIT32 or directory_size >= _LIMIT32
    if needs64:
        end64_at = directory_start + directory_size
        yield struct.pack(
            "<IQHHIIQQQQ", 0x06064B50, 44, _MADE_BY, 45, 0, 0, count, count, directory_size, directory_start
        )
        yield struct.pack("<IIQI", 0x07064B50, 0, end64_at, 1)
    yield struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        min(count, _LIMIT16),
        min(count, _LIMIT16),
        min(directory_size, _LIMIT32),
        min(directory_start, _LIMIT32),
        0,
    )


def _central_record(entry: ZipEntry, crc: int, local_offset: int) -> bytes:
    name = entry.name.encode("utf-8")
    fields64 = []
    if entry.zip64:
        fields64 += [entry.size, entry.size]
    if local_offset >= _LIMIT32:
        fields64.append(local_offset)
    extra = struct.pack(f"<HH{len(fields64)}Q", 0x0001, 8 * len(fields64), *fields64) if fields64 else b""
    sizes = _LIMIT32 if entry.zip64 else entry.size
    dos_time, dos_date = _dos_datetime(entry.mtime)
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            _MADE_BY,
            45 if fields64 else 20,
            _FLAGS,
            0,
            dos_time,
            dos_date,
            crc,
            sizes,
            sizes,
            len(name),
            len(extra),
            0,
            0,
            0,
            _UNIX_FILE,
            min(local_offset, _LIMIT32),
        )
        + name
        + extra
    )


def _dos_datetime(mtime: float) -> tuple[int, int]:
    t = time.localtime(mtime)
    if t.tm_year < 1980:
        return 0, (1 << 5) | 1  # 1980-01-01, the earliest a ZIP can say
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((t.tm_year - 1980) << 9) | (
        t.tm_mon << 5
    ) | t.tm_mday


def _unique(name: str, used: set[str]) -> str:
    stem, dot, suffix = name.rpartition(".")
    candidate, number = name, 1
    while candidate in used:
        number += 1
        candidate = f"{stem} ({number}).{suffix}" if dot else f"{name} ({number})"
    used.add(candidate)
    return candidate


def batch_zip_name(batch_id: str) -> str:
    return f"koubo-batch-{batch_id[:8]}.zip"
