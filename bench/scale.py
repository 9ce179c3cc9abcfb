"""Throughput of one worker against two on this machine: output minutes per wall minute, same batch.

Each run gets a fresh data folder (the embedded SQLite queue and database: the same code path as
Redis + PostgreSQL), the same generated inputs (koubo.samples) and the same batch, and starts
`koubo worker` processes that take jobs until the batch is done. Wall time runs from the workers'
start to the last job's end, so it includes their start-up, as a real batch's would.

On a 2-core machine two workers cannot double anything; on a machine with more cores (or two
machines) the second column is the one that grows. Usage: python bench/scale.py [--jobs 4] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from koubo.config import Settings
from koubo.jobs.service import JobService, JobStatus
from koubo.samples import write_sample_speech, write_sample_template

POLL_S = 0.5
RUN_TIMEOUT_S = 1800


def make_inputs(folder: Path, jobs: int, seconds: float) -> tuple[list[Path], Path]:
    speeches = [write_sample_speech(folder / f"speech{i}.wav", seconds=seconds + 0.1 * i) for i in range(jobs)]
    return speeches, write_sample_template(folder / "template.mp4", seconds=2.0, size=256)


def submit_batch(service: JobService, speeches: list[Path], template: Path) -> list[str]:
    def stage(path: Path, kind: str) -> str:
        staged = service.upload_tmp_dir / f"{time.monotonic_ns()}{path.suffix}"
        shutil.copyfile(path, staged)
        return service.add_asset(staged, path.name, kind).id  # type: ignore[arg-type]

    video = stage(template, "video")
    audios = [stage(path, "audio") for path in speeches]
    return [job.id for job in service.submit_batch(audios, [video]).jobs]


def start_workers(data_dir: Path, count: int) -> list[subprocess.Popen[bytes]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KOUBO_")}
    env |= {"KOUBO_DATA_DIR": str(data_dir), "KOUBO_CONFIG": str(data_dir / "none.toml")}
    command = [sys.executable, "-m", "koubo.cli", "worker", "--concurrency", "1", "--device", "cpu"]
    return [
        subprocess.Popen(
            [*command, "--name", f"bench-{i}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(count)
    ]


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run(workers: int, speeches: list[Path], template: Path) -> tuple[float, float]:
    """(output seconds, wall seconds) of the batch with `workers` worker processes."""
    with tempfile.TemporaryDirectory(prefix="koubo-bench-scale-") as folder:
        service = JobService(Settings(data_dir=Path(folder) / "data"))
        try:
            job_ids = submit_batch(service, speeches, template)
            started = time.monotonic()
            processes = start_workers(service.settings.data_dir, workers)
            try:
                views = wait_for(service, job_ids)
            finally:
                stop_workers(processes)
            wall = time.monotonic() - started
        finally:
            service.close()
    failed = [view.id for view in views if view.status != JobStatus.done]
    if failed:
        raise SystemExit(f"{len(failed)} job(s) did not finish: {failed}")
    return sum(view.audio.duration for view in views), wall


def wait_for(service: JobService, job_ids: list[str]):
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        views = [service.get(job_id) for job_id in job_ids]
        if all(view.status not in (JobStatus.queued, JobStatus.running) for view in views):
            return views
        time.sleep(POLL_S)
    raise SystemExit("the batch did not finish in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the batch (default 4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="speech per job, seconds (default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="koubo-bench-inputs-") as folder:
        speeches, template = make_inputs(Path(folder), args.jobs, args.seconds)
        results = {count: run(count, speeches, template) for count in (1, 2)}
    print(f"batch: {args.jobs} jobs, {args.seconds:.1f}+ s of speech each, {os.cpu_count()} CPU cores")
    print(f"{'':28}{'1 worker':>12}{'2 workers':>12}")
    print(f"{'output seconds':28}" + "".join(f"{results[c][0]:>12.1f}" for c in (1, 2)))
    print(f"{'wall seconds':28}" + "".join(f"{results[c][1]:>12.1f}" for c in (1, 2)))
    rates = {c: results[c][0] / results[c][1] for c in (1, 2)}
    print(f"{'output min per wall min':28}" + "".join(f"{rates[c]:>12.3f}" for c in (1, 2)))
    print(f"two workers / one worker: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
