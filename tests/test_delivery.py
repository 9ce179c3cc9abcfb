"""The HTTP rules of file delivery (delivery.py) and the streamed ZIP (zipstream.py), in process."""

from __future__ import annotations

import io
import os
import zipfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from koubo.links.delivery import MAX_RANGES, FileState, content_disposition, plan_response
from koubo.links.zipstream import ZipSourceChanged, zip_chunks, zip_entries, zip_size

STATE = FileState(size=1000, mtime_ns=1_700_000_000_123_456_789)
WHEN = datetime.fromtimestamp(1_700_000_000, UTC)


def plan(**headers: str):
    return plan_response({key.replace("_", "-"): value for key, value in headers.items()}, STATE, "video/mp4")


def test_whole_file_with_validators():
    result = plan()
    assert result.status == 200 and result.ranges == ()
    assert result.headers["Content-Length"] == "1000"
    assert result.headers["ETag"] == STATE.etag and result.headers["Accept-Ranges"] == "bytes"
    assert result.headers["Last-Modified"] == format_datetime(WHEN, usegmt=True)


@pytest.mark.parametrize(
    ("spec", "ranges"),
    [
        ("bytes=0-0", [(0, 0)]),
        ("bytes=990-", [(990, 999)]),
        ("bytes=-10", [(990, 999)]),
        ("bytes=-5000", [(0, 999)]),
        ("bytes=900-5000", [(900, 999)]),
        ("BYTES = 5-9", [(5, 9)]),
    ],
)
def test_single_ranges(spec, ranges):
    result = plan(Range=spec)
    assert result.status == 206 and list(result.ranges) == ranges
    first, last = ranges[0]
    assert result.headers["Content-Range"] == f"bytes {first}-{last}/1000"
    assert result.headers["Content-Length"] == str(last - first + 1)


def test_multiple_ranges_are_multipart_with_an_exact_length():
    result = plan(Range="bytes=0-9, 500-509,-5")
    assert result.status == 206 and list(result.ranges) == [(0, 9), (500, 509), (995, 999)]
    assert result.headers["Content-Type"] == f"multipart/byteranges; boundary={result.boundary}"
    framing = f"\r\n--{result.boundary}\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-9/1000\r\n\r\n"
    assert int(result.headers["Content-Length"]) > 25 + 3 * len(framing)


def test_unsatisfiable_and_ignored_ranges():
    assert plan(Range="bytes=1000-").status == 416
    assert plan(Range="bytes=1000-").headers["Content-Range"] == "bytes */1000"
    assert plan(Range="bytes=2000-3000, 1500-").status == 416
    # Satisfiable parts survive, unsatisfiable ones are dropped.
    assert list(plan(Range="bytes=2000-3000, 0-1").ranges) == [(0, 1)]
    # Bad syntax, other units and scans get the whole file.
    for spec in ("bytes=9-1", "bytes=a-b", "bytes=-", "items=0-1", "bytes=", ",".join(["bytes=0-0"] * 2)):
        assert plan(Range=spec).status in (200, 206), spec
    assert plan(Range="bytes=9-1").status == 200
    scan = "bytes=" + ",".join(f"{i}-{i}" for i in range(MAX_RANGES + 1))
    assert plan(Range=scan).status == 200


def test_conditional_requests():
    assert plan(If_None_Match=STATE.etag).status == 304
    assert plan(If_None_Match=f'"x", W/{STATE.etag}').status == 304  # weak comparison for GET
    assert plan(If_None_Match="*").status == 304
    assert plan(If_None_Match='"other"').status == 200
    assert plan(If_Modified_Since=format_datetime(WHEN, usegmt=True)).status == 304
    assert plan(If_Modified_Since=format_datetime(WHEN - timedelta(seconds=1), usegmt=True)).status == 200
    # If-None-Match wins over If-Modified-Since.
    assert plan(If_None_Match='"other"', If_Modified_Since=format_datetime(WHEN, usegmt=True)).status == 200
    assert plan(If_Match='"other"').status == 412
    assert plan(If_Match=f"W/{STATE.etag}").status == 412  # strong comparison
    assert plan(If_Match=STATE.etag, Range="bytes=0-1").status == 206
    assert plan(If_Unmodified_Since=format_datetime(WHEN - timedelta(days=1), usegmt=True)).status == 412
    assert plan(If_Modified_Since="not a date").status == 200


def test_if_range():
    assert plan(Range="bytes=0-9", If_Range=STATE.etag).status == 206
    assert plan(Range="bytes=0-9", If_Range=f"W/{STATE.etag}").status == 200
    assert plan(Range="bytes=0-9", If_Range='"stale"').status == 200
    assert plan(Range="bytes=0-9", If_Range=format_datetime(WHEN, usegmt=True)).status == 206
    assert plan(Range="bytes=0-9", If_Range=format_datetime(WHEN + timedelta(hours=1), usegmt=True)).status == 200


def test_content_disposition_keeps_unicode_names():
    header = content_disposition("主播 问候.mp4", fallback="koubo-1.mp4")
    assert (
        header == "attachment; filename=\"koubo-1.mp4\"; filename*=UTF-8''%E4%B8%BB%E6%92%AD%20%E9%97%AE%E5%80%99.mp4"
    )
    assert content_disposition("Talk №1.mp4", fallback="x", inline=True).startswith('inline; filename="Talk No1.mp4"')


# --- ZIP ------------------------------------------------------------------------------------------------------


def test_zip_is_stored_unique_utf8_and_exactly_as_long_as_announced(tmp_path):
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    first.write_bytes(os.urandom(300_000))
    second.write_bytes(b"")
    entries = zip_entries([(first, "主播.mp4"), (second, "主播.mp4"), (first, "other")])
    data = b"".join(zip_chunks(entries, chunk=65536))
    assert len(data) == zip_size(entries)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert [info.filename for info in archive.infolist()] == ["主播.mp4", "主播 (2).mp4", "other"]
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert archive.read("主播.mp4") == first.read_bytes() and archive.read("主播 (2).mp4") == b""
    assert b"PK\x06\x06" not in data  # no ZIP64 records where none are needed


def test_zip_refuses_a_file_that_changed_size(tmp_path):
    source = tmp_path / "a.mp4"
    source.write_bytes(b"x" * 1000)
    entries = zip_entries([(source, "a.mp4")])
    source.write_bytes(b"x" * 10)
    with pytest.raises(ZipSourceChanged):
        b"".join(zip_chunks(entries))


def test_zip64_beyond_4_gib(tmp_path):
    """A sparse 4.1 GiB file: the archive switches to ZIP64 and unzips with the right CRC."""
    big = tmp_path / "big.mp4"
    with big.open("wb") as out:
        out.truncate(4 * 2**30 + 100 * 2**20)
        out.seek(2**32 + 5)
        out.write(b"tail marker")
    small = tmp_path / "small.mp4"
    small.write_bytes(b"after the big one")
    entries = zip_entries([(big, "big.mp4"), (small, "small.mp4")])
    target = tmp_path / "out.zip"
    written = 0
    with target.open("wb") as out:
        for chunk in zip_chunks(entries, chunk=8 * 2**20):
            # Runs of zeros become holes, so the test needs no 4 GiB of disk.
            if chunk.count(0) == len(chunk):
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
            written += len(chunk)
        out.truncate(written)
    assert written == zip_size(entries) == target.stat().st_size
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo("big.mp4")
        assert info.file_size == big.stat().st_size
        assert archive.read("small.mp4") == b"after the big one"
        with archive.open(info) as member:  # reading to the end checks the CRC
            member.seek(2**32)
            assert member.read(16) == b"\0" * 5 + b"tail marker"
            while member.read(64 * 2**20):
                pass
