"""/api/logs: the tail of koubo's log file, and a live Server-Sent Events stream of new lines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from koubo.logs import LogFollower, tail_log
from koubo.web.api.deps import SettingsDep

router = APIRouter(prefix="/logs", tags=["logs"])

POLL_SECONDS = 0.5
# A comment line now and then keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


class LogTail(BaseModel):
    lines: list[str]


@router.get("", response_model=LogTail, summary="The last lines of the log")
def log_tail(settings: SettingsDep, lines: Annotated[int, Query(ge=1, le=10_000)] = 200) -> LogTail:
    return LogTail(lines=tail_log(settings.log_path, lines))


def _event(line: str) -> bytes:
    # A lone CR would end the SSE line early; log lines are single lines anyway.
    return f"data: {line.replace(chr(13), ' ')}\n\n".encode()


@router.get(
    "/stream",
    summary="The last lines, then each new line as it is written (text/event-stream)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_log(settings: SettingsDep, lines: Annotated[int, Query(ge=0, le=10_000)] = 50) -> StreamingResponse:
    follower = LogFollower(settings.log_path)
    tail = await run_in_threadpool(follower.tail, lines)

    async def events() -> AsyncIterator[bytes]:
        # Starlette cancels this generator when the client disconnects.
        yield b": koubo log\n\n"
        for line in tail:
            yield _event(line)
        idle = 0.0
        while True:
            await asyncio.sleep(POLL_SECONDS)
            new_lines = await run_in_threadpool(follower.read_new)
            for line in new_lines:
                yield _event(line)
            idle = 0.0 if new_lines else idle + POLL_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                idle = 0.0

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
