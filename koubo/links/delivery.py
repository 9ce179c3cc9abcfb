"""What to send for a request for a file: status, byte ranges and validators (RFC 9110 13 and 14),
and the Content-Disposition that names it.

Pure functions over the request's headers and the file's size and mtime, so every rule of
conditional and range requests lives here once and is tested without a server. The link server
turns the plan into bytes with the kernel's sendfile().
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import quote

# More parts than this in one Range header is a scan, not a download: the whole file is cheaper
# for both sides (RFC 9110 14.2 lets a server ignore Range).
MAX_RANGES = 16
_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9._() -]+")
# str.isdigit() also takes "²" and "١", which int() then refuses or reads: only 0-9 count.
_ASCII_DIGITS = re.compile(r"[0-9]+")
_FAR = 18
_BEYOND_ANY_FILE = 10**_FAR


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


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int

    @property
    def etag(self) -> str:
        # Strong: an output is never rewritten, and a new file has a new mtime or size.
        return f'"{self.mtime_ns:x}-{self.size:x}"'

    @property
    def last_modified(self) -> str:
        return format_datetime(datetime.fromtimestamp(self.mtime_ns // 1_000_000_000, UTC), usegmt=True)


@dataclass(frozen=True)
class Plan:
    status: int  # 200, 206, 304, 412 or 416
    ranges: tuple[tuple[int, int], ...] = ()  # (first, last) inclusive; empty means the whole file
    headers: dict[str, str] = field(default_factory=dict)
    boundary: str | None = None  # multipart/byteranges when more than one range

    @property
    def has_body(self) -> bool:
        return self.status in (200, 206)


def plan_response(request: Mapping[str, str], state: FileState, content_type: str) -> Plan:
    """The response to GET or HEAD `request` (case-insensitive header lookup) for a file in `state`."""
    validators = {"ETag": state.etag, "Last-Modified": state.last_modified}
    precondition = _preconditions(request, state)
    if precondition == 412:
        return Plan(412, headers=validators)
    if precondition == 304:
        return Plan(304, headers=validators)
    headers = {**validators, "Accept-Ranges": "bytes", "Content-Type": content_type}
    spec = request.get("Range")
    if spec is None or not _if_range_holds(request.get("If-Range"), state):
        return Plan(200, headers={**headers, "Content-Length": str(state.size)})
    ranges = parse_ranges(spec, state.size)
    if ranges is None:
        return Plan(200, headers={**headers, "Content-Length": str(state.size)})
    if not ranges:
        return Plan(416, headers={"Content-Range": f"bytes */{state.size}"})
    if len(ranges) == 1:
        first, last = ranges[0]
        headers |= {"Content-Range": f"bytes {first}-{last}/{state.size}", "Content-Length": str(last - first + 1)}
        return Plan(206, ranges=tuple(ranges), headers=headers)
    boundary = secrets.token_hex(12)
    length = sum(len(part) for part in multipart_framing(ranges, state.size, content_type, boundary))
    length += sum(last - first + 1 for first, last in ranges)
    headers |= {"Content-Type": f"multipart/byteranges; boundary={boundary}", "Content-Length": str(length)}
    return Plan(206, ranges=tuple(ranges), headers=headers, boundary=boundary)


def parse_ranges(spec: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of a `Range` value, clipped to the file; None when the header is to be
    ignored (another unit, bad syntax, too many parts): the whole file is sent then."""
    unit, _, sets = spec.partition("=")
    if unit.strip().lower() != "bytes" or not sets.strip():
        return None
    parts = [part.strip() for part in sets.split(",") if part.strip()]
    if not parts or len(parts) > MAX_RANGES:
        return None
    ranges = []
    for part in parts:
        start, dash, end = part.partition("-")
        if not dash or not _is_position(start) or not _is_position(end):
            return None
        if start == "":
            if end == "":
                return None
            suffix = _position(end)
            if suffix > 0 and size > 0:
                ranges.append((max(0, size - suffix), size - 1))
            continue
        first = _position(start)
        if end != "" and _position(end) < first:
            return None  # syntactically invalid (RFC 9110 14.1.1)
        if first < size:
            ranges.append((first, size - 1 if end == "" else min(_position(end), size - 1)))
    return ranges


def _is_position(text: str) -> bool:
    return text == "" or _ASCII_DIGITS.fullmatch(text) is not None


def _position(digits: str) -> int:
    """A byte position from its ASCII digits, however many: past _FAR digits it lies beyond any
    file, and converting thousands of digits would be slow (and is refused past 4300)."""
    digits = digits.lstrip("0") or "0"
    return _BEYOND_ANY_FILE if len(digits) > _FAR else int(digits)


def multipart_framing(ranges: list[tuple[int, int]], size: int, content_type: str, boundary: str) -> list[bytes]:
    """The bytes before each part's data, then the closing delimiter: len(ranges) + 1 pieces."""
    heads = [
        f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {first}-{last}/{size}\r\n\r\n"
        for first, last in ranges
    ]
    return [head.encode("ascii") for head in heads] + [f"\r\n--{boundary}--\r\n".encode("ascii")]


def _preconditions(request: Mapping[str, str], state: FileState) -> int | None:
    """RFC 9110 13.2.2, in its order; 412, 304 or None (go on)."""
    seconds = state.mtime_ns // 1_000_000_000
    if_match = request.get("If-Match")
    if if_match is not None:
        failed = not _etag_matches(if_match, state.etag, weak=False)
    else:
        unmodified = _http_date(request.get("If-Unmodified-Since"))
        failed = unmodified is not None and seconds > unmodified
    if failed:
        return 412
    if_none_match = request.get("If-None-Match")
    if if_none_match is not None:
        fresh = _etag_matches(if_none_match, state.etag, weak=True)
    else:
        modified = _http_date(request.get("If-Modified-Since"))
        fresh = modified is not None and seconds <= modified
    return 304 if fresh else None


def _if_range_holds(value: str | None, state: FileState) -> bool:
    """Whether Range applies: no If-Range, or it names this very file (a strong tag, or its exact date)."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        # A weak tag never matches here: a resumed download must splice bytes of one file only.
        return value == state.etag
    date = _http_date(value)
    return date is not None and date == state.mtime_ns // 1_000_000_000


def _etag_matches(header: str, etag: str, *, weak: bool) -> bool:
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        tag = candidate.strip()
        if weak and tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def _http_date(value: str | None) -> int | None:
    """Unix seconds of an HTTP date; None when absent or unparseable (the header is then ignored)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())
