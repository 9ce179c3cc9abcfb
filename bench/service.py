"""Service responsiveness: API latency while 2 workers render, and submit-to-start on an idle queue.

    .venv/bin/python bench/service.py [--requests 200]

Starts `koubo serve` (KOUBO_MAX_CONCURRENT=2) on a free loopback port with its own data folder,
uploads a synthesized speech and the sample template, then:
1. idle queue: submits one job at a time and reads submit -> start from the job's own timestamps;
2. busy: keeps both workers rendering long jobs and times GET /api/jobs (list, 50 items) and
   POST /api/jobs (submit) from one client, reporting median and p99.
Figures are printed last.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from koubo import samples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def job(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/api/jobs/{job_id}").json()


def upload(client: httpx.Client, path: Path, kind: str) -> str:
    with path.open("rb") as f:
        response = client.post("/api/uploads", data={"kind": kind}, files={"file": (path.name, f)})
    response.raise_for_status()
    return response.json()["id"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(call) -> float:
    start = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="list requests while busy")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="koubo-bench-service-"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KOUBO_")},
        "KOUBO_DATA_DIR": str(work / "data"),
        "KOUBO_PORT": str(port),
        "KOUBO_LINKS_PORT": str(free_port()),
        "KOUBO_MAX_CONCURRENT": "2",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "koubo.cli", "serve"], env=env, stdout=log, stderr=log)
    lines: list[str] = []
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

        def healthy() -> bool:
            try:
                return client.get("/api/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 180, "koubo serve")
        short = upload(client, samples.write_sample_speech(work / "short.wav", seconds=2.0), "audio")
        long = upload(client, samples.write_sample_speech(work / "long.wav", seconds=120.0), "audio")
        video = upload(client, samples.write_sample_template(work / "t.mp4", seconds=2.0, size=256), "video")

        # 1. Idle queue: submit -> started, from the job's timestamps (server clock, no polling error).
        waits, first_progress = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            created = client.post("/api/jobs", json={"audio_id": short, "video_id": video}).json()
            wait_for(lambda: job(client, created["id"])["progress"] > 0, 120, "first progress")
            first_progress.append(time.perf_counter() - t0)
            done = wait_for(lambda: (j := job(client, created["id"]))["status"] == "done" and j, 300, "a job")
            started = datetime.fromisoformat(done["started_at"])
            submitted = datetime.fromisoformat(done["created_at"])
            waits.append((started - submitted).total_seconds())

        # 2. Busy: both workers render two-minute jobs while one client lists and submits.
        busy = [client.post("/api/jobs", json={"audio_id": long, "video_id": video}).json()["id"] for _ in range(2)]
        wait_for(lambda: all(job(client, b)["status"] == "running" for b in busy), 120, "both workers busy")
        list_ms = [timed(lambda: client.get("/api/jobs", params={"limit": 50})) for _ in range(args.requests)]
        submit_ms = []
        for _ in range(max(10, args.requests // 4)):
            submit_ms.append(timed(lambda: client.post("/api/jobs", json={"audio_id": short, "video_id": video})))
        still_busy = all(job(client, b)["status"] == "running" for b in busy)
        for status in ("queued", "running"):
            for item in client.get("/api/jobs", params={"status": status, "limit": 200}).json()["items"]:
                client.post(f"/api/jobs/{item['id']}/cancel")

        lines.append(
            f"idle queue, submit -> start: median {statistics.median(waits):.2f} s, "
            f"max {max(waits):.2f} s ({len(waits)} jobs, one at a time)"
        )
        lines.append(
            f"idle queue, submit -> first progress from the generation (child process started): "
            f"median {statistics.median(first_progress):.2f} s, max {max(first_progress):.2f} s"
        )
        lines.append(
            f"GET /api/jobs?limit=50 with 2 workers rendering: median {statistics.median(list_ms):.1f} ms, "
            f"p99 {percentile(list_ms, 0.99):.1f} ms ({len(list_ms)} requests)"
        )
        lines.append(
            f"POST /api/jobs with 2 workers rendering: median {statistics.median(submit_ms):.1f} ms, "
            f"p99 {percentile(submit_ms, 0.99):.1f} ms ({len(submit_ms)} requests)"
        )
        lines.append(f"both workers still rendering at the end of the measurement: {still_busy}")
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    print("\nkoubo bench/service.py (2-core machine, koubo serve with 2 workers)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
