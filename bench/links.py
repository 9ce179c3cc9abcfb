"""Direct links: koubo's link server against Debian's nginx serving the same file, in one run.

Both serve one 150 MB video over loopback with sendfile: nginx from a plain static location (the
baseline: "nginx serving the outputs folder"), koubo through a signed link, checked on every
request. curl processes download it at 1 and at 16 concurrent clients; for each server the
throughput and its CPU seconds per GB transferred (user + system of its processes, from /proc)
are printed, then the ratios. Goal: koubo >= 0.9x nginx's throughput at <= 2x its CPU per GB.

    .venv/bin/python bench/links.py [--size-mb 150] [--rounds 3]

nginx runs `worker_processes auto` (one per core), as Debian's packaged config does; koubo's link
server is one process whose transfers run in threads, so both may use every core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from koubo.config import Settings
from koubo.links.signing import signed_link

import nginx_server
from job_fixtures import finished_job
from servers import free_port, wait_until

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CURL = shutil.which("curl") or "curl"


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def download(url: str, clients: int, repeats: int, expected: int) -> float:
    """Seconds for `clients` curl processes to each fetch `url` `repeats` times over one connection."""
    command = [CURL, "-sS", "--fail", "-w", "%{size_download}\\n"]
    for _ in range(repeats):
        command += ["-o", "/dev/null", url]
    started = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    elapsed = time.perf_counter() - started
    for process, output in zip(processes, outputs, strict=True):
        sizes = [int(line) for line in output.split()]
        if process.returncode != 0 or sizes != [expected] * repeats:
            raise SystemExit(f"a download failed: exit {process.returncode}, sizes {sizes}")
    return elapsed


@contextmanager
def koubo_links(work: Path, data_dir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("KOUBO_")},
        "KOUBO_CONFIG": str(work / "none.toml"),
        "KOUBO_DATA_DIR": str(data_dir),
        "KOUBO_LINKS_PORT": str(port),
    }
    process = subprocess.Popen([sys.executable, "-m", "koubo.cli", "links"], env=env, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            return subprocess.run([CURL, "-s", "-o", "/dev/null", url + "/d/x/y"], check=False).returncode == 0

        wait_until(answers, 60, "koubo links")
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements per server and load")
    args = parser.parse_args()
    if not nginx_server.available():
        raise SystemExit("nginx is not installed: apt-get install nginx")

    with tempfile.TemporaryDirectory(prefix="koubo-bench-links-") as temp:
        work = Path(temp)
        data_dir = work / "data"
        job_id = finished_job(work, data_dir)
        output = next(data_dir.glob(f"outputs/{job_id}/*.mp4"))
        with output.open("wb") as out:
            block = os.urandom(1024 * 1024)
            for _ in range(args.size_mb):
                out.write(block)
        size = output.stat().st_size
        relative = output.relative_to(data_dir / "outputs").as_posix()

        nginx_port = free_port()
        static = f"""    server {{
        listen 127.0.0.1:{nginx_port};
        sendfile on;
        tcp_nopush on;
        location /files/ {{ alias {data_dir.resolve()}/outputs/; }}
    }}"""
        nginx = nginx_server.start_nginx(work / "nginx", static, nginx_port)
        try:
            with koubo_links(work, data_dir) as (koubo_url, koubo_pid):
                link = urlsplit(signed_link(Settings(data_dir=data_dir), job_id, output.name).url)
                targets = {
                    "nginx": (f"{nginx.url}/files/{relative}", lambda: nginx.pids()),
                    "koubo": (f"{koubo_url}{link.path}?{link.query}", lambda: [koubo_pid]),
                }
                results = measure(targets, size, args.rounds)
        finally:
            nginx.stop()
    report(results, size)


Result = dict[tuple[str, int], list[tuple[float, float]]]  # (server, clients) -> [(MB/s, CPU s/GB)]


def measure(targets: dict[str, tuple[str, object]], size: int, rounds: int) -> Result:
    results: Result = {}
    for clients, repeats in ((1, 8), (16, 2)):
        for _ in range(rounds):
            for name, (url, pids) in targets.items():
                download(url, 1, 1, size)  # warm the page cache and the connection path
                before = cpu_seconds(pids())  # type: ignore[operator]
                seconds = download(url, clients, repeats, size)
                cpu = cpu_seconds(pids()) - before  # type: ignore[operator]
                gigabytes = clients * repeats * size / 1e9
                results.setdefault((name, clients), []).append((gigabytes * 1000 / seconds, cpu / gigabytes))
    return results


def report(results: Result, size: int) -> None:
    print(f"\nfile {size / 1e6:.0f} MB over loopback, {os.cpu_count()} cores; medians of the rounds")
    print(f"{'clients':>7} {'server':>6} {'MB/s':>9} {'CPU s/GB':>9}")
    ratios = []
    for clients in (1, 16):
        medians = {}
        for name in ("nginx", "koubo"):
            rates = [rate for rate, _ in results[(name, clients)]]
            cpus = [cpu for _, cpu in results[(name, clients)]]
            medians[name] = (statistics.median(rates), statistics.median(cpus))
            print(f"{clients:>7} {name:>6} {medians[name][0]:>9.0f} {medians[name][1]:>9.3f}")
        ratios.append(
            (clients, medians["koubo"][0] / medians["nginx"][0], medians["koubo"][1] / max(medians["nginx"][1], 1e-9))
        )
    print()
    for clients, throughput, cpu in ratios:
        print(
            f"{clients:>2} client(s): koubo/nginx throughput {throughput:.2f}x (goal >= 0.9), CPU per GB {cpu:.2f}x (goal <= 2)"
        )


if __name__ == "__main__":
    main()
