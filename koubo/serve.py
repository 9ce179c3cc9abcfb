"""Running koubo as a service: `serve()` starts the web app, the job consumer and the link server
as one command (`koubo serve`)."""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from koubo.config import Settings, child_environment
from koubo.errors import ErrorCode, KouboError
from koubo.logs import setup_logging

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

# Seconds the consumer gets to stop its workers after SIGTERM before its whole process group is killed.
CONSUMER_GRACE_SECONDS = 10.0
# Seconds open connections (a log stream, a long download) may delay shutdown.
HTTP_GRACE_SECONDS = 5
# Seconds serve() waits for its retention and webhook threads at shutdown (a delivery cut short is retried).
THREAD_GRACE_SECONDS = 2.0
# prctl(2): the signal a process gets when the thread that started it exits.
_PR_SET_PDEATHSIG = 1


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(settings: Settings) -> str:
    lines = [
        f"WARNING: koubo is listening on {settings.host}:{settings.port} without authentication.",
        "Anyone who can reach this address can upload files, run jobs and download every video.",
        "Set htpasswd_file (KOUBO_HTPASSWD_FILE) to require a password, or listen on 127.0.0.1.",
        f"警告：koubo 正在 {settings.host}:{settings.port} 上监听，且未启用身份验证。",
        "任何能访问该地址的人都可以上传文件、提交任务并下载所有视频。",
        "请设置 htpasswd_file（KOUBO_HTPASSWD_FILE）启用密码，或只监听 127.0.0.1。",
    ]
    width = max(_columns(line) for line in lines)
    border = "#" * (width + 4)
    return "\n".join([border, *(f"# {line}{' ' * (width - _columns(line))} #" for line in lines), border])


def _columns(text: str) -> int:
    """Terminal columns: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn that makes the child get SIGTERM (a clean stop, its own children included) when
    koubo serve dies in any way, kill -9 included: no orphan keeps the ports, so a restart comes up."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child, between fork and exec, only calls

    def arrange() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died before prctl was in place; then nobody would send the signal.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


class ChildProcess:
    """A koubo process that serve() runs beside the web app, in its own process group.

    The job consumer (`python -m koubo.jobs.queue`) and the direct-link server (`koubo links`).
    Its own group keeps a terminal's Ctrl-C away from it (serve() decides the order of shutdown)
    and lets stop() kill it and its own children (workers, render processes) together if they hang.
    """

    def __init__(
        self, name: str, args: list[str], settings: Settings, on_unexpected_exit: Callable[[str, int], None]
    ) -> None:
        self.name = name
        self._stopping = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, *args],
            env=child_environment(settings, dict(os.environ)),
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),  # it takes no lock: safe beside threads
        )
        log.info("%s started (pid %d)", name, self.process.pid)
        self._watcher = threading.Thread(
            target=self._watch, args=(on_unexpected_exit,), name=f"{name}-watch", daemon=True
        )
        self._watcher.start()

    def _watch(self, on_unexpected_exit: Callable[[str, int], None]) -> None:
        code = self.process.wait()
        if not self._stopping.is_set():
            on_unexpected_exit(self.name, code)

    def begin_stop(self) -> None:
        """Asks it to stop (SIGTERM) without waiting: children stop side by side, not one after another.
        Asked once: a second SIGTERM would kill a child that is already stopping cleanly."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        self.begin_stop()
        if self.process.poll() is None:
            try:
                self.process.wait(CONSUMER_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, CONSUMER_GRACE_SECONDS)
        try:
            # Whatever is left of the group (a hung worker, a render child) goes too.
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        log.info("%s stopped (exit code %s)", self.name, self.process.returncode)


def serve(settings: Settings, *, with_worker: bool = True, with_links: bool = True) -> None:
    """Serve the web app (API and UI) on settings.host:port, with the job consumer and the direct-link
    server (settings.links_port) unless told not to.

    Returns after SIGINT or SIGTERM, once all are stopped. Raises KouboError when a child died on
    its own, so a supervisor (systemd, Docker) sees a failure and restarts koubo.
    """
    import uvicorn

    from koubo.web.app import close_page_streams, create_app
    from koubo.web.guards import header_deadline_protocol

    stopping = threading.Event()
    server: uvicorn.Server | None = None
    children: list[ChildProcess] = []
    threads: list[threading.Thread] = []
    child_exit: list[tuple[str, int]] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if server is not None:
            server.should_exit = True

    def child_died(name: str, code: int) -> None:
        log.error("%s exited unexpectedly (exit code %d); stopping koubo", name, code)
        child_exit.append((name, code))
        request_stop(signal.SIGTERM, None)

    # Uvicorn installs its own handlers while it runs and re-raises the signal after; these cover
    # start-up (building the app takes seconds) and shutdown, so a signal at any moment means
    # "stop cleanly", never a killed process with its consumer left behind.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        setup_logging(settings)
        if not is_loopback(settings.host) and settings.htpasswd_file is None:
            print(exposure_warning(settings), file=sys.stderr, flush=True)
            log.warning("listening on %s:%d without authentication (no htpasswd_file)", settings.host, settings.port)
        if with_links and not is_loopback(settings.host) and settings.links_base_url is None:
            log.warning(
                "links_base_url is not set: direct links will start with %s; set it to the address downloaders "
                "reach (a public host name, or the nginx/CDN in front) / 未设置 links_base_url：直链将以 %s 开头，"
                "请设为下载者能访问的地址",
                settings.links_base,
                settings.links_base,
            )
        app = create_app(settings)

        def shutting_down() -> None:
            close_page_streams(app)
            for child in children:
                child.begin_stop()

        server = _server_with_shutdown_hook(
            shutting_down,
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                # Uvicorn's messages go through koubo's logging setup (the log file) instead of its own.
                log_config=None,
                # Every progress poll would be a line; the log is for jobs and errors.
                access_log=False,
                timeout_graceful_shutdown=HTTP_GRACE_SECONDS,
                # A client that trickles its headers (slowloris) is dropped; its body is timed by RequestLimits.
                http=header_deadline_protocol(settings.http_header_timeout),
            )
        )
        if stopping.is_set():
            return
        if with_worker:
            children.append(ChildProcess("job consumer", ["-m", "koubo.jobs.queue"], settings, child_died))
            log.info("%d worker(s)", settings.max_concurrent)
        if with_links:
            children.append(ChildProcess("link server", ["-m", "koubo.cli", "links"], settings, child_died))
        threads = _start_background_threads(settings, stopping)
        log.info(
            "koubo serving on http://%s:%d (worker: %s, links: %s)",
            settings.host,
            settings.port,
            "on" if with_worker else "off",
            settings.links_base if with_links else "off",
        )
        server.run()
    finally:
        stopping.set()
        for child in children:
            child.begin_stop()
        for thread in threads:
            thread.join(THREAD_GRACE_SECONDS)
        for child in reversed(children):
            child.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if child_exit:
        name, code = child_exit[0]
        zh = "任务处理进程" if name == "job consumer" else "直链下载服务"
        raise KouboError(
            ErrorCode.WORKER_EXITED if name == "job consumer" else ErrorCode.LINKS_EXITED,
            f"The {name} exited unexpectedly (exit code {code}); see the log.",
            f"{zh}意外退出（退出码 {code}），详见日志。",
        )


def _server_with_shutdown_hook(hook: Callable[[], None], config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, calling `hook` as its shutdown starts (after the signal, before it waits for
    open connections), where serve() ends the pages' streams and asks its children to stop."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            hook()
            await super().shutdown(sockets)

    return Server(config)


def _start_background_threads(settings: Settings, stop: threading.Event) -> list[threading.Thread]:
    """Retention (always: stale temporary files are swept even without a policy), recovery of lost
    jobs and queue messages (koubo.jobs.recovery.recover_periodically) and, with a webhook_url, the
    webhook notifier and, with storage_upload on, the object-storage uploader. Daemons: a hung one never keeps koubo from exiting."""
    from koubo.jobs.recovery import recover_periodically
    from koubo.ops.notify import run_notifier
    from koubo.ops.offload import run_uploader
    from koubo.ops.retention import run_periodically

    targets = [("retention", run_periodically), ("recovery", recover_periodically)]
    if settings.webhook_url:
        targets.append(("webhooks", run_notifier))
    if settings.storage_upload != "off":
        targets.append(("object-storage", run_uploader))
    threads = [threading.Thread(target=run, args=(settings, stop), name=name, daemon=True) for name, run in targets]
    for thread in threads:
        thread.start()
    return threads
