"""Contact sheets of the mouth over consecutive output frames, for the eye: small and hard templates.

    .venv/bin/python bench/face_sheets.py [--out /tmp/faces-sheets] [--seconds 4]

Needs ../shared/media (real talking heads). Two templates are made from speaker_map.mp4 and lip-synced
to the first seconds of speech_en_44k.wav:
- small: the speaker shrunk so the face is ~60 px wide, on a 1080x1920 canvas;
- hard: the speaker with a hand-like patch over the mouth for 0.8 s, then a hard cut to speaker_vfr.mp4.
Each sheet shows, per row, the template's mouth region (top) and the output's (bottom) for 12
consecutive frames, enlarged; the report's counts are printed last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import wave
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from koubo.config import Settings
from koubo.face import geometry
from koubo.face.tracker import track_faces
from koubo.media.audio import load_audio
from koubo.pipeline import Generator

from media_fixtures import write_frames

SHARED = ROOT.parent / "shared" / "media"
FPS = 25
PER_ROW = 12
TILE = 128


def decode(path: Path, limit: int | None = None, size: int | None = None) -> np.ndarray:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            frames.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) if size else image)
            if limit and len(frames) >= limit:
                break
    return np.stack(frames)


def speech_clip(path: Path, seconds: float) -> Path:
    audio = load_audio(SHARED / "speech_en_44k.wav")
    samples = np.clip(audio.samples[: int(seconds * 16000)] * 32767, -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(samples.tobytes())
    return path


def small_template(frames: np.ndarray, face_width: int = 60) -> np.ndarray:
    scale = face_width / float(np.nanmedian(track_width(frames[:5])))
    side = round(frames.shape[1] * scale)
    canvas = np.empty((1920, 1080, 3), np.uint8)
    yy, xx = np.mgrid[0:1920, 0:1080].astype(np.float32)
    canvas[..., 0], canvas[..., 1], canvas[..., 2] = 60 + 80 * xx / 1080, 90 + 60 * yy / 1920, 110
    out = np.repeat(canvas[None], len(frames), axis=0)
    for i, f in enumerate(frames):
        out[i, 1100 : 1100 + side, 500 : 500 + side] = cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA)
    return out


def track_width(frames: np.ndarray) -> np.ndarray:
    lm = track_faces(frames, fps=FPS).landmarks
    return lm[..., 0].max(-1) - lm[..., 0].min(-1)


def hard_template(first: np.ndarray, second: np.ndarray, hand: range, cut: int) -> np.ndarray:
    frames = np.concatenate([first[:cut], second[cut:]]).copy()
    lm = track_faces(first[hand.start : hand.stop], fps=FPS).landmarks
    for k, i in enumerate(hand):
        mouth = lm[k][geometry.LIPS_OUTER_UPPER + geometry.LIPS_OUTER_LOWER]
        centre = mouth.mean(0)
        half = float(geometry.face_scale(lm[k]))
        axes = (int(0.75 * half), int(0.42 * half))
        cv2.ellipse(frames[i], (int(centre[0]), int(centre[1] + 0.1 * half)), axes, -8, 0, 360, (205, 150, 122), -1)
        for f in range(4):
            x = int(centre[0] - 0.55 * half + f * 0.36 * half)
            cv2.line(
                frames[i], (x, int(centre[1] - 0.25 * half)), (x + 12, int(centre[1] + 0.4 * half)), (160, 105, 85), 5
            )
    return frames


def sheet(template: np.ndarray, output: np.ndarray, path: Path, start: int, rows: int) -> None:
    track = track_faces(template, fps=FPS)
    lines = []
    for r in range(rows):
        tops, bottoms = [], []
        for i in range(start + r * PER_ROW, start + (r + 1) * PER_ROW):
            lm = track.landmarks[i] if track.present[i] else None
            if lm is None:
                x0, y0, x1, y1 = 0, 0, template.shape[2], template.shape[1]
            else:
                pts = lm[geometry.LOWER_FACE]
                c, half = pts.mean(0), 0.6 * float(np.ptp(pts, axis=0).max())
                x0, y0 = int(max(0, c[0] - half)), int(max(0, c[1] - half))
                x1, y1 = int(min(template.shape[2], c[0] + half)), int(min(template.shape[1], c[1] + half))
            for source, row in ((template, tops), (output, bottoms)):
                tile = cv2.resize(source[i, y0:y1, x0:x1], (TILE, TILE), interpolation=cv2.INTER_CUBIC)
                cv2.putText(tile, str(i), (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
                row.append(tile)
        lines += [np.hstack(tops), np.hstack(bottoms), np.zeros((6, TILE * PER_ROW, 3), np.uint8)]
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack(lines), cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/faces-sheets"))
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = int(args.seconds * FPS)
    work = Path(tempfile.mkdtemp(prefix="face-sheets-"))
    speech = speech_clip(work / "speech.wav", args.seconds)
    first = decode(SHARED / "speaker_map.mp4", n)
    second = decode(SHARED / "speaker_vfr.mp4", n, size=first.shape[1])
    generator = Generator(Settings(data_dir=work / "data"))
    reports = {}
    hand, cut = range(30, 50), 70
    for name, frames in (("small", small_template(first)), ("hard", hard_template(first, second, hand, cut))):
        template = write_frames(work / f"{name}.mp4", frames)
        result = generator.generate(speech, template, work / f"{name}-out.mp4")
        output = decode(result.output)
        source = decode(template)
        rows = (n - 4) // PER_ROW
        sheet(source, output, args.out / f"{name}.png", 0, min(rows, 8))
        reports[name] = result.report.describe() if result.report else "no report"
    for name, text in reports.items():
        print(f"{name}: {text}")
    print(f"sheets in {args.out}")


if __name__ == "__main__":
    main()
