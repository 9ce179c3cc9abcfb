"""The painted mouth of the warp path over its whole range, next to real open mouths.

    .venv/bin/python bench/mouth_sweep.py [--out /tmp/mouth-sweep] [--frame 40]

Renders one frame of the silent template (../shared/media/template_silent_halfbody.mp4) with the
warp path at openings 0.15 .. 1.0 for a rounded, a neutral and a spread shape (rows), passes the
frames through H.264 as the pipeline writes them, and crops the mouth. A fourth row shows real
open mouths from the talking templates, scaled to the same face size, so the painted ones are
judged against what a real mouth looks like at this size. Writes `sweep.png` at the output's own
size and `sweep_x4.png` enlarged four times; prints the mean colour of the opening per tile last.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
SILENT = "template_silent_halfbody.mp4"
TALKING = ("speaker_map.mp4", "speaker_mpeg4.mp4", "speaker_vfr.mp4")
APERTURES = (0.15, 0.3, 0.45, 0.6, 0.8, 1.0)
SHAPES = (("rounded", -1.0), ("neutral", 0.0), ("spread", 1.0))


def first_frames(path: Path, count: int) -> np.ndarray:
    frames = []
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k >= count:
                break
            frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


def through_h264(frames: np.ndarray) -> np.ndarray:
    """The frames as a viewer sees them: libx264 CRF 18 yuv420p, as the pipeline writes, decoded."""
    import io

    buffer = io.BytesIO()
    h, w = frames.shape[1:3]
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(25), options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: h - h % 2, : w - w % 2]))))
        out.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def mouth_crop(frame: np.ndarray, landmarks: np.ndarray, to_scale: float | None = None) -> np.ndarray:
    """The mouth, 1.1 eye-distances wide and 0.75 tall, resized so the face scale is `to_scale`."""
    from koubo.face import geometry as geo

    scale = float(geo.face_scale(landmarks))
    centre = landmarks[geo.LIPS_OUTER_UPPER + geo.LIPS_OUTER_LOWER, :2].mean(0)
    half_w, half_h = 0.55 * scale, 0.375 * scale
    x0, y0 = int(round(centre[0] - half_w)), int(round(centre[1] - half_h))
    x1, y1 = int(round(centre[0] + half_w)), int(round(centre[1] + half_h))
    crop = frame[max(0, y0) : y1, max(0, x0) : x1]
    if to_scale is not None and abs(to_scale - scale) > 0.5:
        k = to_scale / scale
        crop = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    return crop


def real_open_mouths(scale: float, per_video: int = 2) -> list[np.ndarray]:
    """The widest real openings of each talking template, at the silent template's face size."""
    from koubo.face import geometry as geo
    from koubo.face.tracker import track_faces

    crops = []
    for name in TALKING:
        frames = first_frames(SHARED / name, 125)
        track = track_faces(frames, fps=25.0)
        aperture = np.where(track.present, np.nan_to_num(geo.mouth_aperture(track.landmarks)), -1.0)
        for k in np.argsort(aperture)[::-1][: 12 * per_video : 12]:
            crops.append(mouth_crop(frames[k], track.landmarks[k], scale))
    return crops


def grid(rows: list[list[np.ndarray]], labels: list[list[str]]) -> np.ndarray:
    h = max(t.shape[0] for row in rows for t in row)
    w = max(t.shape[1] for row in rows for t in row)
    lines = []
    for row, names in zip(rows, labels):
        tiles = []
        for tile, name in zip(row, names):
            canvas = np.zeros((h + 2, w + 2, 3), np.uint8)
            canvas[1 : 1 + tile.shape[0], 1 : 1 + tile.shape[1]] = tile
            cv2.putText(canvas, name, (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 0), 1, cv2.LINE_AA)
            tiles.append(canvas)
        while len(tiles) < len(APERTURES):
            tiles.append(np.zeros_like(tiles[0]))
        lines.append(np.hstack(tiles))
    return np.vstack(lines)


def main() -> None:
    from koubo.engines.blend import at_face_resolution
    from koubo.engines.classic import warp_mouth
    from koubo.face import geometry as geo
    from koubo.face.tracker import track_faces

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mouth-sweep"))
    parser.add_argument("--frame", type=int, default=40, help="which frame of the silent template")
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"{SHARED} is missing: the sweep needs the real media")
    args.out.mkdir(parents=True, exist_ok=True)

    frames = first_frames(SHARED / SILENT, args.frame + 1)
    track = track_faces(frames, fps=30.0)
    frame, landmarks = frames[args.frame], track.landmarks[args.frame]
    rest = float(geo.mouth_aperture(landmarks))
    rendered, labels = [], []
    for name, width in SHAPES:
        for aperture in APERTURES:
            rendered.append(
                at_face_resolution(
                    frame,
                    landmarks,
                    lambda image, lm, a=aperture, w=width: warp_mouth(
                        image, lm, aperture=a, width=w, own_aperture=rest
                    ),
                )
            )
            labels.append(f"{name[:2]} {aperture:.2f}")
    seen = through_h264(np.stack(rendered + [frame]))
    crops = [mouth_crop(f, landmarks) for f in seen[:-1]]
    rows = [crops[k : k + len(APERTURES)] for k in range(0, len(crops), len(APERTURES))]
    names = [labels[k : k + len(APERTURES)] for k in range(0, len(labels), len(APERTURES))]
    scale = float(geo.face_scale(landmarks))
    real = real_open_mouths(scale)
    rows.append([mouth_crop(seen[-1], landmarks)] + real[: len(APERTURES) - 1])
    names.append(["template"] + ["real"] * (len(APERTURES) - 1))
    picture = grid(rows, names)
    cv2.imwrite(str(args.out / "sweep.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    big = cv2.resize(picture, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(args.out / "sweep_x4.png"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))

    print(f"\nsweep in {args.out} (face scale {scale:.0f} px, resting aperture {rest:.3f})")
    for label, crop in zip(labels, crops):
        h, w = crop.shape[:2]
        centre = crop[int(0.45 * h) : int(0.6 * h), int(0.4 * w) : int(0.6 * w)].reshape(-1, 3).mean(0)
        print(f"  {label}: centre RGB {centre.round().astype(int).tolist()}")


if __name__ == "__main__":
    main()
