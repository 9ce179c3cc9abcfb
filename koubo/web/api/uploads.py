"""POST /api/uploads: a multipart upload streamed to disk, size-limited, then handed to JobService.

The file part never sits whole in memory: each chunk is written to uploads/.tmp/<random> as it
arrives, and the upload stops with 413 the moment it passes `upload_max_bytes`. The client's file
name is kept as display text only; the stored file's name comes from its content hash.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, cast

import anyio
from fastapi import APIRouter, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from koubo.web.api.deps import ServiceDep, SettingsDep
from koubo.web.api.schemas import AssetOut
from koubo.web.errors import InvalidRequest, UploadTooLarge

router = APIRouter(tags=["uploads"])

# Room for the multipart framing and the small "kind" field around the file itself.
_FRAMING_ALLOWANCE = 64 * 1024
_MAX_FIELD_BYTES = 1024
_MAX_PARTS = 8

_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "kind"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "kind": {"type": "string", "enum": ["audio", "video"]},
                    },
                }
            }
        },
    }
}


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    field_name: str = ""
    filename: str | None = None  # set for the file part
    value: bytearray = field(default_factory=bytearray)


class StreamedUpload:
    """Receives one multipart/form-data body: the single file part goes to `target`, text fields stay in memory.

    The parser's callbacks run inside `feed`, which the route calls in a worker thread, so parsing
    and disk writes never block the event loop.
    """

    def __init__(self, boundary: bytes, target: Path, max_file_bytes: int) -> None:
        self.target = target
        self.max_file_bytes = max_file_bytes
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self._file_bytes = 0
        self._file: BinaryIO | None = None
        self._parts = 0
        self._part = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> None:
        self._parser.finalize()
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > _MAX_PARTS:
            raise InvalidRequest(
                f"The form has more than {_MAX_PARTS} fields.", f"表单字段超过 {_MAX_PARTS} 个。"
            )
        self._part = _Part()

    def _on_header_end(self) -> None:
        self._part.headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get(b"content-disposition", b""))
        self._part.field_name = options.get(b"name", b"").decode("utf-8", errors="replace")
        if b"filename" not in options:
            return
        if self._part.field_name != "file" or self._file is not None or self.filename is not None:
            raise InvalidRequest(
                'Send exactly one file, in the form field "file".', "请只上传一个文件，放在表单字段“file”中。"
            )
        # Multipart headers carry the name as UTF-8 bytes (browsers, curl, httpx all do). JobService
        # cleans it into display text.
        self._part.filename = options[b"filename"].decode("utf-8", errors="replace")
        self._file = self.target.open("xb")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.filename is not None:
            assert self._file is not None
            self._file_bytes += end - start
            if self._file_bytes > self.max_file_bytes:
                raise UploadTooLarge(self.max_file_bytes)
            self._file.write(data[start:end])
            return
        if len(self._part.value) + end - start > _MAX_FIELD_BYTES:
            raise InvalidRequest(
                f'The form field "{self._part.field_name}" is too long.',
                f"表单字段“{self._part.field_name}”过长。",
            )
        self._part.value.extend(data[start:end])

    def _on_part_end(self) -> None:
        if self._part.filename is not None:
            # Only now, at its closing boundary, is the file known to be whole.
            self.filename = self._part.filename
            self.close()
        else:
            self.fields[self._part.field_name] = self._part.value.decode("utf-8", errors="replace")


async def _receive(request: Request, target: Path, max_file_bytes: int) -> StreamedUpload:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidRequest(
            "The body must be multipart/form-data.", "请求体必须是 multipart/form-data 格式。"
        )
    upload = StreamedUpload(options[b"boundary"], target, max_file_bytes)
    try:
        async for chunk in request.stream():
            if chunk:
                await anyio.to_thread.run_sync(upload.feed, chunk)
        upload.finish()
    except FormParserError as error:
        raise InvalidRequest(
            "The multipart body is malformed.", "multipart 请求体格式错误。"
        ) from error
    finally:
        upload.close()
    return upload


@router.post(
    "/uploads",
    status_code=201,
    response_model=AssetOut,
    summary="Upload an audio or a template video",
    openapi_extra=_OPENAPI_BODY,
    responses={400: {"description": "not usable media"}, 413: {"description": "over upload_max_bytes"}},
)
async def upload_asset(request: Request, service: ServiceDep, settings: SettingsDep) -> AssetOut | Response:
    limit = settings.upload_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _FRAMING_ALLOWANCE:
        raise UploadTooLarge(limit)
    # Before the body streams in: a full disk is refused without writing up to upload_max_bytes first.
    await run_in_threadpool(service.ensure_free_space)
    service.upload_tmp_dir.mkdir(parents=True, exist_ok=True)
    target = service.upload_tmp_dir / secrets.token_hex(16)
    try:
        upload = await _receive(request, target, limit)
        kind = upload.fields.get("kind")
        if kind not in ("audio", "video"):
            raise InvalidRequest(
                'The form field "kind" must be "audio" or "video".', "表单字段“kind”必须是 audio 或 video。"
            )
        if upload.filename is None:
            raise InvalidRequest(
                'The form field "file" is missing or incomplete.', "表单字段“file”缺失或不完整。"
            )
        asset = await run_in_threadpool(
            service.add_asset, target, upload.filename, cast(Literal["audio", "video"], kind)
        )
    except ClientDisconnect:
        # Nobody is left to read a response; the finally clause still removes the partial file.
        return Response(status_code=400)
    finally:
        target.unlink(missing_ok=True)
    return AssetOut.model_validate(asset)
