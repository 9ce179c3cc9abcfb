"""What one HTTP request may cost the web app: its body's size and pace, and a slow client's headers.

One ASGI middleware (RequestLimits) stands in front of every route, the API and Gradio's alike,
so no route can forget a limit; uvicorn gets a protocol with a deadline for headers
(header_deadline_protocol), which no ASGI code can see.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from koubo.config import Settings
from koubo.errors import KouboError
from koubo.jobs.service import JobService
from koubo.web.errors import RequestTimeout, RequestTooLarge, UploadTooLarge, error_response

# Routes that receive files: they get upload_max_bytes (plus room for the multipart framing);
# every other body gets settings.request_max_bytes.
UPLOAD_PATHS = frozenset({"/api/uploads", "/gradio_api/upload"})
# Gradio's upload route writes straight to disk, so it gets the free-space guard here; /api/uploads
# checks it itself.
GUARDED_BY_FREE_SPACE = frozenset({"/gradio_api/upload"})
FRAMING_ALLOWANCE = 64 * 1024


class RequestLimits:
    """Refuses a body over its limit (413, from Content-Length before reading, else as soon as it
    passes), a body that stalls for settings.http_header_timeout (408), and a Gradio upload while
    the disk is nearly full (507)."""

    def __init__(self, app: ASGIApp, settings: Settings, service: JobService) -> None:
        self.app = app
        self.settings = settings
        self.service = service

    def _limit(self, path: str) -> tuple[int, KouboError]:
        if path in UPLOAD_PATHS:
            return self.settings.upload_max_bytes + FRAMING_ALLOWANCE, UploadTooLarge(self.settings.upload_max_bytes)
        return self.settings.request_max_bytes, RequestTooLarge(self.settings.request_max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, too_large = self._limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(too_large, scope, receive, send)
            return
        if scope["path"] in GUARDED_BY_FREE_SPACE:
            try:
                await run_in_threadpool(self.service.ensure_free_space)
            except KouboError as error:
                await _refuse(error, scope, receive, send)
                return
        body = _BodyWatch(receive, limit, too_large, self.settings.http_header_timeout)
        replaced = False

        async def watched_send(message: Message) -> None:
            nonlocal replaced
            # A route that caught the body's error (FastAPI turns any error while reading a body into
            # "400 error parsing the body") answers with koubo's error instead.
            if message["type"] == "http.response.start" and body.error is not None:
                replaced = True
                await _refuse(body.error, scope, receive, send)
            if not replaced:
                await send(message)

        try:
            await self.app(scope, body.receive, watched_send)
        except KouboError as error:
            # Gradio's routes let the body's error out; koubo's answer it through the app's handlers.
            if error is not body.error or replaced:
                raise
            await _refuse(error, scope, receive, send)


class _BodyWatch:
    """A `receive` that counts the body and times out a body that pauses too long."""

    def __init__(self, receive: Receive, limit: int, too_large: KouboError, pause: float) -> None:
        self._receive = receive
        self._limit = limit
        self._too_large = too_large
        self._pause = pause
        self._received = 0
        self._complete = False
        self.error: KouboError | None = None  # why the body was refused, once it was

    async def receive(self) -> Message:
        if self._complete:
            # After the body only a disconnect can come, as late as it likes (a log stream waits for it).
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self._pause)
        except TimeoutError:
            self.error = RequestTimeout(self._pause)
            raise self.error from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                self.error = self._too_large
                raise self.error
            self._complete = not message.get("more_body", False)
        else:
            self._complete = True
        return message


async def _refuse(error: KouboError, scope: Scope, receive: Receive, send: Send) -> None:
    # The body may still be arriving: "Connection: close" stops the client from sending the rest.
    await error_response(error.status, error, {"Connection": "close"})(scope, receive, send)


def header_deadline_protocol(timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, dropping a connection whose request headers take longer than `timeout`
    seconds, from its first byte (or from the connection, for the first request)."""

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self._deadline is None:
                self._arm()  # the first bytes of the next request on a kept-alive connection
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # its headers are complete: the request has started
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.cycle is None or self.cycle.response_complete:
                self.logger.info("dropped a connection whose request headers took longer than %.0f s", timeout)
                self.transport.close()

    return HeaderDeadlineProtocol
