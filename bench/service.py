"""The job service end to end through `koubo serve`: start latency, throughput, batches, memory.

    .venv/bin/python bench/service.py [--jobs 20] [--speech 8] [--size 512] [--concurrency 1 2]
    .venv/bin/python bench/service.py --jobs 4 --speech 3 --size 256 --batch 4   # a quick run
    .venv/bin/python bench/service.py --rss-jobs 100      # a generation process's memory, job after job
    .venv/bin/python bench/service.py --api 200           # API latency while 2 workers render
    .venv/bin/python bench/service.py --idle 30           # CPU of an idle `koubo serve`, by role

Each run starts `koubo serve` on free loopback ports with its own data folder and measures, for
each max_concurrent:
1. submit -> first progress on an idle queue (the job's generation has reported), median of
   `--first` (5);
2. `--jobs` jobs (`--speech` s of speech x a `--size`^2 template) submitted at once: wall time from
   the first submit to the last job done, against the sum of the same jobs' generation times in
   one warm process of this bench (Generator.generate, in-process, a cache of its own), half of
   them run just before the service's jobs and half just after (a machine's speed drifts by 10 %
   over minutes);
3. a batch of `--batch` (10) templates x 1 audio, against as many single jobs (other templates and
   another audio of the same length, none seen before: both compute their audio features once and
   every face track) each submitted when the previous one is done, counted from its submission to
   its result.
Times of jobs are the database's (submitted, finished), so the bench's polling (WAIT_POLL_S) adds
no delay to them.
Each phase reports the CPU seconds of `koubo serve`'s processes by role: the web process, the
consumer (its Huey workers and housekeeping process too), the generation processes, the link server
(utime + stime from /proc, sampled while the bench waits: a process that exits between two samples
loses its last half second). The batch's "CPU bound" line says how large its speed-up can be at
most: from the CPU it saves alone (singles' CPU / batch's CPU), and on this machine's cores
(singles' wall / (batch's CPU / cores)).
`--rss-jobs N` runs N small jobs on one worker and prints the resident memory of the generation
process after every 10; `--idle S` the CPU an idle `koubo serve` uses in S seconds, by role.
Figures are printed last.
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
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import httpx

from koubo import samples

T = TypeVar("T")
TEMPLATE_SECONDS = 2.0  # looped to the speech's length
PROCESS_LINE = re.compile(r"\[job ([0-9a-f-]+)\] in generation process (\d+)")
ROLES = ("web", "consumer", "generation", "link server")
CPU_SAMPLE_S = 0.5  # how often the process tree is read while the bench waits
# How often the bench asks for a job it waits for. Its figures come from the times the database
# recorded, so this only sets its own load on the server: asked 20 times a second, the web process
# answered with 4.9 CPU s during the 20 jobs of max_concurrent 1, taken from the renders.
WAIT_POLL_S = 0.25
IDLE_SETTLE_S = 10.0
_TICKS = os.sysconf("SC_CLK_TCK")


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


def child_pids(pid: int) -> list[int]:
    """The children of every thread of `pid` (a child belongs to the thread that forked it)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue  # the thread or the process has ended
    return found


def cpu_seconds(pid: int) -> tuple[int, float] | None:
    """The process's start time (ticks since boot, which tells a reused pid apart) and its CPU
    seconds, user + system; None once it has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command's closing parenthesis: field 3 is the state, 14 utime, 15 stime, 22 starttime.
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / _TICKS


def role_of(pid: int, root: int) -> str:
    if pid == root:
        return "web"
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "consumer"
    if b"--generation-process" in args:
        return "generation"
    if b"links" in args:
        return "link server"
    return "consumer"  # the consumer, its Huey workers (forked: the same command) and housekeeping


class CpuMeter:
    """CPU seconds of `koubo serve`'s process tree by role, as last sampled."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.sampled_at = 0.0
        self._seen: dict[tuple[int, int], tuple[str, float]] = {}  # (pid, start time) -> role, CPU s

    def sample(self, every: float = CPU_SAMPLE_S) -> None:
        """Read the tree again, unless it was read within `every` seconds."""
        if time.monotonic() - self.sampled_at < every:
            return
        self.sampled_at = time.monotonic()
        pending = [self.root]
        while pending:
            pid = pending.pop()
            measured = cpu_seconds(pid)
            if measured is not None:
                started, seconds = measured
                self._seen[(pid, started)] = (role_of(pid, self.root), seconds)
            pending += child_pids(pid)

    def totals(self) -> dict[str, float]:
        """CPU seconds by role now, counting processes that have exited at their last sample."""
        self.sample(every=0.0)
        by_role = dict.fromkeys(ROLES, 0.0)
        for role, seconds in self._seen.values():
            by_role[role] += seconds
        return by_role


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {role: after[role] - before[role] for role in ROLES}


def describe_cpu(used: dict[str, float]) -> str:
    return ", ".join(f"{role} {used[role]:.1f}" for role in ROLES) + f" (total {sum(used.values()):.1f})"


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
        self.cpu = CpuMeter(self.process.pid)
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
        self.cpu.sample()  # every wait of the bench asks for a job: the tree is read as it runs
        return self.client.get(f"/api/jobs/{job_id}").json()

    def wait_done(self, job_id: str, timeout: float = 600) -> dict:
        def finished() -> dict | None:
            job = self.job(job_id)
            if job["status"] in ("failed", "cancelled", "timed_out"):
                raise SystemExit(f"job {job_id} {job['status']}: {job.get('error')}")
            return job if job["status"] == "done" else None

        return wait_for(finished, timeout, f"job {job_id}", WAIT_POLL_S)

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


class WarmProcess:
    """The same jobs generated one after another in this process (Generator.generate, warm, a cache
    of its own, the service idle meanwhile): the reference the service's wall time is held against."""

    def __init__(self, work: Path, audio: Path, video: Path) -> None:
        from koubo.config import Settings
        from koubo.pipeline import Generator

        self.folder = work / "in-process"
        self.generator = Generator(Settings(data_dir=self.folder))
        self.audio, self.video = audio, video
        self._run(1)  # imports, models, the cache: not counted

    def _run(self, jobs: int) -> list[float]:
        times = []
        for _ in range(jobs):
            output = self.folder / "out.mp4"
            start = time.perf_counter()
            self.generator.generate(self.audio, self.video, output)
            times.append(time.perf_counter() - start)
            output.unlink()
        return times

    def around(self, jobs: int, measured: Callable[[], T]) -> tuple[T, list[float], float]:
        """`measured()`, with half of `jobs` run here just before it and the rest just after, so that a
        machine whose speed drifts during the bench moves both sides alike; the times of the jobs and
        the CPU seconds (all threads) they took together."""
        cpu = time.process_time()
        times = self._run(jobs // 2)
        cpu = time.process_time() - cpu
        result = measured()
        after = time.process_time()
        times += self._run(jobs - jobs // 2)
        return result, times, cpu + time.process_time() - after


def recorded(job: dict, field: str) -> datetime:
    return datetime.fromisoformat(job[field])


def span(jobs: list[dict]) -> float:
    """Seconds from the first job's submission to the last one's result, as the database recorded them."""
    return (
        max(recorded(job, "finished_at") for job in jobs) - min(recorded(job, "created_at") for job in jobs)
    ).total_seconds()


def measure(work: Path, concurrency: int, args: argparse.Namespace, media: dict, warm: WarmProcess) -> list[str]:
    server = Server(work, concurrency)
    label = f"max_concurrent {concurrency}:"
    try:
        audio = server.upload(media["speech"], "audio")
        video = server.upload(media["template"], "video")
        # 1. Idle queue: submit -> the generation's first progress.
        first_progress = []
        for _ in range(args.first):
            t0 = time.perf_counter()
            job_id = server.submit(audio, video)
            wait_for(lambda: server.job(job_id)["progress"] > 0, 120, "first progress", 0.01)
            first_progress.append(time.perf_counter() - t0)
            server.wait_done(job_id)

        # 2. Many jobs at once.
        def many_jobs() -> tuple[list[str], float, dict[str, float]]:
            cpu_before = server.cpu.totals()
            ids = [server.submit(audio, video) for _ in range(args.jobs)]
            wall = span([server.wait_done(job_id) for job_id in ids])
            return ids, wall, cpu_used(cpu_before, server.cpu.totals())

        (ids, wall, many_cpu), reference, reference_cpu = warm.around(args.jobs, many_jobs)
        # Distinct processes named in the log ("in generation process <pid>"); 0 where it names none.
        processes = {pid for job_id in ids if (pid := server.generation_process(job_id))}
        # 3. A batch of templates x 1 audio, against single jobs one after another, each side with
        # templates and an audio that no job has seen yet (no features from the cache).
        templates = [server.upload(path, "video") for path in media["templates"]]
        singles_audio = server.upload(media["singles_speech"], "audio")
        batch_audio = server.upload(media["batch_speech"], "audio")
        cpu_before = server.cpu.totals()
        # Each single's own time: the bench's delay in noticing that one is done is not counted.
        singles = sum(
            span([server.wait_done(server.submit(singles_audio, template))]) for template in templates[args.batch :]
        )
        singles_cpu = cpu_used(cpu_before, server.cpu.totals())
        cpu_before = server.cpu.totals()
        batch = span(
            [server.wait_done(job_id) for job_id in server.submit_batch([batch_audio], templates[: args.batch])]
        )
        batch_cpu = cpu_used(cpu_before, server.cpu.totals())
    finally:
        server.stop()
    total = sum(reference)
    cores = len(os.sched_getaffinity(0))
    singles_total, batch_total = sum(singles_cpu.values()), sum(batch_cpu.values())
    return [
        f"{label} the same jobs in one warm process (this bench, Generator.generate; half just before, half "
        f"just after the service's): sum {total:.1f} s, median {statistics.median(reference):.2f} s/job, "
        f"{reference_cpu:.1f} CPU s",
        f"{label} submit -> first progress (idle queue) median {statistics.median(first_progress):.2f} s, "
        f"max {max(first_progress):.2f} s ({args.first} jobs; goal: median <= 0.3 s)",
        f"{label} {args.jobs} jobs submitted at once: {wall:.1f} s wall ({wall / args.jobs:.2f} s/job) in "
        f"{len(processes)} generation process(es); the same jobs in one warm process: {total:.1f} s; "
        f"wall / in-process sum = {wall / total:.2f} (goal <= 1.1)",
        f"{label} CPU s of the {args.jobs} jobs by role: {describe_cpu(many_cpu)}; "
        f"in one warm process {reference_cpu:.1f}",
        f"{label} batch of {args.batch} templates x 1 audio {batch:.1f} s, {args.batch} single jobs one after "
        f"another {singles:.1f} s: {singles / batch:.2f}x (goal >= 1.5)",
        f"{label} CPU s of the singles: {describe_cpu(singles_cpu)}; of the batch: {describe_cpu(batch_cpu)}",
        f"{label} CPU bound: the batch saves {singles_total - batch_total:.1f} CPU s of {singles_total:.1f}, "
        f"worth {singles_total / batch_total:.2f}x at most by itself; on {cores} cores the batch needs "
        f">= {batch_total / cores:.1f} s, so {singles / (batch_total / cores):.2f}x at most here",
    ]


def measure_idle(work: Path, seconds: float) -> list[str]:
    """CPU of `koubo serve` with 1 worker and nothing to do, over `seconds` once it has settled."""
    server = Server(work, 1)
    try:
        # The link server and the web app's threads are still starting when the workers are ready.
        time.sleep(IDLE_SETTLE_S)
        before = server.cpu.totals()
        time.sleep(seconds)  # the measurement itself: nothing happens meanwhile
        used = cpu_used(before, server.cpu.totals())
    finally:
        server.stop()
    return [
        f"idle koubo serve, {seconds:g} s: CPU s by role {describe_cpu(used)}; "
        f"{100 * sum(used.values()) / seconds:.2f}% of one core",
    ]


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
    parser.add_argument("--first", type=int, default=5, help="jobs timed for submit -> first progress")
    parser.add_argument("--batch", type=int, default=10, help="templates in the batch (and single jobs)")
    parser.add_argument("--idle", type=float, default=0, help="instead: CPU of an idle koubo serve in S seconds")
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
            # Templates of different content (lengths), so that uploads are not deduplicated.
            "templates": [
                samples.write_sample_template(
                    work / f"t{i}.mp4", seconds=TEMPLATE_SECONDS + 0.04 * (i + 1), size=args.size
                )
                for i in range(2 * args.batch)
            ],
            # Other content again for the two sides of the batch comparison, 10 ms apart in length.
            "singles_speech": samples.write_sample_speech(work / "singles.wav", seconds=args.speech + 0.01),
            "batch_speech": samples.write_sample_speech(work / "batch.wav", seconds=args.speech + 0.02),
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
        elif args.idle:
            lines = measure_idle(work, args.idle)
            title = "an idle koubo serve with 1 worker"
        else:
            warm = WarmProcess(work, speech, template)
            for concurrency in args.concurrency:
                lines += measure(work, concurrency, args, media, warm)
            title = f"{args.jobs} jobs of {args.speech:g} s speech x {args.size}^2 template ({TEMPLATE_SECONDS:g} s)"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nkoubo bench/service.py ({os.cpu_count()} cores): {title}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
