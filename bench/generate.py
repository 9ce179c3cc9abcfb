"""Generation speed: real-time factor per stage, batch sharing and the face-track cache.

    .venv/bin/python bench/generate.py [--stages-only]

Templates: a 512x512 25 fps talking head and a 1080x1920 (portrait) one. With ../shared/media
present they are real recordings (speaker_mpeg4.mp4 is 512x512; the portrait one is speaker_map.mp4
placed on a 1080x1920 canvas); otherwise they are made from the sample face. RTF = processing
seconds / seconds of output; goals on a 2-core CPU: <= 0.5 at 512², <= 1.0 at 1080x1920.
First table: `koubo generate` with the quality check on against the floor, a plain PyAV
decode + RGB + libx264 encode of the same frames in the same run (goals of issue 13: <= 2.0x the
floor at 512², <= 1.25x at 1080x1920), with each stage's busy seconds and the overlap achieved
(sum of the stages / wall time). Figures are printed last.
"""

from __future__ import annotations

import argparse
import os
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
from koubo.media.video import Mp4Writer, read_template
from koubo.pipeline import GenerateOptions, Generator

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


def floor_seconds(template: Path, out: Path, n_frames: int, settings: Settings) -> float:
    """The floor: a plain PyAV decode -> RGB -> libx264 encode of the output's frames (same CRF
    and preset as koubo), no audio: what any generator of this output must at least spend."""
    start = time.perf_counter()
    with av.open(str(template)) as source, av.open(str(out), "w") as sink:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        encoded = sink.add_stream(
            "libx264", rate=25, options={"crf": str(settings.video_crf), "preset": settings.video_preset}
        )
        encoded.width, encoded.height, encoded.pix_fmt = stream.width, stream.height, "yuv420p"
        encoded.codec_context.thread_type = "FRAME"
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


def stage_table(work: Path, speech: Path, tpl: dict[str, Path]) -> list[str]:
    """koubo generate (check on, fresh caches) against the floor, and where its time goes."""
    lines = ["koubo generate (quality check on, fresh caches) vs the floor (plain PyAV transcode):"]
    header = f"  {'template':>9} {'floor s':>8} {'wall s':>8} {'ratio':>6} {'goal':>5}"
    lines.append(header + "".join(f" {s:>9}" for s in STAGES) + f" {'sum s':>7} {'overlap':>8}")
    goals = {"512x512": 2.0, "1080x1920": 1.25}
    for name, path in tpl.items():
        settings = Settings(data_dir=work / f"stages-{name}")
        result = Generator(settings).generate(speech, path, work / f"stages-{name}.mp4", GenerateOptions(check=True))
        floor = floor_seconds(path, work / f"floor-{name}.mp4", result.frames, settings)
        wall = result.wall_seconds
        busy = sum(result.timings.values())
        cells = "".join(f" {result.timings.get(s, 0.0):>9.2f}" for s in STAGES)
        lines.append(
            f"  {name:>9} {floor:>8.2f} {wall:>8.2f} {wall / floor:>6.2f} {goals.get(name, 0):>5.2f}"
            f"{cells} {busy:>7.2f} {busy / wall:>7.2f}x"
        )
    lines.append("  (stages: seconds each was busy; they overlap in threads, so overlap = sum / wall)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--stages-only", action="store_true", help="only the floor and per-stage table")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="koubo-bench-"))
    lines: list[str] = []
    try:
        speech = speech_file(work, 8.0)
        tpl = templates(work, speech)
        lines += stage_table(work, speech, tpl)
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
