"""The link server: signed `/d/{job}/{name}` (a video) and `/z/{batch}/{name}` (a batch as a ZIP),
and, when turned on, a password-protected listing at `/downloads/`.

aiohttp on the default asyncio loop without TLS, so file bytes go out through the kernel's
sendfile(), for whole files, single ranges and the parts of multipart ranges alike. What to send
for a request (status, ranges, validators) is decided in `delivery.py`; this module checks the
link, applies the limits and moves the bytes. Every request, Range ones included, is checked in
full: name, signature, expiry, job, and that the file really lies inside outputs_dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import quote

from aiohttp import web

from koubo.auth.credentials import CredentialCheck, challenge_header
from koubo.auth.htpasswd import Htpasswd
from koubo.auth.throttle import LoginThrottle
from koubo.config import Settings
from koubo.errors import HTTP_STATUS_ERRORS, ErrorCode, KouboError, too_many_attempts
from koubo.jobs.service import JobService
from koubo.links.delivery import FileState, content_disposition, multipart_framing, plan_response
from koubo.links.egress import Egress, snapshot_path, write_snapshot
from koubo.links.listing import render_listing
from koubo.links.signing import Keyring, LinkError, batch_subject, malformed, verify
from koubo.links.transfer import ClientGone, Transfer
from koubo.links.zipstream import ZipEntry, zip_chunks, zip_entries, zip_size
from koubo.logs import OneLineRateLimit, setup_logging
from koubo.naming import is_link_name

# A link serves only a finished job's video, and a finished video is never rewritten: only failed,
# cancelled or timed-out jobs may be retried, and deleting a job removes the file for good. So a
# never-expiring link may be cached as immutable for the longest time HTTP caches honour: a year.
_FOREVER_MAX_AGE = 365 * 24 * 3600
_ZIP_CHUNK = 1024 * 1024
# A rate-limited transfer goes out in slices this many times a second, each still by sendfile().
_RATE_SLICES_PER_SECOND = 10
# A download whose client takes nothing for this long is dropped, freeing its thread.
_STALLED_CLIENT_SECONDS = 120
# Threads that move file bytes: one per transfer in progress.
_SENDER_THREADS = 256

_SETTINGS = web.AppKey("settings", Settings)
_SERVICE = web.AppKey("service", JobService)
_SLOTS = web.AppKey("slots", "DownloadSlots")
_AUTH = web.AppKey("auth", CredentialCheck)
_SENDERS = web.AppKey("senders", asyncio.Semaphore)
_THROTTLE = web.AppKey("throttle", LoginThrottle)
_EGRESS = web.AppKey("egress", Egress)
_SNAPSHOT_INTERVAL_S = 1.0
# A rate-limited slice's size when the cap is lifted mid-transfer (bytes per second).
_UNPACED = 1 << 40
_MAX_PAGE_DIGITS = 9
_log = logging.getLogger("koubo.links")


def outside_outputs() -> LinkError:
    # The same answer as a bad signature: nothing tells a prober what lies behind the link.
    return LinkError(
        ErrorCode.LINK_TAMPERED,
        "This download link does not lead to a koubo video.",
        "下载链接并未指向 koubo 生成的视频。",
    )


def too_many_downloads(limit: int) -> KouboError:
    return KouboError(
        ErrorCode.TOO_MANY_DOWNLOADS,
        f"At most {limit} downloads at a time from one address; wait for one to finish.",
        f"同一地址最多同时下载 {limit} 个；请等待其中一个完成。",
    )


def listing_needs_auth() -> KouboError:
    return KouboError(
        ErrorCode.LISTING_NEEDS_AUTH,
        "links_listing is on but htpasswd_file is not set: the listing is only served behind a password.",
        "已开启 links_listing 但未设置 htpasswd_file：下载列表只能在密码保护下提供。",
    )


class DownloadSlots:
    """Transfers in progress per client address, against an optional cap."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.active: Counter[str] = Counter()

    @contextmanager
    def take(self, address: str) -> Iterator[None]:
        if self.limit is not None and self.active[address] >= self.limit:
            raise too_many_downloads(self.limit)
        self.active[address] += 1
        try:
            yield
        finally:
            self.active[address] -= 1
            if not self.active[address]:
                del self.active[address]


def client_address(request: web.BaseRequest, trusted_proxies: list[str]) -> str:
    """The downloader's address: the peer's, or behind a trusted proxy the last hop it added."""
    peer = request.remote or ""
    if peer in trusted_proxies:
        hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return peer


def _error(status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": body}, status=status, headers={"Cache-Control": "no-store", **(headers or {})})


def _error_for(error: KouboError, headers: dict[str, str] | None = None) -> web.Response:
    status = error.status
    return _error(status, error.to_dict(), headers or ({"Retry-After": "5"} if status == 429 else None))


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and methods answer in the API's JSON error shape too; a client that left is let
    go quietly; anything else is one line in koubo's log and a JSON 500, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        code, en, zh = HTTP_STATUS_ERRORS[exc.status]
        response = _error(exc.status, {"code": code, "message_en": en, "message_zh": zh})
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except ConnectionError as gone:
        # Browsers drop downloads all the time (seeking in a video): nothing to answer or report.
        _log.debug("%s %s: %s", request.method, request.path, gone)
        return _hang_up(request)
    except Exception as error:
        # The path without the query: a signature has no place in a log.
        _log.error("%s %s failed: %s: %s", request.method, request.path, type(error).__name__, error)
        if request.writer.output_size > 0:
            return _hang_up(request)  # part of an answer is out: only closing tells the client
        code, en, zh = HTTP_STATUS_ERRORS[500]
        return _error(500, {"code": code, "message_en": en, "message_zh": zh})


def _hang_up(request: web.Request) -> web.StreamResponse:
    """Close the connection; aiohttp then finds nothing to write the returned answer to."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


def _check_names(*names: str) -> None:
    if not all(is_link_name(name) for name in names):
        raise malformed()


def _verify_query(settings: Settings, subject: str, name: str, query: dict[str, str]) -> int:
    try:
        exp, kid, sig = query["exp"], query["kid"], query["sig"]
    except KeyError:
        raise malformed() from None
    return verify(Keyring(settings.data_dir), subject, name, exp, kid, sig)


def _inside_outputs(settings: Settings, path: Path) -> Path:
    """`path` resolved, if it is a file inside outputs_dir; raises otherwise."""
    outputs = settings.outputs_dir.resolve()
    try:
        # strict: a dangling link fails here; resolved: a symlink that leads out of outputs_dir
        # is judged by where it leads.
        real = path.resolve(strict=True)
    except OSError:
        raise outside_outputs() from None
    if real == outputs or not real.is_relative_to(outputs) or not real.is_file():
        raise outside_outputs()
    return real


def _checked_file(settings: Settings, service: JobService, job_id: str, name: str, query: dict[str, str]) -> Path:
    """The file a link leads to, resolved; raises KouboError. Blocking (file and database reads)."""
    _check_names(job_id, name)
    _verify_query(settings, job_id, name, query)
    path, download_name = service.output_file(job_id)
    if name != download_name:
        raise malformed()
    return _inside_outputs(settings, path)


def _checked_batch(
    settings: Settings, service: JobService, batch_id: str, name: str, query: dict[str, str]
) -> list[ZipEntry]:
    """The finished videos of a batch a ZIP link leads to, as they are now. Blocking."""
    _check_names(batch_id, name)
    _verify_query(settings, batch_subject(batch_id), name, query)
    files = [(_inside_outputs(settings, path), shown) for path, shown in service.batch_outputs(batch_id)]
    return zip_entries(files)


def _cache_control(query: dict[str, str]) -> str:
    exp = int(query["exp"])
    max_age = _FOREVER_MAX_AGE if exp == 0 else max(0, exp - int(time.time()))
    return f"public, max-age={max_age}, immutable"


T = TypeVar("T")


async def _in_thread(call: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, call)


async def _download(request: web.Request) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    job_id, name = request.match_info["job"], request.match_info["name"]
    query = dict(request.query)
    check = functools.partial(_checked_file, settings, request.app[_SERVICE], job_id, name, query)
    try:
        real = await _in_thread(check)
    except KouboError as error:
        return _error_for(error)
    headers = {
        "Content-Disposition": content_disposition(
            name, fallback=f"koubo-{job_id}.mp4", inline=query.get("inline") == "1"
        ),
        "Cache-Control": _cache_control(query),
    }
    if settings.links_accel_redirect:
        return _accel_redirect(settings, real, headers)
    address = client_address(request, settings.links_trusted_proxies)
    egress = request.app[_EGRESS]
    whole = request.method == "GET" and _starts_at_zero(request.headers.get("Range"))
    try:
        with request.app[_SLOTS].take(address), egress.transfer(f"{job_id}/{name}", whole):
            return await _send_file(request, real, headers, _pace(settings.links_rate_limit, egress))
    except KouboError as error:
        return _error_for(error)


def _starts_at_zero(range_header: str | None) -> bool:
    """A request that fetches a file from its first byte: a download, not a resumed or parallel part."""
    if range_header is None:
        return True
    unit, _, ranges = range_header.partition("=")
    return unit.strip().lower() != "bytes" or ranges.strip().startswith("0-")


def _pace(per_download: int | None, egress: Egress) -> Callable[[], int | None] | None:
    """The bytes per second a transfer may use, asked again for every slice (the fair share of
    links_egress_cap changes as downloads come and go); None: as fast as the kernel sends."""
    if per_download is None and egress.cap is None:
        return None

    def rate() -> int | None:
        share = egress.share()
        return per_download if share is None else share if per_download is None else min(share, per_download)

    return rate


def _accel_redirect(settings: Settings, real: Path, headers: dict[str, str]) -> web.Response:
    """nginx sends the file from its internal location; Range and conditionals are then its work."""
    relative = real.relative_to(settings.outputs_dir.resolve()).as_posix()
    location = settings.links_accel_redirect.rstrip("/") + "/" + quote(relative)  # type: ignore[union-attr]
    return web.Response(status=200, headers={**headers, "Content-Type": "video/mp4", "X-Accel-Redirect": location})


async def _send_file(
    request: web.Request, path: Path, headers: dict[str, str], rate: Callable[[], int | None] | None
) -> web.StreamResponse:
    source = await _in_thread(functools.partial(path.open, "rb"))
    try:
        st = await _in_thread(functools.partial(_fstat, source))
        plan = plan_response(request.headers, st, "video/mp4")
        if plan.status in (200, 206):
            response = web.StreamResponse(status=plan.status, headers={**headers, **plan.headers})
        else:
            response = web.StreamResponse(
                status=plan.status, headers={"Cache-Control": headers["Cache-Control"], **plan.headers}
            )
        await response.prepare(request)
        if request.method == "HEAD" or not plan.has_body:
            await response.write_eof()
            return response
        if plan.boundary is not None:
            ranges = list(plan.ranges)
            framing = multipart_framing(ranges, st.size, "video/mp4", plan.boundary)
            for head, (first, last) in zip(framing, ranges):
                await response.write(head)
                await _send_bytes(request, source, first, last - first + 1, rate)
            await response.write(framing[-1])
        elif plan.ranges:
            first, last = plan.ranges[0]
            await _send_bytes(request, source, first, last - first + 1, rate)
        else:
            await _send_bytes(request, source, 0, st.size, rate)
        await response.write_eof()
        return response
    finally:
        source.close()


def _fstat(source: IO[bytes]) -> FileState:
    st = os.fstat(source.fileno())
    return FileState(st.st_size, st.st_mtime_ns)


async def _send_bytes(
    request: web.Request, source: IO[bytes], offset: int, count: int, rate: Callable[[], int | None] | None
) -> None:
    """`count` bytes of `source` from `offset`, by sendfile(), paced to `rate()` bytes/s when given."""
    loop = asyncio.get_running_loop()
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ClientGone("the client went away")
    if rate is None:
        # What aiohttp queued in the transport (the headers, a multipart delimiter) must reach the
        # socket before sendfile() writes to it directly, or it would arrive after the file's bytes.
        while transport.get_write_buffer_size():
            if transport.is_closing():
                raise ClientGone("the client went away")
            await asyncio.sleep(0.001)
        await _run_transfer(request, source, offset, count)
        return
    # loop.sendfile() runs in the loop's own thread, on the transport's socket object: the loop
    # cannot close it in the middle of a call, and a closed socket object has no number to reuse.
    egress = request.app[_EGRESS]
    sent = 0
    while sent < count:
        allowed = rate() or _UNPACED
        size = min(max(16 * 1024, allowed // _RATE_SLICES_PER_SECOND), count - sent)
        started = loop.time()
        await loop.sendfile(transport, source, offset + sent, size)
        sent += size
        egress.sent(size)
        ahead = size / allowed - (loop.time() - started)
        if ahead > 0 and sent < count:
            await asyncio.sleep(ahead)


async def _run_transfer(request: web.Request, source: IO[bytes], offset: int, count: int) -> None:
    """A Transfer in a thread of its own, at most _SENDER_THREADS at once; stopped if this request is
    abandoned. One thread per transfer, ended with it, rather than a pool: idle threads would
    outlive a burst. The duplicates are made only once it may start, so waiting ones hold none."""
    async with request.app[_SENDERS]:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ClientGone("the client went away")
        transfer = Transfer(
            transport.get_extra_info("socket"),
            source,
            offset,
            count,
            _STALLED_CLIENT_SECONDS,
            on_sent=request.app[_EGRESS].sent,
        )
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def run() -> None:
            outcome: BaseException | None = None
            try:
                transfer.run()
            except BaseException as error:  # handed to the waiting request, raised there
                outcome = error
            # The loop is closed only when the server stops, and then nobody waits for the answer.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done, outcome)

        thread = threading.Thread(target=run, name="koubo-sendfile", daemon=True)
        try:
            thread.start()
        except BaseException:
            transfer.stop()
            raise
        try:
            await done
        except asyncio.CancelledError:
            transfer.stop()
            raise


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


async def _batch_zip(request: web.Request) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    batch_id, name = request.match_info["batch"], request.match_info["name"]
    query = dict(request.query)
    check = functools.partial(_checked_batch, settings, request.app[_SERVICE], batch_id, name, query)
    address = client_address(request, settings.links_trusted_proxies)
    try:
        entries = await _in_thread(check)
        with request.app[_SLOTS].take(address):
            return await _send_zip(request, entries, name, query)
    except KouboError as error:
        return _error_for(error)


async def _send_zip(
    request: web.Request, entries: list[ZipEntry], name: str, query: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Length": str(zip_size(entries)),
            "Content-Disposition": content_disposition(name, fallback=name),
            # Each CRC is computed as the data goes out, so a byte range cannot be served without
            # reading everything before it: resumable downloads are the per-video links' job.
            "Accept-Ranges": "none",
            "Cache-Control": "private, no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    if request.method == "HEAD":
        await response.write_eof()
        return response
    chunks = zip_chunks(entries, _ZIP_CHUNK)
    while (chunk := await _in_thread(functools.partial(next, chunks, None))) is not None:
        await response.write(chunk)
    await response.write_eof()
    return response


async def _listing(request: web.Request) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    throttle = request.app[_THROTTLE]
    address = client_address(request, settings.links_trusted_proxies)
    if wait := throttle.retry_after(address):
        return _error_for(too_many_attempts(math.ceil(wait)), {"Retry-After": str(math.ceil(wait))})
    authorization = request.headers.get("Authorization", "")
    if not await request.app[_AUTH].allowed(authorization.encode()):
        if authorization:  # a browser's first request carries none: only a wrong password counts
            throttle.failed(address)
        code, en, zh = HTTP_STATUS_ERRORS[401]
        return _error(401, {"code": code, "message_en": en, "message_zh": zh}, challenge_header())
    throttle.succeeded(address)
    try:
        page = _page_number(request.query.get("page", "1"))
    except KouboError as error:
        return _error_for(error)
    html = await _in_thread(functools.partial(render_listing, settings, request.app[_SERVICE], page))
    return web.Response(
        text=html, content_type="text/html", charset="utf-8", headers={"Cache-Control": "private, no-store"}
    )


def _page_number(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_PAGE_DIGITS and int(text) >= 1):
        raise bad_page(text)
    return int(text)


def bad_page(text: str) -> KouboError:
    shown = text if len(text) <= 20 else text[:20] + "…"
    return KouboError(
        ErrorCode.INVALID_PARAMETER,
        f"The page number must be a whole number from 1 to {10**_MAX_PAGE_DIGITS - 1}, not “{shown}”.",
        f"页码必须是 1 到 {10**_MAX_PAGE_DIGITS - 1} 之间的整数，而不是“{shown}”。",
    )


async def _egress_snapshots(app: web.Application) -> AsyncIterator[None]:
    """Every second, this server's figures into the data folder, for /metrics and the UI."""
    settings = app[_SETTINGS]
    path = snapshot_path(settings.data_dir, settings.links_port)

    async def keep_writing() -> None:
        while True:
            try:
                await _in_thread(functools.partial(write_snapshot, path, app[_EGRESS].snapshot()))
            except OSError as error:
                _log.warning("cannot write the egress figures to %s: %s", path, error)
            await asyncio.sleep(_SNAPSHOT_INTERVAL_S)

    task = asyncio.create_task(keep_writing())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    path.unlink(missing_ok=True)


def create_links_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[_SETTINGS] = settings
    app[_SLOTS] = DownloadSlots(settings.links_max_per_ip)
    app[_EGRESS] = Egress(settings.links_egress_cap, settings.links_downloads_per_link)

    async def job_service(app: web.Application) -> AsyncIterator[None]:
        service = JobService(settings)
        app[_SERVICE] = service
        app[_SENDERS] = asyncio.Semaphore(_SENDER_THREADS)
        yield
        service.close()

    app.cleanup_ctx.append(job_service)
    app.cleanup_ctx.append(_egress_snapshots)
    # add_get also answers HEAD with the same handler (headers, no body).
    app.router.add_get("/d/{job}/{name}", _download)
    app.router.add_get("/z/{batch}/{name}", _batch_zip)
    if settings.links_listing:
        if settings.htpasswd_file is None:
            raise listing_needs_auth()
        app[_AUTH] = CredentialCheck(Htpasswd.load(settings.htpasswd_file))
        app[_THROTTLE] = LoginThrottle(settings.login_max_failures, settings.login_backoff, settings.login_backoff_max)
        app.router.add_get("/downloads/", _listing)
    return app


def run_links(settings: Settings) -> None:
    """Serve on settings.host:settings.links_port until Ctrl-C or SIGTERM."""
    app = create_links_app(settings)
    setup_logging(settings)
    # What strangers can make these loggers say goes to koubo's log one line at a time, and not
    # faster than the filter lets through.
    for name in ("koubo.links", "aiohttp.server", "aiohttp.web"):
        logging.getLogger(name).addFilter(OneLineRateLimit())
    print(f"koubo links: serving on http://{settings.host}:{settings.links_port}/d/...", flush=True)
    web.run_app(
        app,
        host=settings.host,
        port=settings.links_port,
        print=None,
        access_log=None,
        # aiohttp drops a connection that has not sent a whole request head within its keep-alive
        # time, counted from the connection's start and from each answer: that is the header
        # timeout. A body nobody reads (every route here is GET) is drained for no longer either.
        keepalive_timeout=settings.http_header_timeout,
        lingering_time=settings.http_header_timeout,
    )
