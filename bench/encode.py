"""Output size against fidelity for x264 CRF/preset pairs, to choose koubo's defaults.

    PYTHONPATH=$PWD .venv/bin/python bench/encode.py [--frames 24]

Frames of a real talking head (../shared/media/speaker_mpeg4.mp4 at 512x512; speaker_map.mp4
scaled to cover 1920x1080 and 3840x2160; without that folder, the sample face) go through koubo's
Mp4Writer at each CRF/preset. Printed per size: video bitrate, luma PSNR of the decoded output
against the frames given and encoding speed, relative to koubo's current default (the baseline,
measured in the same run; speed figures are only as steady as the machine is idle). Upscaled 1080p/4K pictures are softer than native ones,
so their bitrates are lower than a real 4K camera's; the ranking of the pairs is what counts.
"""

from __future__ import annotations

import argparse
import shutil
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
from koubo.media.colour import Colour, yuv420p_frame
from koubo.media.video import Mp4Writer, read_template

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
SIZES = {"512x512": (512, 512, 1.0), "1920x1080": (1920, 1080, 0.5), "3840x2160": (3840, 2160, 0.25)}
PAIRS = [(18, "veryfast"), (20, "veryfast"), (23, "veryfast"), (18, "faster"), (20, "faster"), (18, "medium"),
         (20, "medium"), (23, "medium")]
FPS = Fraction(25)


def cover(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = max(width / w, height / h)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    big = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
    y0, x0 = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return big[y0 : y0 + height, x0 : x0 + width]


def source_frames(work: Path, width: int, height: int, count: int) -> list[np.ndarray]:
    if SHARED.exists():
        name = "speaker_mpeg4.mp4" if (width, height) == (512, 512) else "speaker_map.mp4"
        frames = read_template(SHARED / name, work_dir=work).frames[:count]
    else:
        frames = [samples.talking_frame(i / float(FPS), (512, 512)) for i in range(count)]
    return [np.ascontiguousarray(cover(f, width, height)) for f in frames]


def encode(path: Path, frames: list[np.ndarray], speech: Path, crf: int, preset: str) -> float:
    """Seconds spent encoding."""
    height, width = frames[0].shape[:2]
    start = time.perf_counter()
    with Mp4Writer(
        path, width=width, height=height, fps=FPS, audio_path=speech, duration=len(frames) / FPS, crf=crf, preset=preset
    ) as writer:
        for frame in frames:
            writer.write(frame)
    return time.perf_counter() - start


def luma(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def video_kbps_and_psnr(path: Path, frames: list[np.ndarray]) -> tuple[float, float]:
    """Video bitrate, and luma PSNR against the frames as the writer hands them to x264: the
    encoder's loss alone (4:2:0's, the same for every pair, would flatten the differences)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = sum(packet.size for packet in container.demux(stream))
    with av.open(str(path)) as container:
        decoded = np.stack([luma(f).astype(np.float32) for f in container.decode(video=0)])
    given = np.stack([luma(yuv420p_frame(f, Colour())).astype(np.float32) for f in frames])
    mse = float(np.mean((decoded - given) ** 2))
    return size * 8 / (len(frames) / float(FPS)) / 1000, 10 * np.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24, help="frames at 512x512 (1080p: half, 4K: a quarter)")
    args = parser.parse_args()
    defaults = Settings()
    baseline = (defaults.video_crf, defaults.video_preset)
    pairs = PAIRS if baseline in PAIRS else [baseline, *PAIRS]
    work = Path(tempfile.mkdtemp(prefix="koubo-encode-"))
    lines: list[str] = []
    try:
        speech = samples.write_sample_speech(work / "speech.wav", seconds=args.frames / float(FPS) + 1)
        for label, (width, height, share) in SIZES.items():
            frames = source_frames(work, width, height, max(4, round(args.frames * share)))
            rows = {}
            for crf, preset in pairs:
                seconds = encode(work / "out.mp4", frames, speech, crf, preset)
                kbps, db = video_kbps_and_psnr(work / "out.mp4", frames)
                rows[(crf, preset)] = (kbps, db, len(frames) / seconds)
                print(f"{label} crf {crf} {preset}: {kbps:.0f} kb/s {db:.2f} dB", flush=True)
            base_kbps, base_db, base_fps = rows[baseline]
            lines.append(f"{label}, {len(frames)} frames (baseline: koubo's default crf {baseline[0]} {baseline[1]}):")
            for (crf, preset), (kbps, db, fps) in rows.items():
                lines.append(
                    f"  crf {crf:>2} {preset:<9} {kbps:8.0f} kb/s ({kbps / base_kbps:4.2f}x)  {db:6.2f} dB "
                    f"({db - base_db:+.2f})  {fps:5.1f} fps ({fps / base_fps:4.2f}x)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nkoubo bench/encode.py, frames from {'../shared/media' if SHARED.exists() else 'the sample face'}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
