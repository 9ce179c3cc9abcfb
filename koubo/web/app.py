"""The FastAPI application: the REST API under /api, /metrics, OpenAPI at /docs, the Gradio UI at "/"."""

from __future__ import annotations

import os

import gradio
from fastapi import FastAPI

from koubo import __version__
from koubo.auth.htpasswd import Htpasswd
from koubo.auth.throttle import LoginThrottle
from koubo.config import Settings
from koubo.jobs.service import JobService
from koubo.links.handout import LinkMaker
from koubo.web.api import metrics
from koubo.web.api import router as api_router
from koubo.web.auth import BasicAuthMiddleware
from koubo.web.errors import install_error_handlers
from koubo.web.guards import RequestLimits
from koubo.web.ui import FOOTER_LINKS, PAGE_CSS, build_ui

OPEN_PATHS = ("/api/health",)
# How often Gradio's queue looks for a new UI event, and for progress to send, while it has none.
# Its own 1 ms and 10 ms (Linux) cost an idle server ~7 % of a core, taken from the renders on a
# busy one; a click now waits at most 20 ms more to start.
UI_QUEUE_IDLE_S = 0.02
UI_PROGRESS_IDLE_S = 0.1


def create_app(settings: Settings, service: JobService | None = None) -> FastAPI:
    """Build the app. Raises AuthConfigError when settings.htpasswd_file cannot be used."""
    htpasswd = Htpasswd.load(settings.htpasswd_file) if settings.htpasswd_file is not None else None
    if service is None:
        service = JobService(settings)

    app = FastAPI(
        title="koubo",
        version=__version__,
        summary="Self-hosted lip-sync video generator: speech + template video -> MP4",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.links = LinkMaker(settings)
    install_error_handlers(app)
    app.include_router(api_router, prefix="/api")
    app.include_router(metrics.router)

    app.add_middleware(RequestLimits, settings=settings, service=service)
    if htpasswd is not None:  # added last, so it runs first: nothing is read before a login
        throttle = LoginThrottle(settings.login_max_failures, settings.login_backoff, settings.login_backoff_max)
        app.add_middleware(BasicAuthMiddleware, htpasswd=htpasswd, throttle=throttle, open_paths=OPEN_PATHS)
    # Gradio keeps its uploads under data_dir, where retention sweeps them; its components read the
    # folder when they are built, so it is set first.
    settings.gradio_dir.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(settings.gradio_dir.resolve())
    blocks = build_ui(service, settings)
    # Gradio's own upload route gets the same size limit as /api/uploads.
    gradio.mount_gradio_app(
        app,
        blocks,
        path="/",
        max_file_size=settings.upload_max_bytes,
        css=PAGE_CSS,
        footer_links=FOOTER_LINKS,
        run_history=False,
    )
    # The Gradio app just mounted: close_page_streams needs it.
    app.state.gradio = app.routes[-1].app
    # Gradio checks that a file parameter is one a user uploaded (inside its temp folder) only once
    # it believes it was launched, which mount_gradio_app never records: without this, a call
    # naming /etc/passwd copies that file into its folder and serves it.
    blocks.has_launched = True
    queue = blocks._queue  # Gradio has no public setting for these
    queue.sleep_when_free, queue.progress_update_sleep_when_free = UI_QUEUE_IDLE_S, UI_PROGRESS_IDLE_S
    return app


def close_page_streams(app: FastAPI) -> None:
    """Ends every open page's event stream (Gradio's heartbeat), as Gradio's own close() does. Called
    as the server starts to shut down: an open stream would otherwise hold the shutdown for the whole
    grace period, then be cancelled with an error and a traceback in the log."""
    app.state.gradio.stop_event.set()
