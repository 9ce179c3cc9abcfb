"""Every error the web app returns has one shape: {"error": {"code", "message_en", "message_zh"}}.

API clients switch on `code`; people read the message in their language. The status of each code
is in koubo/errors.py's one table (ErrorCode), which the link server answers with too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from koubo.errors import HTTP_STATUS_ERRORS, ErrorCode, KouboError, validation_messages

log = logging.getLogger(__name__)


def _human_size(size: int) -> str:
    value, unit = float(size), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.3g} {unit}"


class UploadTooLarge(KouboError):
    """An upload that would exceed `upload_max_bytes`; noticed before or while it streams in."""

    def __init__(self, limit: int) -> None:
        size = _human_size(limit)
        super().__init__(
            ErrorCode.TOO_LARGE, f"The file is larger than the allowed {size}.", f"文件超过允许的大小（{size}）。"
        )


class RequestTooLarge(KouboError):
    """A request body (other than an upload) over `request_max_bytes`."""

    def __init__(self, limit: int) -> None:
        size = _human_size(limit)
        super().__init__(
            ErrorCode.TOO_LARGE,
            f"The request body is larger than the allowed {size}.",
            f"请求体超过允许的大小（{size}）。",
        )


class RequestTimeout(KouboError):
    """A request body that stopped arriving: a client too slow to keep a connection for."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            ErrorCode.REQUEST_TIMEOUT,
            f"The request body stopped arriving for {seconds:.0f} s; the connection was closed.",
            f"请求体已有 {seconds:.0f} 秒没有继续传输，连接已关闭。",
        )


class InvalidRequest(KouboError):
    """A request that does not have the shape the endpoint expects (also FastAPI's validation errors);
    `en` and `zh` say what is wrong, each a whole sentence."""

    def __init__(self, en: str, zh: str) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, f"Invalid request. {en}", f"请求无效。{zh}")


def error_response(
    status: int, error: KouboError | Mapping[str, str], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = error.to_dict() if isinstance(error, KouboError) else dict(error)
    return JSONResponse({"error": body}, status_code=status, headers=dict(headers or {}))


async def _koubo_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KouboError)
    status = exc.status
    # Upload errors can arrive before the body was read; closing stops the client from sending the rest.
    headers = {"Connection": "close"} if status in (413, 507) else None
    return error_response(status, exc, headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only loc/msg/type: `ctx` may hold the raw exception object, which JSON cannot carry.
    details = [
        {
            "loc": [str(part) for part in problem.get("loc", ())],
            "msg": problem.get("msg", ""),
            "type": problem.get("type", ""),
        }
        for problem in exc.errors()
    ]
    en, zh = validation_messages(list(exc.errors()))
    # A malformed body is 422 (FastAPI's convention, kept for clients); a bad query, path or header
    # value (an absurd ?offset=, an empty ?limit=) is a plain 400.
    status = 422 if any(d["loc"][:1] == ["body"] for d in details) else 400
    return JSONResponse({"error": {**InvalidRequest(en, zh).to_dict(), "details": details}}, status_code=status)


def http_error(status: int, headers: Mapping[str, str] | None = None, detail: str | None = None) -> JSONResponse:
    # Starlette's and FastAPI's own details are English only; the Chinese says what the status means.
    fallback = f"{(detail or HTTPStatus(status).phrase).rstrip('.')}."
    code, en, zh = HTTP_STATUS_ERRORS.get(status, (ErrorCode.HTTP_ERROR, fallback, f"请求未能完成（HTTP {status}）。"))
    return error_response(status, {"code": code, "message_en": en, "message_zh": zh}, headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return http_error(exc.status_code, exc.headers, str(exc.detail))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    code, en, zh = HTTP_STATUS_ERRORS[500]
    return error_response(500, {"code": code, "message_en": en, "message_zh": zh})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KouboError, _koubo_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
