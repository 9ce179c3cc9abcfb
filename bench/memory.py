"""Peak memory and temporary disk of `koubo generate`, for templates of 10 s, 1 min and 10 min.

    .venv/bin/python bench/memory.py [--lengths 10 60 600] [--speech 60] [--cache DIR]

Templates are 1080x1920 (portrait) 25 fps H.264, made here with PyAV (the sample face, talking,
pasted on a canvas and drifting a few pixels; libx264 ultrafast) and kept in --cache for the next
run. The speech is the sample speech, --speech seconds long. Each run is a fresh `koubo generate`
child process with its own data folder (no cache hit), the quality check on. While it runs its
process tree's resident memory (the sum over the tree, from /proc) and the size of its temporary
folders (the job's work folder beside the output, and TMPDIR) are sampled; RUSAGE_CHILDREN's
maxrss (the largest single process) is printed too.

Baseline, measured in the same run: a plain PyAV decode + libx264 re-encode of as many of the
template's frames as the output has (the least any generator must do), also in a fresh child.
Goal (issue 12): peak RSS < 1.5 GB and temporary disk < 2 GB for every template length.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np

from koubo import samples

WIDTH, HEIGHT, FPS = 1080, 1920, 25
FACE_SIDE = 720  # the pasted face square, pixels
SAMPLE_SECONDS = 0.2
SHOW_EVERY = 60.0
GOAL_RSS = 1.5e9
GOAL_DISK = 2e9


def make_template(path: Path, seconds: int) -> Path:
    """The talking sample face on a soft gradient, drifting slowly; written once, then reused."""
    if path.exists():
        return path
    part = path.with_suffix(".part.mp4")
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    canvas = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    canvas[..., 0] = 60 + 80 * xx / WIDTH
    canvas[..., 1] = 90 + 60 * yy / HEIGHT
    canvas[..., 2] = 110
    # The face's 4 s of talking, made once at the pasted size (talking_frame is periodic enough).
    faces = [
        cv2.resize(samples.talking_frame(i / FPS), (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_CUBIC)
        for i in range(4 * FPS)
    ]
    with av.open(str(part), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.thread_type = "FRAME"
        for i in range(seconds * FPS):
            frame = canvas.copy()
            x = (WIDTH - FACE_SIDE) // 2 + round(12 * np.sin(i / 40))
            y = 500 + round(8 * np.sin(i / 57))
            frame[y : y + FACE_SIDE, x : x + FACE_SIDE] = faces[i % len(faces)]
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    part.rename(path)
    return path


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def folder_bytes(folders: list[Path], pattern: str | None = None) -> int:
    total = 0
    for folder in folders:
        roots = list(folder.glob(pattern)) if pattern else [folder]
        for root in roots:
            for dirpath, _, files in os.walk(root):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                    except OSError:
                        pass
    return total


def measured_run(command: list[str], env: dict[str, str], out_dir: Path, tmp: Path) -> dict[str, float]:
    """Run `command`, sampling its tree's RSS and the temporary folders; the peaks and the time."""
    peaks = {"rss": 0, "disk": 0}
    start = time.perf_counter()
    # A fresh wrapper process whose only child is `command`: its RUSAGE_CHILDREN is that run's alone.
    wrapped = [sys.executable, "-c", WRAPPER, *command]
    process = subprocess.Popen(wrapped, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
    reader.start()
    shown = start
    while process.poll() is None:
        peaks["rss"] = max(peaks["rss"], tree_rss(process.pid))
        peaks["disk"] = max(peaks["disk"], folder_bytes([out_dir], ".koubo-*") + folder_bytes([tmp]))
        time.sleep(SAMPLE_SECONDS)
        if time.perf_counter() - shown > SHOW_EVERY:  # a long run says where its peaks are so far
            shown = time.perf_counter()
            print(
                f"    {shown - start:.0f} s: peak RSS so far {peaks['rss'] / 1e9:.2f} GB, disk {peaks['disk'] / 1e9:.3f} GB",
                flush=True,
            )
    reader.join()
    seconds = time.perf_counter() - start
    text = b"".join(output).decode(errors="replace")
    if process.returncode != 0:
        sys.stdout.write(text[-3000:])
        raise SystemExit(f"failed: {' '.join(command)}")
    maxrss = int(text.rsplit(MAXRSS, 1)[1].split()[0])
    return {**peaks, "maxrss": maxrss, "seconds": seconds}


MAXRSS = "maxrss-bytes:"
WRAPPER = f"""
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print("{MAXRSS}", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
sys.exit(code)
"""


BASELINE = """
import sys
import av
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with av.open(src) as inp, av.open(dst, "w") as out:
    s = inp.streams.video[0]
    s.thread_type = "AUTO"
    o = out.add_stream("libx264", rate=s.average_rate, options={"preset": "veryfast", "crf": "18"})
    o.width, o.height, o.pix_fmt = s.width, s.height, "yuv420p"
    o.codec_context.thread_type = "FRAME"
    for i, frame in enumerate(inp.decode(s)):
        if i >= n:
            break
        rgb = frame.to_ndarray(format="rgb24")
        out.mux(o.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
    out.mux(o.encode(None))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 60, 600], help="template seconds")
    parser.add_argument("--speech", type=float, default=60.0, help="speech seconds")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "koubo-bench-memory")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    speech = args.cache / f"speech-{args.speech:g}s.wav"
    if not speech.exists():
        samples.write_sample_speech(speech, seconds=args.speech)
    n_out = round(args.speech * FPS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="memory-", dir=args.cache) as work:
        work = Path(work)
        for seconds in args.lengths:
            print(f"template {seconds} s: making (cached in {args.cache}) ...", flush=True)
            template = make_template(args.cache / f"template-{WIDTH}x{HEIGHT}-{seconds}s.mp4", seconds)
            run = work / f"run-{seconds}"
            tmp, out_dir = run / "tmp", run / "out"
            tmp.mkdir(parents=True)
            out_dir.mkdir()
            env = {**os.environ, "TMPDIR": str(tmp), "KOUBO_DATA_DIR": str(run / "data")}
            base = measured_run(
                [sys.executable, "-c", BASELINE, str(template), str(out_dir / "plain.mp4"), str(n_out)],
                env,
                out_dir,
                tmp,
            )
            print(f"  baseline: {base}", flush=True)
            command = [sys.executable, "-m", "koubo.cli", "generate", "-a", str(speech), "-v", str(template)]
            ours = measured_run([*command, "-o", str(out_dir / "out.mp4")], env, out_dir, tmp)
            print(f"  koubo generate: {ours}", flush=True)
            rows.append((seconds, base, ours))

    gb = 1e9
    print(f"\n{WIDTH}x{HEIGHT} {FPS} fps templates, {args.speech:g} s speech ({n_out} output frames), check on")
    print(f"goal: peak RSS < {GOAL_RSS / gb:.1f} GB, temp disk < {GOAL_DISK / gb:.1f} GB")
    print(
        f"{'template':>9} {'run':>15} {'peak RSS GB':>12} {'maxrss GB':>10} {'temp disk GB':>13} {'seconds':>8}  goal"
    )
    for seconds, base, ours in rows:
        for name, m in (("baseline", base), ("koubo generate", ours)):
            met = "" if name == "baseline" else ("met" if m["rss"] < GOAL_RSS and m["disk"] < GOAL_DISK else "MISSED")
            print(
                f"{seconds:>8}s {name:>15} {m['rss'] / gb:>12.2f} {m['maxrss'] / gb:>10.2f} "
                f"{m['disk'] / gb:>13.3f} {m['seconds']:>8.1f}  {met}"
            )


if __name__ == "__main__":
    main()
