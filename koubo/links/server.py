"""The link server: GET and HEAD `/d/{job}/{name}` with a valid signature send the job's video.

aiohttp on the default asyncio loop without TLS, so FileResponse hands the file to the kernel's
sendfile(); it also answers Range (206/416), conditional requests (ETag, Last-Modified, 304) and
If-Range. Every request, Range ones included, is checked in full: name, signature, expiry, job,
and that the file really lies inside outputs_dir.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from multidict import CIMultiDict

from koubo.config import Settings
from koubo.errors import HTTP_STATUS_ERRORS, KouboError
from koubo.jobs.service import JobService
from koubo.links.signing import Keyring, LinkError, verify
from koubo.web.api.downloads import content_disposition

# A link serves only a finished job's video, and a finished video is never rewritten: only failed,
# cancelled or timed-out jobs may be retried, and deleting a job removes the file for good. So a
# never-expiring link may be cached as immutable for the longest time HTTP caches honour: a year.
_FOREVER_MAX_AGE = 365 * 24 * 3600
_FORBIDDEN_IN_NAMES = ("..", "/", "\\", "\x00")

_STATUS_BY_CODE = {
    "link_invalid": 400,
    "link_tampered": 403,
    "link_expired": 410,
    "not_found": 404,
    "no_output": 404,
}

_SETTINGS = web.AppKey("settings", Settings)
_SERVICE = web.AppKey("service", JobService)


def invalid_link() -> LinkError:
    return LinkError("link_invalid", "This download link is malformed.", "下载链接格式错误。")


def outside_outputs() -> LinkError:
    # The same answer as a bad signature: nothing tells a prober what lies behind the link.
    return LinkError(
        "link_tampered",
        "This download link does not lead to a koubo video.",
        "下载链接并未指向 koubo 生成的视频。",
    )


def _error(status: int, body: dict[str, str]) -> web.Response:
    return web.json_response({"error": body}, status=status, headers={"Cache-Control": "no-store"})


def _error_for(error: KouboError) -> web.Response:
    return _error(_STATUS_BY_CODE.get(error.code, 400), error.to_dict())


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and methods answer in the API's JSON error shape too."""
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


def _checked_file(settings: Settings, service: JobService, job_id: str, name: str, query: dict[str, str]) -> Path:
    """The file a link leads to, resolved; raises KouboError. Blocking (file and database reads)."""
    if any(part in name or part in job_id for part in _FORBIDDEN_IN_NAMES) or not name or not job_id:
        raise invalid_link()
    try:
        exp, kid, sig = query["exp"], query["kid"], query["sig"]
    except KeyError:
        raise invalid_link() from None
    verify(Keyring(settings.data_dir), job_id, name, exp, kid, sig)
    path, download_name = service.output_file(job_id)
    if name != download_name:
        raise invalid_link()
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


async def _download(request: web.Request) -> web.StreamResponse:
    settings: Settings = request.app[_SETTINGS]
    job_id, name = request.match_info["job"], request.match_info["name"]
    check = functools.partial(_checked_file, settings, request.app[_SERVICE], job_id, name, dict(request.query))
    try:
        real = await asyncio.get_running_loop().run_in_executor(None, check)
    except KouboError as error:
        return _error_for(error)
    exp = int(request.query["exp"])
    max_age = _FOREVER_MAX_AGE if exp == 0 else max(0, exp - int(time.time()))
    inline = request.query.get("inline") == "1"
    headers = {
        "Content-Type": "video/mp4",
        "Content-Disposition": content_disposition(name, fallback=f"koubo-{job_id}.mp4", inline=inline),
        "Cache-Control": f"public, max-age={max_age}, immutable",
        "Accept-Ranges": "bytes",
    }
    # The resolved path: FileResponse then opens the checked file itself, not a symlink to it.
    response = web.FileResponse(real, headers=headers)
    if_range = request.headers.get("If-Range", "")
    if if_range.startswith(('"', "W/")):
        # aiohttp reads If-Range only as a date and would honour Range whatever entity tag came
        # with it, and a resuming client would then splice bytes of two different files. RFC 9110
        # 13.1.5: unless the tag strongly matches (a weak one never does), the whole file, 200.
        st = await asyncio.get_running_loop().run_in_executor(None, real.stat)
        current = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'  # the ETag FileResponse sends (aiohttp's formula)
        dropped = {"if-range"} if if_range == current else {"if-range", "range"}
        kept = CIMultiDict((key, value) for key, value in request.headers.items() if key.lower() not in dropped)
        await response.prepare(request.clone(headers=kept))
    return response


def create_links_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[_SETTINGS] = settings

    async def job_service(app: web.Application) -> AsyncIterator[None]:
        service = JobService(settings)
        app[_SERVICE] = service
        yield
        service.close()

    app.cleanup_ctx.append(job_service)
    # add_get also answers HEAD with the same handler (headers, no body).
    app.router.add_get("/d/{job}/{name}", _download)
    return app


def run_links(settings: Settings) -> None:
    """Serve on settings.host:settings.links_port until Ctrl-C or SIGTERM."""
    print(f"koubo links: serving on http://{settings.host}:{settings.links_port}/d/...", flush=True)
    web.run_app(create_links_app(settings), host=settings.host, port=settings.links_port, print=None)
