"""Generation speed: real-time factor per stage, batch sharing and the face-track cache.

    .venv/bin/python bench/generate.py [--stages-only]

Templates: a 512x512 25 fps talking head and a 1080x1920 (portrait) one. With ../shared/media
present they are real recordings (speaker_mpeg4.mp4 is 512x512; the portrait one is speaker_map.mp4
placed on a 1080x1920 canvas); otherwise they are made from the sample face. RTF = processing
seconds / seconds of output; goals on a 2-core CPU: <= 0.5 at 512², <= 1.0 at 1080x1920.
First table: `koubo generate` as a user runs it (a fresh process, quality check on, empty caches)
on ~20 s of speech against the floor, a plain PyAV decode + RGB + libx264 encode of the same
number of frames in the same run (goals of issue 13: <= 2.0x the floor at 512², <= 1.25x at
1080x1920), with the process's start-up, each stage's busy seconds and the overlap achieved (sum
of the stages / generation's wall time); medians of --runs alternating runs. Figures are printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from koubo import samples
from koubo.config import Settings
from koubo.media.audio import decode_mono, write_wav
from koubo.media.video import Mp4Writer, read_template
from koubo.pipeline import SOUNDTRACK_RATE, GenerateOptions, Generator

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
STAGES = ("features", "decode", "face", "render", "encode", "check")


def portrait(frame: np.ndarray) -> np.ndarray:
    """A square frame on a 1080x1920 canvas, the margins filled with a blurred copy (phone style)."""
    back = cv2.GaussianBlur(cv2.resize(frame, (1920, 1920))[:, 420:1500], (0, 0), 25)
    face = cv2.resize(frame, (1080, 1080))
    back[420:1500] = face
    return back


def write_video(path: Path, frames, audio: Path, fps: int = 25, crf: int = 18) -> Path:
    h, w = frames[0].shape[:2]
    duration = len(frames) / fps
    with Mp4Writer(path, width=w, height=h, fps=Fraction(fps), audio_path=audio, duration=duration, crf=crf) as out:
        for f in frames:
            out.write(f)
    return path


def templates(work: Path, speech: Path) -> dict[str, Path]:
    if (SHARED / "speaker_mpeg4.mp4").exists():
        square = SHARED / "speaker_mpeg4.mp4"
        base = read_template(SHARED / "speaker_map.mp4", work_dir=work).frames
        tall = write_video(work / "portrait.mp4", [portrait(f) for f in base], speech)
    else:
        seconds = 5
        square = write_video(
            work / "square.mp4", [samples.talking_frame(i / 25, (512, 512)) for i in range(25 * seconds)], speech
        )
        tall = write_video(
            work / "portrait.mp4",
            [portrait(samples.talking_frame(i / 25, (512, 512))) for i in range(25 * seconds)],
            speech,
        )
    return {"512x512": square, "1080x1920": tall}


def speech_file(work: Path, seconds: float) -> Path:
    real = SHARED / "speech_zh_48k_stereo.wav"
    if real.exists():
        return real
    return samples.write_sample_speech(work / "speech.wav", seconds=seconds)


def long_speech(work: Path, seconds: float) -> Path:
    """About `seconds` of speech: the real recordings one after another (as many as fit, at least
    one), or the synthetic sample."""
    real = [SHARED / n for n in ("speech_zh_48k_stereo.wav", "speech_en_44k.wav", "speech_24bit_extensible.wav")]
    if not all(p.exists() for p in real):
        return samples.write_sample_speech(work / "long-speech.wav", seconds=seconds)
    parts: list[np.ndarray] = []
    while not parts or sum(map(len, parts)) / SOUNDTRACK_RATE < seconds - 1:
        parts.append(decode_mono(real[len(parts) % len(real)], SOUNDTRACK_RATE))
    joined = np.concatenate(parts)[: round(seconds * SOUNDTRACK_RATE)]
    return write_wav(work / "long-speech.wav", joined, SOUNDTRACK_RATE)


def fresh_generator(work: Path, name: str) -> Generator:
    return Generator(Settings(data_dir=work / f"data-{name}"))


def koubo(data_dir: Path, *args: object) -> None:
    env = {**os.environ, "KOUBO_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "koubo.cli", *map(str, args), "--no-check"]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rtf(result) -> float:
    return result.wall_seconds / result.duration


def describe(result) -> str:
    per = "  ".join(f"{s} {result.timings[s] / result.duration:.3f}" for s in STAGES if s in result.timings)
    return f"RTF {rtf(result):.3f}   [{per}]"


def floor_seconds(template: Path, speech: Path, out: Path, n_frames: int, settings: Settings) -> float:
    """The floor: the template decoded (from the start again when it runs out) to RGB and
    re-encoded with libx264 at koubo's CRF and preset for the output's `n_frames` frames, and the
    speech encoded to AAC beside it: what any generator of this output must at least spend."""
    start = time.perf_counter()
    with av.open(str(template)) as source, av.open(str(speech)) as voice, av.open(str(out), "w") as sink:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        encoded = sink.add_stream(
            "libx264", rate=25, options={"crf": str(settings.video_crf), "preset": settings.video_preset}
        )
        encoded.width, encoded.height, encoded.pix_fmt = stream.width, stream.height, "yuv420p"
        encoded.codec_context.thread_type = "FRAME"
        sound = sink.add_stream("aac", rate=48000)
        resample = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
        for frame in voice.decode(audio=0):
            for chunk in resample.resample(frame):
                sink.mux(sound.encode(chunk))
        sink.mux(sound.encode(None))
        written = 0
        while written < n_frames:  # a template shorter than the output is decoded again
            source.seek(0)
            for frame in source.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                sink.mux(encoded.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
                written += 1
                if written == n_frames:
                    break
        sink.mux(encoded.encode(None))
    return time.perf_counter() - start


def cli_generate(data_dir: Path, speech: Path, template: Path, out: Path) -> tuple[float, dict]:
    """`koubo generate` (quality check on) as a user runs it: a fresh process, an empty data folder.
    Its wall time from start to exit, and its --json result (the stages' busy seconds)."""
    env = {**os.environ, "KOUBO_DATA_DIR": str(data_dir)}
    cmd = [sys.executable, "-m", "koubo.cli", "generate", "-a", str(speech), "-v", str(template), "-o", str(out)]
    cpu = children_cpu()
    start = time.perf_counter()
    done = subprocess.run([*cmd, "--json"], check=True, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_seconds"] = children_cpu() - cpu
    return seconds, result


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stage_table(work: Path, speech: Path, tpl: dict[str, Path], runs: int) -> list[str]:
    """`koubo generate` (fresh process, check on, empty caches) against the floor, `runs` times
    each, alternating; medians, and where the median run's time went."""
    with av.open(str(speech)) as recording:
        seconds = float(recording.duration / av.time_base)
    lines = [f"koubo generate (fresh process, quality check on, empty caches) vs the floor, {seconds:.1f} s of speech,"]
    lines.append(f"median of {runs} runs each:")
    header = f"  {'template':>9} {'floor s':>8} {'cli s':>7} {'ratio':>6} {'goal':>5} {'cpu s':>6} {'start s':>8}"
    lines.append(header + "".join(f" {s:>9}" for s in STAGES) + f" {'sum s':>7} {'overlap':>8}")
    goals = {"512x512": 2.0, "1080x1920": 1.25}
    settings = Settings()
    for name, path in tpl.items():
        floors, clis = [], []
        for k in range(runs):
            clis.append(cli_generate(work / f"cli-{name}-{k}", speech, path, work / f"cli-{name}-{k}.mp4"))
            floors.append(floor_seconds(path, speech, work / f"floor-{name}.mp4", clis[-1][1]["frames"], settings))
        floor = float(np.median(floors))
        wall, result = sorted(clis, key=lambda run: run[0])[len(clis) // 2]
        timings = result["timings"]
        busy = sum(timings.values())
        inside = result["wall_seconds"]
        cells = "".join(f" {timings.get(s, 0.0):>9.2f}" for s in STAGES)
        lines.append(
            f"  {name:>9} {floor:>8.2f} {wall:>7.2f} {wall / floor:>6.2f} {goals.get(name, 0):>5.2f}"
            f" {result['cpu_seconds']:>6.2f} {wall - inside:>8.2f}"
            f"{cells} {busy:>7.2f} {busy / inside:>7.2f}x"
        )
        spread = ", ".join(f"{w:.2f}" for w, _ in clis)
        lines.append(f"  {'':>9} floor runs {', '.join(f'{f:.2f}' for f in floors)}; cli runs {spread}")
    lines.append(
        "  (cpu s: the process's user + system seconds; start s: its start, imports and model loading, before"
        " generation;\n   stages: seconds each"
        " was busy;\n   they overlap in threads, so overlap = their sum / generation's own wall time)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--stages-only", action="store_true", help="only the floor and per-stage table")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side of the floor table (median)")
    parser.add_argument("--speech", type=float, default=20.0, help="seconds of speech for the floor table")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="koubo-bench-"))
    lines: list[str] = []
    try:
        speech = speech_file(work, 8.0)
        tpl = templates(work, speech)
        lines += stage_table(work, long_speech(work, args.speech), tpl, args.runs)
        if not args.stages_only:
            options = GenerateOptions(check=False)

            lines.append("real-time factor (processing s / output s) per stage:")
            for name, path in tpl.items():
                # Two encodings of the same template: distinct content, so each is face-tracked once.
                frames = read_template(path, work_dir=work).frames
                other = write_video(work / f"{name}-b.mp4", frames, speech, crf=19)
                del frames
                gen = fresh_generator(work, name)
                first = gen.generate(speech, path, work / f"out-{name}.mp4", options)
                steady = gen.generate(speech, other, work / f"out-{name}-b.mp4", options)
                lines.append(f"  {name}, first job of a fresh process: {describe(first)}")
                lines.append(f"  {name}, next job of the same process: {describe(steady)}")
                again = gen.generate(speech, other, work / f"out-{name}-c.mp4", options)
                lines.append(
                    f"  {name}, same template again (face track from the cache): RTF {rtf(again):.3f}, "
                    f"{steady.wall_seconds / again.wall_seconds:.2f}x faster than its first run (goal >= 1.3x)"
                )
                checked = gen.generate(speech, other, work / f"out-{name}-checked.mp4", GenerateOptions(check=True))
                lines.append(
                    f"  {name}, quality check on the encoded output: +{checked.timings['check'] / checked.duration:.3f} RTF;"
                    f" sync offset {checked.report.sync_offset}, confidence {checked.report.sync_confidence:.2f}"
                )

            # The same, as a user runs it: `koubo generate` twice on one template, one data folder.
            timings = []
            for k in range(2):
                t0 = time.perf_counter()
                koubo(work / "twice", "generate", "-a", speech, "-v", tpl["512x512"], "-o", work / f"twice{k}.mp4")
                timings.append(time.perf_counter() - t0)
            lines.append(
                f"koubo generate twice on one 512x512 template: first {timings[0]:.2f} s, second {timings[1]:.2f} s "
                f"-> {timings[0] / timings[1]:.2f}x faster (goal >= 1.3x)"
            )

            # A batch of 3 templates with one audio vs 3 separate runs, each as a user would run them:
            # `koubo batch` once vs `koubo generate` three times, every run with its own empty cache.
            # Three distinct files (different encodings), so the face cache cannot help either side.
            frames = read_template(tpl["512x512"], work_dir=work).frames
            copies = [write_video(work / f"tpl{k}.mp4", frames, speech, crf=17 + k) for k in range(3)]
            del frames
            t0 = time.perf_counter()
            for k, copy in enumerate(copies):
                koubo(work / f"separate{k}", "generate", "-a", speech, "-v", copy, "-o", work / f"sep{k}.mp4")
            separate = time.perf_counter() - t0
            t0 = time.perf_counter()
            koubo(work / "batch", "batch", "-a", speech, "-v", *copies, "-o", work / "batch-out")
            batch = time.perf_counter() - t0
            lines.append(
                f"batch of 3 templates x 1 audio (koubo batch): {batch:.2f} s vs 3 separate koubo generate runs "
                f"{separate:.2f} s -> batch {separate / batch:.2f}x faster"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nkoubo bench/generate.py on {sys.platform}, inputs from {'../shared/media' if SHARED.exists() else 'samples'}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
