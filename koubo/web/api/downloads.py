"""How files leave the server: the Content-Disposition header, and a batch's videos as a streamed ZIP."""

from __future__ import annotations

import io
import re
import time
import unicodedata
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9._() -]+")
_ZIP_CHUNK = 1024 * 1024


def _ascii(text: str) -> str:
    return _UNSAFE_ASCII.sub("_", unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()).strip(" ._")


def content_disposition(name: str, *, fallback: str, inline: bool = False) -> str:
    """RFC 6266: an ASCII `filename` for old clients, the exact name as UTF-8 in `filename*` (RFC 5987)."""
    stem, _, suffix = name.rpartition(".") if "." in name else (name, "", "")
    ascii_stem, ascii_suffix = _ascii(stem), _ascii(suffix)
    # An all-Chinese name leaves nothing readable: a stable name beats "__.mp4".
    if not any(ch.isalnum() for ch in ascii_stem):
        ascii_name = fallback
    else:
        ascii_name = f"{ascii_stem}.{ascii_suffix}" if ascii_suffix else ascii_stem
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream: zipfile then writes sizes after each file's data, as streaming needs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_stream(files: list[tuple[Path, str]]) -> Iterator[bytes]:
    """A ZIP (stored: H.264 does not compress further; ZIP64: outputs may pass 4 GiB) of (path, name in the ZIP)."""
    sink = _Sink()
    used: set[str] = set()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path, name in files:
            entry = zipfile.ZipInfo(_unique(name, used), date_time=time.localtime(path.stat().st_mtime)[:6])
            with path.open("rb") as source, archive.open(entry, "w", force_zip64=True) as target:
                while chunk := source.read(_ZIP_CHUNK):
                    target.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def _unique(name: str, used: set[str]) -> str:
    stem, dot, suffix = name.rpartition(".")
    candidate, number = name, 1
    while candidate in used:
        number += 1
        candidate = f"{stem} ({number}).{suffix}" if dot else f"{name} ({number})"
    used.add(candidate)
    return candidate
