"""MediaPipe face mesh over every frame of a template -> one smoothed FaceTrack.

MediaPipe 0.10.21 carries its face detection and mesh models inside the wheel, so nothing is
downloaded. Tracking mode (static_image_mode=False) re-detects only when the track is lost,
which is both faster and steadier than per-frame detection.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from scipy.signal import savgol_filter

from koubo.errors import Cancelled
from koubo.face import geometry

# MediaPipe's own detector and mesh work on 128/192-pixel crops; feeding it more than this
# only costs conversion time without adding accuracy.
TRACK_MAX_SIDE = 960
N_LANDMARKS = 478
# Parallel tracking: chunks shorter than this spend more on re-detection than they save.
MIN_CHUNK = 25
MAX_WORKERS = 4

os.environ.setdefault("GLOG_minloglevel", "2")


@dataclass(frozen=True)
class FaceTrack:
    """Landmarks of one face over every frame of a template video."""

    landmarks: np.ndarray  # (N, 478, 2) float32 pixel coordinates; NaN where `present` is False
    present: np.ndarray  # (N,) bool
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.present)

    @property
    def coverage(self) -> float:
        return float(self.present.mean()) if len(self.present) else 0.0


FaceSelect = Literal["largest", "central"]


def track_faces(
    frames: Sequence[np.ndarray],
    *,
    fps: float,
    select: FaceSelect = "largest",
    max_faces: int = 4,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> FaceTrack:
    """Detect and follow one face over `frames` (RGB uint8), then fill short gaps and smooth.

    The frames are cut into consecutive chunks tracked in parallel threads (MediaPipe releases the
    GIL, so two cores track twice as fast); which face is "the" face is decided afterwards in one
    pass over all detections, so the choice stays consistent across chunk boundaries.
    """
    n = len(frames)
    if n == 0:
        return FaceTrack(np.zeros((0, N_LANDMARKS, 2), np.float32), np.zeros(0, bool), 0, 0)
    height, width = frames[0].shape[:2]
    workers = workers or min(os.cpu_count() or 1, MAX_WORKERS)
    chunks = max(1, min(workers, n // MIN_CHUNK))
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    detections: list[list[np.ndarray]] = [[] for _ in range(n)]
    done = [0] * chunks

    def run(chunk: int) -> None:
        import mediapipe as mp  # heavy import, kept out of module import time

        with mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        ) as mesh:
            for i in range(bounds[chunk], bounds[chunk + 1]):
                if should_stop is not None and should_stop():
                    raise Cancelled()
                detections[i] = _detect(mesh, np.asarray(frames[i]))
                done[chunk] += 1

    with ThreadPoolExecutor(chunks) as pool:
        pending = {pool.submit(run, c) for c in range(chunks)}
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            for future in finished:
                future.result()  # re-raises Cancelled or a MediaPipe error at once
            if progress is not None:
                progress(sum(done) / n)

    raw: list[np.ndarray | None] = []
    previous: np.ndarray | None = None
    for faces in detections:
        chosen = _choose(faces, previous, width, height, select)
        raw.append(chosen)
        if chosen is not None:
            previous = chosen
    return _finish(raw, width, height, fps)


def _detect(mesh, frame: np.ndarray) -> list[np.ndarray]:
    height, width = frame.shape[:2]
    scale = min(1.0, TRACK_MAX_SIDE / max(height, width))
    image = frame if scale == 1.0 else cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    result = mesh.process(np.ascontiguousarray(image))
    if not result.multi_face_landmarks:
        return []
    faces = []
    for face in result.multi_face_landmarks:
        pts = np.array([(p.x, p.y) for p in face.landmark], dtype=np.float32)
        pts *= (width, height)
        faces.append(pts)
    return faces


def _choose(
    faces: list[np.ndarray], previous: np.ndarray | None, width: int, height: int, select: FaceSelect
) -> np.ndarray | None:
    """Keep following the face nearest the last one; pick by `select` when starting over."""
    if not faces:
        return None
    if previous is not None:
        prev_centre = previous.mean(0)
        prev_size = float(geometry.face_scale(previous))
        dists = [float(np.linalg.norm(f.mean(0) - prev_centre)) for f in faces]
        best = int(np.argmin(dists))
        if dists[best] < 1.5 * prev_size:
            return faces[best]
    if select == "central":
        centre = np.array([width / 2, height / 2])
        return min(faces, key=lambda f: float(np.linalg.norm(f.mean(0) - centre)))
    return max(faces, key=lambda f: float(np.prod(f.max(0) - f.min(0))))


def _finish(raw: list[np.ndarray | None], width: int, height: int, fps: float) -> FaceTrack:
    n = len(raw)
    landmarks = np.full((n, N_LANDMARKS, 2), np.nan, dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    for i, pts in enumerate(raw):
        if pts is not None:
            landmarks[i] = pts
            present[i] = True
    _fill_short_gaps(landmarks, present, max_gap=max(1, round(0.1 * fps)))
    _smooth_runs(landmarks, present, fps)
    return FaceTrack(landmarks=landmarks, present=present, width=width, height=height)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2], edges[1::2]))


def _fill_short_gaps(landmarks: np.ndarray, present: np.ndarray, max_gap: int) -> None:
    """A face lost for a frame or two mid-shot is interpolated, so the edit does not blink off."""
    for start, end in runs(~present):
        if start == 0 or end == len(present) or end - start > max_gap:
            continue
        before, after = landmarks[start - 1], landmarks[end]
        for k in range(start, end):
            t = (k - start + 1) / (end - start + 1)
            landmarks[k] = (1 - t) * before + t * after
        present[start:end] = True


def _smooth_runs(landmarks: np.ndarray, present: np.ndarray, fps: float) -> None:
    """Zero-phase Savitzky-Golay smoothing within each run of detected frames.

    A quadratic fit over ~0.2 s removes the frame-to-frame jitter of the mesh while keeping the
    timing and height of real mouth movements (a moving average would flatten them).
    """
    window = max(5, int(round(0.2 * fps)) | 1)
    for start, end in runs(present):
        if end - start >= window:
            landmarks[start:end] = savgol_filter(landmarks[start:end], window, 2, axis=0)
