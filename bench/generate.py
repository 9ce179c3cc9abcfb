"""Generation speed: real-time factor per stage, batch sharing and the face-track cache.

    .venv/bin/python bench/generate.py [--seconds 8]

Templates: a 512x512 25 fps talking head and a 1080x1920 (portrait) one. With ../shared/media
present they are real recordings (speaker_mpeg4.mp4 is 512x512; the portrait one is speaker_map.mp4
placed on a 1080x1920 canvas); otherwise they are made from the sample face. RTF = processing
seconds / seconds of output; goals on a 2-core CPU: <= 0.5 at 512², <= 1.0 at 1080x1920.
Figures are printed last.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from koubo import samples
from koubo.config import Settings
from koubo.media.video import Mp4Writer, read_template
from koubo.pipeline import GenerateOptions, Generator

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
STAGES = ("probe", "decode", "face", "features", "render", "encode", "check")


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
            work / "portrait.mp4", [portrait(samples.talking_frame(i / 25, (512, 512))) for i in range(25 * seconds)], speech
        )
    return {"512x512": square, "1080x1920": tall}


def speech_file(work: Path, seconds: float) -> Path:
    real = SHARED / "speech_zh_48k_stereo.wav"
    if real.exists():
        return real
    return samples.write_sample_speech(work / "speech.wav", seconds=seconds)


def fresh_generator(work: Path, name: str) -> Generator:
    return Generator(Settings(data_dir=work / f"data-{name}"))


def rtf(result) -> float:
    return result.processing_seconds / result.duration


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="koubo-bench-"))
    lines: list[str] = []
    try:
        speech = speech_file(work, 8.0)
        tpl = templates(work, speech)
        options = GenerateOptions(check=False)

        lines.append("real-time factor (processing s / output s), first run, empty caches:")
        for name, path in tpl.items():
            gen = fresh_generator(work, name)
            result = gen.generate(speech, path, work / f"out-{name}.mp4", options)
            per = "  ".join(f"{s} {result.timings.get(s, 0.0) / result.duration:.3f}" for s in STAGES if s in result.timings)
            lines.append(f"  {name}: RTF {rtf(result):.3f}   [{per}]")
            checked = gen.generate(speech, path, work / f"out-{name}-checked.mp4", GenerateOptions(check=True))
            lines.append(
                f"  {name}: with the quality check on the output: RTF {rtf(checked):.3f}"
                f" (check {checked.timings['check'] / checked.duration:.3f}); "
                f"sync offset {checked.report.sync_offset}, confidence {checked.report.sync_confidence:.2f}"
            )

        # Second run on the same template: the face track comes from the cache.
        gen = fresh_generator(work, "repeat")
        path = tpl["512x512"]
        t0 = time.perf_counter()
        gen.generate(speech, path, work / "first.mp4", options)
        first = time.perf_counter() - t0
        gen.cache.clear_memory()  # a later job in another process would only have the disk copy
        t0 = time.perf_counter()
        second_result = gen.generate(speech, path, work / "second.mp4", options)
        second = time.perf_counter() - t0
        lines.append(
            f"same template twice (512x512): first {first:.2f} s, second {second:.2f} s "
            f"(face track cached: {second_result.cached['face']}) -> {first / second:.2f}x faster (goal >= 1.3x)"
        )

        # A batch of 3 templates with one audio vs 3 separate runs (each with its own empty cache).
        # Three distinct files (different encodings), so the face cache cannot help either side.
        frames = read_template(tpl["512x512"], work_dir=work).frames
        copies = [write_video(work / f"tpl{k}.mp4", frames, speech, crf=17 + k) for k in range(3)]
        t0 = time.perf_counter()
        for k, copy in enumerate(copies):
            fresh_generator(work, f"separate{k}").generate(speech, copy, work / f"sep{k}.mp4", options)
        separate = time.perf_counter() - t0
        t0 = time.perf_counter()
        fresh_generator(work, "batch").batch([speech], copies, work / "batch", options)
        batch = time.perf_counter() - t0
        lines.append(
            f"batch of 3 templates × 1 audio: {batch:.2f} s vs 3 separate runs {separate:.2f} s "
            f"-> {separate / batch:.2f}x"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nkoubo bench/generate.py on {sys.platform}, inputs from {'../shared/media' if SHARED.exists() else 'samples'}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
