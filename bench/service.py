"""The job service end to end through `koubo serve`: start latency, throughput, batches, memory.

    .venv/bin/python bench/service.py [--jobs 20] [--speech 8] [--size 512] [--concurrency 1 2]
    .venv/bin/python bench/service.py --rss-jobs 100      # a generation process's memory, job after job
    .venv/bin/python bench/service.py --api 200           # API latency while 2 workers render

Each run starts `koubo serve` on free loopback ports with its own data folder and measures, for
each max_concurrent:
1. submit -> first progress on an idle queue (the job's generation has reported), median of 5;
2. `--jobs` jobs (`--speech` s of speech x a `--size`^2 template) submitted at once: wall time from
   the first submit to the last job done, against the sum of the same jobs' generation times in
   one warm process of this bench (Generator.generate, in-process, a cache of its own);
3. a batch of 10 templates x 1 audio, against 10 single jobs (10 other templates, the same audio)
   each submitted when the previous one is done.
`--rss-jobs N` runs N small jobs on one worker and prints the resident memory of the generation
process after every 10. Figures are printed last.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from koubo import samples

T = TypeVar("T")
TEMPLATE_SECONDS = 2.0  # looped to the speech's length
PROCESS_LINE = re.compile(r"\[job ([0-9a-f-]+)\] in generation process (\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(call) -> float:
    start = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed * 1000


class Server:
    """`koubo serve` with its own data folder, driven through the HTTP API."""

    def __init__(self, work: Path, concurrency: int, **settings: str) -> None:
        self.data = work / f"data-{concurrency}-{time.monotonic_ns()}"
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KOUBO_")},
            "KOUBO_DATA_DIR": str(self.data),
            "KOUBO_CONFIG": str(work / "no-koubo.toml"),
            "KOUBO_PORT": str(port),
            "KOUBO_LINKS_PORT": str(free_port()),
            "KOUBO_MAX_CONCURRENT": str(concurrency),
            "GRADIO_ANALYTICS_ENABLED": "False",
            **{f"KOUBO_{key.upper()}": value for key, value in settings.items()},
        }
        self.log = (work / f"serve-{concurrency}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "koubo.cli", "serve"], env=env, stdout=self.log, stderr=self.log
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        wait_for(self._healthy, 180, "koubo serve", 0.1)
        # Every worker's generation process has loaded the pipeline, as on a server that has been up
        # (a version without warm processes logs no "ready": it gets 5 s).
        started = time.monotonic()
        while time.monotonic() - started < 120 and self._ready_processes() < concurrency:
            if time.monotonic() - started > 5 and not self._log().count("generation process"):
                break
            time.sleep(0.1)

    def _log(self) -> str:
        try:
            return (self.data / "logs" / "koubo.log").read_text(errors="replace")
        except OSError:
            return ""

    def _ready_processes(self) -> int:
        return len(re.findall(r"generation process \d+ ready in", self._log()))

    def _healthy(self) -> bool:
        try:
            return self.client.get("/api/health").status_code == 200
        except httpx.TransportError:
            return False

    def upload(self, path: Path, kind: str) -> str:
        with path.open("rb") as f:
            response = self.client.post("/api/uploads", data={"kind": kind}, files={"file": (path.name, f)})
        response.raise_for_status()
        return response.json()["id"]

    def submit(self, audio: str, video: str) -> str:
        response = self.client.post("/api/jobs", json={"audio_id": audio, "video_id": video})
        response.raise_for_status()
        return response.json()["id"]

    def submit_batch(self, audios: list[str], videos: list[str]) -> list[str]:
        response = self.client.post("/api/batches", json={"audio_ids": audios, "video_ids": videos})
        response.raise_for_status()
        return [job["id"] for job in response.json()["jobs"]]

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/api/jobs/{job_id}").json()

    def wait_done(self, job_id: str, timeout: float = 600) -> dict:
        def finished() -> dict | None:
            job = self.job(job_id)
            if job["status"] in ("failed", "cancelled", "timed_out"):
                raise SystemExit(f"job {job_id} {job['status']}: {job.get('error')}")
            return job if job["status"] == "done" else None

        return wait_for(finished, timeout, f"job {job_id}", 0.05)

    def generation_process(self, job_id: str) -> int | None:
        found = [int(m.group(2)) for m in PROCESS_LINE.finditer(self._log()) if m.group(1) == job_id]
        return found[-1] if found else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def in_process_seconds(work: Path, audio: Path, video: Path, jobs: int) -> list[float]:
    """The same jobs' generation times, one after another in this (warm) process."""
    from koubo.config import Settings
    from koubo.pipeline import Generator

    generator = Generator(Settings(data_dir=work / "in-process"))
    times = []
    for index in range(jobs + 1):  # the first one warms up (imports, models) and is not counted
        start = time.perf_counter()
        generator.generate(audio, video, work / "in-process" / f"{index}.mp4")
        times.append(time.perf_counter() - start)
    return times[1:]


def measure(work: Path, concurrency: int, args: argparse.Namespace, media: dict) -> tuple[list[str], float]:
    server = Server(work, concurrency)
    try:
        audio = server.upload(media["speech"], "audio")
        video = server.upload(media["template"], "video")
        # 1. Idle queue: submit -> the generation's first progress.
        first_progress = []
        for _ in range(5):
            t0 = time.perf_counter()
            job_id = server.submit(audio, video)
            wait_for(lambda: server.job(job_id)["progress"] > 0, 120, "first progress", 0.01)
            first_progress.append(time.perf_counter() - t0)
            server.wait_done(job_id)
        # 2. Many jobs at once.
        t0 = time.perf_counter()
        ids = [server.submit(audio, video) for _ in range(args.jobs)]
        for job_id in ids:
            server.wait_done(job_id)
        wall = time.perf_counter() - t0
        # Distinct processes named in the log ("in generation process <pid>"); 0 where it names none.
        processes = {pid for job_id in ids if (pid := server.generation_process(job_id))}
        # 3. A batch of 10 templates x 1 audio, against 10 single jobs one after another (of 10 other
        # templates, which no job has seen yet either: no face track comes from the cache).
        templates = [server.upload(path, "video") for path in media["templates"]]
        t0 = time.perf_counter()
        for template in templates[10:]:
            server.wait_done(server.submit(audio, template))
        singles = time.perf_counter() - t0
        t0 = time.perf_counter()
        for job_id in server.submit_batch([audio], templates[:10]):
            server.wait_done(job_id)
        batch = time.perf_counter() - t0
    finally:
        server.stop()
    return [
        f"max_concurrent {concurrency}: submit -> first progress (idle queue) median "
        f"{statistics.median(first_progress):.2f} s, max {max(first_progress):.2f} s (5 jobs)",
        f"max_concurrent {concurrency}: {args.jobs} jobs submitted at once: {wall:.1f} s wall "
        f"({wall / args.jobs:.2f} s/job) in {len(processes)} generation process(es)",
        f"max_concurrent {concurrency}: batch of 10 templates x 1 audio {batch:.1f} s, 10 single jobs "
        f"one after another {singles:.1f} s: {singles / batch:.2f}x",
    ], wall


def measure_rss(work: Path, jobs: int, media: dict) -> list[str]:
    server = Server(work, 1)
    lines = []
    try:
        audios = [server.upload(path, "audio") for path in media["small_speech"]]
        videos = [server.upload(path, "video") for path in media["small_templates"]]
        for index in range(jobs):
            job_id = server.submit(audios[index % len(audios)], videos[(index // len(audios)) % len(videos)])
            server.wait_done(job_id)
            if (index + 1) % 10 == 0:
                pid = server.generation_process(job_id)
                rss = rss_mib(pid) if pid else None
                memory = f"resident {rss:.0f} MiB" if rss else "gone (retired after the job)"
                lines.append(f"after {index + 1:3d} jobs: generation process {pid} {memory}")
    finally:
        server.stop()
    return lines


def measure_api(work: Path, requests: int, media: dict) -> list[str]:
    """API latency while both workers of `koubo serve` render two-minute jobs."""
    server = Server(work, 2)
    try:
        short = server.upload(media["speech"], "audio")
        long = server.upload(samples.write_sample_speech(work / "long.wav", seconds=120.0), "audio")
        video = server.upload(media["template"], "video")
        busy = [server.submit(long, video) for _ in range(2)]
        client = server.client
        wait_for(lambda: all(server.job(b)["status"] == "running" for b in busy), 120, "both workers busy")
        list_ms = [timed(lambda: client.get("/api/jobs", params={"limit": 50})) for _ in range(requests)]
        submit_ms = [
            timed(lambda: client.post("/api/jobs", json={"audio_id": short, "video_id": video}))
            for _ in range(max(10, requests // 4))
        ]
        still_busy = all(server.job(b)["status"] == "running" for b in busy)
        for status in ("queued", "running"):
            for item in client.get("/api/jobs", params={"status": status, "limit": 200}).json()["items"]:
                client.post(f"/api/jobs/{item['id']}/cancel")
    finally:
        server.stop()
    return [
        f"GET /api/jobs?limit=50 with 2 workers rendering: median {statistics.median(list_ms):.1f} ms, "
        f"p99 {percentile(list_ms, 0.99):.1f} ms ({len(list_ms)} requests)",
        f"POST /api/jobs with 2 workers rendering: median {statistics.median(submit_ms):.1f} ms, "
        f"p99 {percentile(submit_ms, 0.99):.1f} ms ({len(submit_ms)} requests)",
        f"both workers still rendering at the end of the measurement: {still_busy}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--speech", type=float, default=8.0, help="seconds of speech per job")
    parser.add_argument("--size", type=int, default=512, help="template side in pixels")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rss-jobs", type=int, default=0, help="instead: N small jobs, memory every 10")
    parser.add_argument("--api", type=int, default=0, help="instead: API latency, this many list requests")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="koubo-bench-service-"))
    lines: list[str] = []
    try:
        speech = samples.write_sample_speech(work / "speech.wav", seconds=args.speech)
        template = samples.write_sample_template(work / "t.mp4", seconds=TEMPLATE_SECONDS, size=args.size)
        media = {
            "speech": speech,
            "template": template,
            # Twenty templates of different content (lengths), so that uploads are not deduplicated.
            "templates": [
                samples.write_sample_template(
                    work / f"t{i}.mp4", seconds=TEMPLATE_SECONDS + 0.04 * (i + 1), size=args.size
                )
                for i in range(20)
            ],
        }
        if args.rss_jobs:
            media["small_speech"] = [
                samples.write_sample_speech(work / f"s{i}.wav", seconds=2.0 + 0.25 * i) for i in range(5)
            ]
            media["small_templates"] = [
                samples.write_sample_template(work / f"st{i}.mp4", seconds=1.0 + 0.04 * i, size=256) for i in range(4)
            ]
            lines = measure_rss(work, args.rss_jobs, media)
            title = f"{args.rss_jobs} jobs (2-3 s speech x 256^2 templates, 5 audios x 4 templates) on one worker"
        elif args.api:
            lines = measure_api(work, args.api, media)
            title = "API latency, koubo serve with 2 workers"
        else:
            reference = in_process_seconds(work, speech, template, args.jobs)
            total = sum(reference)
            for concurrency in args.concurrency:
                measured, wall = measure(work, concurrency, args, media)
                lines += measured
                lines.append(f"max_concurrent {concurrency}: wall / in-process sum = {wall / total:.2f}")
            lines.insert(
                0,
                f"in one warm process (this bench, Generator.generate): {args.jobs} jobs sum {total:.1f} s, "
                f"median {statistics.median(reference):.2f} s/job",
            )
            title = f"{args.jobs} jobs of {args.speech:g} s speech x {args.size}^2 template ({TEMPLATE_SECONDS:g} s)"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nkoubo bench/service.py ({os.cpu_count()} cores): {title}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
