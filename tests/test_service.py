"""`koubo serve` and `koubo logs` as a user runs them: address, warning, shutdown, log tail."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from servers import launch, processes, wait_until


def children_of(pid: int) -> list[int]:
    return processes(lambda fields: int(fields[1]) == pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def non_loopback_address() -> str | None:
    """This machine's address on its default route, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent for UDP connect
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address.startswith("127.") else address


def test_serve_listens_on_loopback_only_by_default_and_stops_with_its_children_on_sigterm(tmp_path: Path) -> None:
    server = launch(tmp_path)
    try:
        log = server.data_dir / "logs" / "koubo.log"
        assert f"http://127.0.0.1:{server.port}" in server.output() + log.read_text()
        assert "WARNING" not in server.output()
        other = non_loopback_address()
        if other is not None:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{other}:{server.port}/api/health", timeout=3.0)
        children = wait_until(
            lambda: len(found := children_of(server.process.pid)) == 2 and found, 30, "the consumer and link server"
        )
        commands = sorted(Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ") for pid in children)
        assert "koubo.cli links" in commands[0] and "koubo.jobs.queue" in commands[1], commands
        # The direct-link server answers on its own port, and refuses a link it did not sign.
        forged = wait_until(
            lambda: _get_or_none(f"http://127.0.0.1:{server.links_port}/d/abc/x.mp4?exp=0&kid=k&sig=AAAA"),
            30,
            "the link server",
        )
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "link_tampered"
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.output()
    assert not any(alive(pid) for pid in children)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/api/health", timeout=3.0)


def test_sigterm_with_a_page_open_ends_its_stream_and_logs_no_error(tmp_path: Path) -> None:
    server = launch(tmp_path)
    try:
        # Both children up, so that each must be stopped, not caught starting.
        wait_until(lambda: len(children_of(server.process.pid)) == 2, 30, "the consumer and link server")
        wait_until(lambda: _get_or_none(f"http://127.0.0.1:{server.links_port}/d/x"), 30, "the link server")
        # A consumer still starting holds the signal (tested in test_workers); here it must be running.
        log = server.data_dir / "logs" / "koubo.log"
        wait_until(lambda: " worker(s)" in log.read_text(), 60, "the job consumer's start")
        # What an open page holds: Gradio's heartbeat stream, which stays open as long as the page does.
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            with client.stream("GET", "/gradio_api/heartbeat/an-open-page") as stream:
                lines = stream.iter_lines()
                assert next(lines) == "data: ALIVE"
                server.process.send_signal(signal.SIGTERM)
                # The server ends the stream itself, rather than waiting for the page to go away.
                list(lines)
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.output()
    log = (server.data_dir / "logs" / "koubo.log").read_text()
    # No stream cancelled after the grace period, with its traceback, in the log the Logs tab shows.
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    # Each child stopped cleanly on the one SIGTERM it was sent.
    assert "link server stopped (exit code 0)" in log and "job consumer stopped (exit code 0)" in log, log[-3000:]


def _get_or_none(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=3.0)
    except httpx.TransportError:
        return None


def test_serve_warns_loudly_on_a_public_address_without_auth(tmp_path: Path) -> None:
    server = launch(tmp_path, "--no-worker", env={"KOUBO_HOST": "0.0.0.0"}, host="0.0.0.0", wait=False)
    try:
        wait_until(lambda: "without authentication" in server.stderr.read_text(), 120, "the warning")
        warning = server.stderr.read_text()
        assert f"WARNING: koubo is listening on 0.0.0.0:{server.port} without authentication" in warning
        assert "警告" in warning and "KOUBO_HTPASSWD_FILE" in warning
        log = server.data_dir / "logs" / "koubo.log"
        wait_until(lambda: log.exists() and "without authentication" in log.read_text(), 30, "the warning in the log")
    finally:
        assert server.stop() == 0, server.output()


def test_serve_refuses_an_htpasswd_file_with_a_plain_text_password(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("# ops\nalice:secret\n")
    server = launch(tmp_path, "--no-worker", env={"KOUBO_HTPASSWD_FILE": str(htpasswd)}, wait=False)
    assert server.process.wait(120) == 2
    assert "line 2 is neither bcrypt" in server.stderr.read_text()


def koubo_logs(data_dir: Path, *args: str, **popen: object) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KOUBO_")}
    env["KOUBO_DATA_DIR"] = str(data_dir)
    return subprocess.Popen(
        [sys.executable, "-m", "koubo.cli", "logs", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        **popen,  # type: ignore[arg-type]
    )


def test_logs_prints_the_tail_and_follows_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "koubo.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i} 行\n" for i in range(100)), encoding="utf-8")

    tail = koubo_logs(tmp_path, "-n", "3")
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 0, err
    assert out.splitlines() == ["line 97 行", "line 98 行", "line 99 行"]

    follow = koubo_logs(tmp_path, "-n", "1", "-f")
    lines: queue.Queue[str] = queue.Queue()
    assert follow.stdout is not None
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in follow.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=60) == "line 99 行"
        with log.open("a", encoding="utf-8") as file:
            file.write("a new line 新\n")
        assert lines.get(timeout=30) == "a new line 新"
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(30)


def test_children_get_every_setting_as_json_lists_and_none_overrides_included(tmp_path: Path) -> None:
    from koubo.config import child_environment, load_settings

    parent_env = {"PATH": os.environ.get("PATH", ""), "KOUBO_CONFIG": str(tmp_path / "none.toml")}
    # An environment variable the parent's CLI overrode with None must not come back in the child.
    parent_env["KOUBO_WEBHOOK_URL"] = "http://hooks.invalid/x"
    settings = load_settings(
        data_dir=tmp_path, links_trusted_proxies=["10.0.0.1", "fd00::1"], webhook_url=None, min_free_bytes=5
    )
    env = child_environment(settings, {**os.environ, **parent_env})
    child = subprocess.run(
        [sys.executable, "-c", "from koubo.config import load_settings; print(load_settings().model_dump_json())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert child.stdout.strip() == settings.model_dump_json()
    assert "KOUBO_WEBHOOK_URL" not in env


def test_serve_runs_its_children_with_a_list_setting(tmp_path: Path) -> None:
    server = launch(tmp_path, env={"KOUBO_LINKS_TRUSTED_PROXIES": '["127.0.0.1"]'})
    try:
        wait_until(lambda: len(children_of(server.process.pid)) == 2, 30, "the consumer and link server")
        answer = wait_until(
            lambda: _get_or_none(f"http://127.0.0.1:{server.links_port}/d/abc/x.mp4?exp=0&kid=k&sig=AAAA"),
            60,
            "the link server",
        )
        assert answer.status_code == 403
        assert len(children_of(server.process.pid)) == 2, server.output()
    finally:
        assert server.stop() == 0, server.output()


def test_kill_9_of_serve_takes_its_children_along_and_a_restart_comes_up(tmp_path: Path) -> None:
    server = launch(tmp_path)
    children = wait_until(
        lambda: len(found := children_of(server.process.pid)) == 2 and found, 30, "the consumer and link server"
    )
    wait_until(
        lambda: _get_or_none(f"http://127.0.0.1:{server.links_port}/d/abc/x.mp4?exp=0&kid=k&sig=AAAA"),
        60,
        "the link server",
    )
    server.process.kill()
    server.process.wait(30)
    # Each child leads its own process group: the group (workers, housekeeping) must go too.
    # A zombie ("Z") holds no port or memory; reaping it is up to whoever adopted it.
    wait_until(
        lambda: not processes(lambda fields: int(fields[2]) in children and fields[0] != "Z"),
        60,
        "the children and their groups to exit",
    )
    again = launch(tmp_path, ports=(server.port, server.links_port))
    try:
        answer = wait_until(
            lambda: _get_or_none(f"http://127.0.0.1:{server.links_port}/d/abc/x.mp4?exp=0&kid=k&sig=AAAA"),
            60,
            "the restarted link server",
        )
        assert answer.status_code == 403
        assert httpx.get(f"http://127.0.0.1:{server.port}/api/health", timeout=5).status_code == 200
    finally:
        assert again.stop() == 0, again.output()
