"""Face tracking against face size: detection rate, landmark precision and time per frame.

    .venv/bin/python bench/face_track.py [--frames 20] [--baseline main]

The sample face (tests' talking_frame) is pasted so that it is 48 ... 400 px wide into a 1920x1080
frame of soft gradients (and 48 px into a 3840x2160 one). Each size is tracked by this checkout's
tracker and by the baseline's (koubo/face/tracker.py as it is at git ref --baseline, loaded from
git, so both run in the same process on the same frames). Landmark error is the mean distance to
the truth, in eye-corner distances; the truth is the baseline tracker on the face filling its own
256-pixel frame, mapped to where the face was pasted. Figures are printed last.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from koubo.face import geometry
from koubo.face.tracker import track_faces
from koubo.samples import talking_frame

from media_fixtures import FACE_SHARE, face_on_canvas

FPS = 25.0
CASES = [((1920, 1080), w) for w in (48, 64, 96, 160, 256, 400)] + [((3840, 2160), 48)]


def baseline_tracker(ref: str):
    """track_faces of koubo/face/tracker.py at git `ref`, imported under another module name."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:koubo/face/tracker.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_tracker.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_tracker", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.track_faces


def measure(tracker, frames: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float]:
    """(share of frames with a face, mean landmark error in eye spans, the same error less each
    landmark's constant offset over the frames (what moves wrongly, not where the mesh puts a
    point), ms per frame)."""
    start = time.perf_counter()
    track = tracker(frames, fps=FPS, workers=1)
    ms = 1000 * (time.perf_counter() - start) / len(frames)
    found = track.present
    if not found.any():
        return 0.0, float("nan"), float("nan"), ms
    scale = geometry.face_scale(truth[found])
    offset = track.landmarks[found] - truth[found]
    error = np.linalg.norm(offset, axis=-1).mean(-1) / scale
    moving = np.linalg.norm(offset - offset.mean(0), axis=-1).mean(-1) / scale
    return float(found.mean()), float(error.mean()), float(moving.mean()), ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--baseline", default="main")
    args = parser.parse_args()
    old = baseline_tracker(args.baseline)
    close_up = np.stack([talking_frame(i / FPS) for i in range(args.frames)])
    reference = old(close_up, fps=FPS, workers=1).landmarks
    rows = []
    for canvas, width in CASES:
        side = round(width / FACE_SHARE)
        at = ((canvas[0] - side) // 3, (canvas[1] - side) // 2)
        made = [face_on_canvas(i / FPS, width, canvas, at) for i in range(args.frames)]
        frames = np.stack([f for f, _ in made])
        truth = reference * made[0][1] + at
        rows.append((canvas, width, measure(old, frames, truth), measure(track_faces, frames, truth)))
        print(f"measured {canvas[0]}x{canvas[1]} face {width}px", flush=True)

    print(f"\nface tracking, {args.frames} frames per size; baseline = {args.baseline}, new = this checkout")
    print("err: mean landmark error in eye spans; moving: the same less each landmark's constant offset")
    print(
        f"{'canvas':>10} {'face':>5} | {'found old':>9} {'new':>5} | {'err old':>8} {'new':>6} | "
        f"{'moving old':>10} {'new':>6} | {'ms/f old':>8} {'new':>6} {'new/old':>7}"
    )
    for (w, h), width, (f0, e0, m0, t0), (f1, e1, m1, t1) in rows:
        print(
            f"{w}x{h:<5} {width:>4}px | {f0:>9.0%} {f1:>5.0%} | {e0:>8.3f} {e1:>6.3f} | "
            f"{m0:>10.3f} {m1:>6.3f} | {t0:>8.1f} {t1:>6.1f} {t1 / t0:>7.2f}"
        )


if __name__ == "__main__":
    main()
