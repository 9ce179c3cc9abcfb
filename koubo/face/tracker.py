"""MediaPipe face detection and mesh over every frame of a template -> one smoothed FaceTrack.

MediaPipe 0.10.21 carries its models inside the wheel, so nothing is downloaded. Faces are found
with the full-range detector (the one made for faces up to 5 m away), run on the whole frame and
on overlapping tiles, so a 48-pixel face in a 4K wide shot is found as surely as a close-up. The
mesh then always runs on a crop around the face resized to MESH_SIDE: the landmarks are as
precise for a face that fills 3 % of the frame as for one that fills all of it. Between frames the
face is followed by cropping around its last landmarks; the detector runs again only when the
face is lost, jumps, or the shot cuts.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

import cv2
import numpy as np
from scipy.signal import savgol_filter

from koubo.errors import Cancelled
from koubo.face import geometry
from koubo.face.trust import Skip, assess
from koubo.media.video import ArrayFrames

# Largest side a checker decodes frames at before tracking them (koubo/quality.py): faces of
# 48 px in a 1080p frame must stay 48 px, the tracker crops around them itself.
TRACK_MAX_SIDE = 1920
N_LANDMARKS = 478
# The full-range detector sees its input at 192x192 and finds faces down to ~10 px there; tiles
# of this side keep a 48-pixel face at ~14 px.
DETECT_TILE = 640
DETECT_OVERLAP = 0.25  # of a tile: a face on a tile border is whole in its neighbour
DETECT_CONFIDENCE = 0.5
# The mesh's own model works on a 192-pixel face; the crop around the face (CROP_FACTOR times its
# size) is brought to this side, up or down, whatever the face's size in the frame.
MESH_SIDE = 384
CROP_FACTOR = 2.0
# Following the last frame's face is accepted when the new face is this close (in face scales)
# and this similar in size; otherwise the detector looks again (a cut, another person).
FOLLOW_MAX_SHIFT = 0.5
FOLLOW_MAX_RESIZE = 1.4
# Mean absolute difference (0..255) of consecutive 32x32 grey thumbnails above which the shot cut.
CUT_DIFF = 28.0
# Parallel tracking: chunks shorter than this spend more on re-detection than they save.
MIN_CHUNK = 25
MAX_WORKERS = 4

os.environ.setdefault("GLOG_minloglevel", "2")


@dataclass(frozen=True)
class FaceTrack:
    """Landmarks of one face over every frame of a template video.

    `skip` says, per frame, why the frame must not be edited (Skip.NONE: it may); frames whose
    landmarks exist can still be skipped (a hand over the mouth, a profile, motion blur).
    """

    landmarks: np.ndarray  # (N, 478, 2) float32 pixel coordinates; NaN where `present` is False
    present: np.ndarray  # (N,) bool
    width: int
    height: int
    skip: np.ndarray = field(default=None)  # (N,) uint8 Skip codes; None: NO_FACE where not present
    cuts: np.ndarray = field(default=None)  # (N,) bool, True on the first frame of a new shot

    def __post_init__(self) -> None:
        n = len(self.present)
        if self.skip is None:
            object.__setattr__(self, "skip", np.where(self.present, Skip.NONE, Skip.NO_FACE).astype(np.uint8))
        if self.cuts is None:
            object.__setattr__(self, "cuts", np.zeros(n, bool))

    def __len__(self) -> int:
        return len(self.present)

    @property
    def coverage(self) -> float:
        return float(self.present.mean()) if len(self.present) else 0.0

    @property
    def usable(self) -> np.ndarray:
        """(N,) bool: frames whose face may be edited."""
        return self.present & (self.skip == Skip.NONE)


FaceSelect = Literal["largest", "central"]


class FrameSource(Protocol):
    """Frames read in order from any start: a decoding template (TemplateStream) or an array."""

    width: int
    height: int

    def __len__(self) -> int: ...

    def frames(
        self, start: int = 0, stop: int | None = None, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[np.ndarray]: ...


def track_faces(
    frames: FrameSource | Sequence[np.ndarray],
    *,
    fps: float,
    select: FaceSelect = "largest",
    max_faces: int = 4,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    workers: int | None = None,
    judge: bool = True,
    finders: FinderPool | None = None,
) -> FaceTrack:
    """Detect and follow one face over `frames` (RGB uint8), then fill short gaps, smooth, and
    judge frame by frame whether the face can be edited (unless not `judge`: then every frame with
    a face counts as editable, and the frames are read only once).

    The frames are cut into consecutive chunks tracked in parallel threads (MediaPipe releases the
    GIL, so two cores track twice as fast), each reading its own chunk, so a decoding template is
    never held in memory; which face is "the" face is decided afterwards in one pass over all
    detections, so the choice stays consistent across chunk boundaries. `finders` keeps the loaded
    MediaPipe graphs for the next call (a Generator's, in a warm generation process).
    """
    source = frames if hasattr(frames, "frames") else ArrayFrames(np.asarray(frames))
    n = len(source)
    if n == 0:
        return FaceTrack(np.zeros((0, N_LANDMARKS, 2), np.float32), np.zeros(0, bool), 0, 0)
    height, width = source.height, source.width
    workers = workers or min(os.cpu_count() or 1, MAX_WORKERS)
    chunks = max(1, min(workers, n // MIN_CHUNK))
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    detections: list[list[np.ndarray]] = [[] for _ in range(n)]
    thumbs = np.zeros((n, 32, 32), np.uint8)  # whole grey levels: a long template's stay small
    done = [0] * chunks

    pool = finders or FinderPool()

    def run(chunk: int) -> None:
        with pool.finder(max_faces) as finder:
            previous: np.ndarray | None = None
            chunk_frames = source.frames(bounds[chunk], bounds[chunk + 1], should_stop)
            for i, frame in enumerate(chunk_frames, start=bounds[chunk]):
                if should_stop is not None and should_stop():
                    raise Cancelled()
                thumbs[i] = _thumbnail(frame)
                if i > bounds[chunk] and _is_cut(thumbs[i - 1], thumbs[i]):
                    previous = None
                detections[i] = finder.faces(frame, previous)
                previous = _choose(detections[i], previous, width, height, select)
                done[chunk] += 1

    try:
        with ThreadPoolExecutor(chunks) as threads:
            pending = {threads.submit(run, c) for c in range(chunks)}
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()  # re-raises Cancelled or a MediaPipe error at once
                if progress is not None:
                    progress(sum(done) / n)
    finally:
        if finders is None:
            pool.close()

    cuts = np.zeros(n, bool)
    cuts[1:] = [_is_cut(a, b) for a, b in itertools.pairwise(thumbs)]
    raw: list[np.ndarray | None] = []
    previous = None
    for faces, cut in zip(detections, cuts):
        chosen = _choose(faces, None if cut else previous, width, height, select)
        raw.append(chosen)
        if chosen is not None or cut:
            previous = chosen
    return _finish(source, raw, cuts, width, height, fps, judge, should_stop)


class FinderPool:
    """FaceFinders kept between calls: loading MediaPipe's two graphs costs 0.2-0.7 s per thread.

    A finder serves one thread at a time. Both graphs run in static-image mode and carry nothing
    from one frame to the next, so a finder returned to the pool is as good as a new one; one that
    raised is closed instead.
    """

    def __init__(self) -> None:
        self._idle: dict[int, list[FaceFinder]] = defaultdict(list)
        self._lock = threading.Lock()

    @contextmanager
    def finder(self, max_faces: int) -> Iterator[FaceFinder]:
        with self._lock:
            idle = self._idle[max_faces]
            finder = idle.pop() if idle else None
        finder = finder or FaceFinder(max_faces)
        try:
            yield finder
        except BaseException:
            finder.close()
            raise
        with self._lock:
            self._idle[max_faces].append(finder)

    def close(self) -> None:
        with self._lock:
            finders = [finder for idle in self._idle.values() for finder in idle]
            self._idle.clear()
        for finder in finders:
            finder.close()


class FaceFinder:
    """The full-range detector and the mesh of one thread (MediaPipe graphs are not shared)."""

    def __init__(self, max_faces: int = 4) -> None:
        import mediapipe as mp  # heavy import, kept out of module import time

        self.max_faces = max_faces
        self.detector = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=DETECT_CONFIDENCE
        )
        self.mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
        )

    def close(self) -> None:
        self.detector.close()
        self.mesh.close()

    def faces(self, frame: np.ndarray, previous: np.ndarray | None) -> list[np.ndarray]:
        """Landmarks of the faces in `frame`: only the followed one while it stays where it was."""
        if previous is not None:
            box = _landmark_box(previous)
            pts = self.landmarks(frame, box)
            if pts is not None and _same_face(pts, previous):
                return [pts]
        found = []
        for box in self.boxes(frame)[: self.max_faces]:
            pts = self.landmarks(frame, box)
            if pts is not None:
                found.append(pts)
        return found

    def boxes(self, frame: np.ndarray) -> list[np.ndarray]:
        """Face boxes (x0, y0, x1, y1) from the whole frame and its tiles, largest first."""
        height, width = frame.shape[:2]
        found: list[tuple[float, np.ndarray]] = []
        for x0, y0, x1, y1 in _tiles(width, height):
            tile = np.ascontiguousarray(frame[y0:y1, x0:x1])
            result = self.detector.process(tile)
            for detection in result.detections or []:
                b = detection.location_data.relative_bounding_box
                box = np.array([x0 + b.xmin * (x1 - x0), y0 + b.ymin * (y1 - y0), 0.0, 0.0], dtype=np.float64)
                box[2:] = box[:2] + (b.width * (x1 - x0), b.height * (y1 - y0))
                found.append((float(detection.score[0]), box))
        return _suppress(found)

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The mesh on a square crop around `box`, brought to MESH_SIDE, mapped back to the frame."""
        side = CROP_FACTOR * float(max(box[2] - box[0], box[3] - box[1]))
        if side < 4:
            return None
        cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        halvings = _halvings(side)
        s = -(-round(side) >> halvings) << halvings  # halved exactly, so the mapping back stays exact
        image = _mesh_image(_padded_crop(frame, x0, y0, s), halvings)
        result = self.mesh.process(image)
        if not result.multi_face_landmarks:
            return None
        pts = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], dtype=np.float32)
        return pts * s + (x0, y0)


def _halvings(side: float) -> int:
    """How many times a crop of `side` is halved before its last resize to MESH_SIDE (< 2x)."""
    halvings = 0
    while side / 2 ** (halvings + 1) >= MESH_SIDE:
        halvings += 1
    return halvings


def _mesh_image(crop: np.ndarray, halvings: int) -> np.ndarray:
    """A crop brought to MESH_SIDE: halved by 2x2 means, then bilinear (< 2x, no aliasing).
    cv2's INTER_AREA at a fractional factor makes nearly the same picture (the landmarks move by
    < 0.005 eye spans) 5-10 times slower: 1-4 ms on every frame the tracker and the check follow."""
    for _ in range(halvings):
        side = crop.shape[0] // 2
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)  # exact 2x: cv2's fast path
    interpolation = cv2.INTER_LINEAR if crop.shape[0] > MESH_SIDE else cv2.INTER_CUBIC
    return cv2.resize(crop, (MESH_SIDE, MESH_SIDE), interpolation=interpolation)


def _tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The whole frame, then overlapping DETECT_TILE squares covering it when it is larger."""
    tiles = [(0, 0, width, height)]
    if max(width, height) <= DETECT_TILE:
        return tiles
    side = min(DETECT_TILE, width, height)
    step = int(side * (1 - DETECT_OVERLAP))
    xs = list(range(0, max(1, width - side), step)) + [width - side]
    ys = list(range(0, max(1, height - side), step)) + [height - side]
    tiles += [(x, y, x + side, y + side) for y in sorted(set(ys)) for x in sorted(set(xs))]
    return tiles


def _suppress(found: list[tuple[float, np.ndarray]], overlap: float = 0.3) -> list[np.ndarray]:
    """One box per face (the same face is seen by the frame and by up to four tiles), largest first."""
    kept: list[np.ndarray] = []
    for _, box in sorted(found, key=lambda item: -item[0]):
        if all(_iou(box, other) < overlap for other in kept):
            kept.append(box)
    return sorted(kept, key=lambda b: -float((b[2] - b[0]) * (b[3] - b[1])))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _landmark_box(pts: np.ndarray) -> np.ndarray:
    """A detector-like box around a mesh: the mesh spans forehead to chin, a detector box less."""
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    half = 0.4 * max(x1 - x0, y1 - y0)
    return np.array([cx - half, cy - half, cx + half, cy + half])


def _same_face(pts: np.ndarray, previous: np.ndarray) -> bool:
    scale = float(geometry.face_scale(previous))
    ratio = float(geometry.face_scale(pts)) / max(scale, 1e-6)
    shift = float(np.linalg.norm(pts.mean(0) - previous.mean(0)))
    return shift < FOLLOW_MAX_SHIFT * scale and 1 / FOLLOW_MAX_RESIZE < ratio < FOLLOW_MAX_RESIZE


def _padded_crop(frame: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """frame[y0:y0+side, x0:x0+side], with black where the square reaches past the frame."""
    height, width = frame.shape[:2]
    ax0, ay0, ax1, ay1 = max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side)
    crop = np.zeros((side, side, 3), np.uint8)
    if ax1 > ax0 and ay1 > ay0:
        crop[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = frame[ay0:ay1, ax0:ax1]
    return crop


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    # Every few pixels suffice for a 32x32 picture of the shot, at a fraction of a full conversion.
    step = max(1, min(frame.shape[:2]) // 128)
    grey = cv2.cvtColor(np.ascontiguousarray(frame[::step, ::step]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def _is_cut(before: np.ndarray, after: np.ndarray) -> bool:
    return float(np.abs(after.astype(np.float32) - before).mean()) > CUT_DIFF


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


def _finish(
    frames: FrameSource,
    raw: list[np.ndarray | None],
    cuts: np.ndarray,
    width: int,
    height: int,
    fps: float,
    judge: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> FaceTrack:
    n = len(raw)
    landmarks = np.full((n, N_LANDMARKS, 2), np.nan, dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    for i, pts in enumerate(raw):
        if pts is not None:
            landmarks[i] = pts
            present[i] = True
    _fill_short_gaps(landmarks, present, cuts, max_gap=max(1, round(0.1 * fps)))
    _smooth_runs(landmarks, present, cuts, fps)
    skip = assess(frames, landmarks, present, cuts, width, height, should_stop) if judge else None
    return FaceTrack(landmarks=landmarks, present=present, width=width, height=height, skip=skip, cuts=cuts)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2], edges[1::2]))


def shot_runs(mask: np.ndarray, cuts: np.ndarray) -> list[tuple[int, int]]:
    """runs(mask), each also cut where a new shot starts: nothing is carried across a cut."""
    out = []
    for start, end in runs(mask):
        edges = [start, *(np.flatnonzero(cuts[start + 1 : end]) + start + 1), end]
        out += list(itertools.pairwise(edges))
    return out


def _fill_short_gaps(landmarks: np.ndarray, present: np.ndarray, cuts: np.ndarray, max_gap: int) -> None:
    """A face lost for a frame or two mid-shot is interpolated, so the edit does not blink off."""
    for start, end in runs(~present):
        if start == 0 or end == len(present) or end - start > max_gap or cuts[start : end + 1].any():
            continue
        before, after = landmarks[start - 1], landmarks[end]
        for k in range(start, end):
            t = (k - start + 1) / (end - start + 1)
            landmarks[k] = (1 - t) * before + t * after
        present[start:end] = True


def _smooth_runs(landmarks: np.ndarray, present: np.ndarray, cuts: np.ndarray, fps: float) -> None:
    """Zero-phase Savitzky-Golay smoothing within each run of detected frames.

    A quadratic fit over ~0.2 s removes the frame-to-frame jitter of the mesh while keeping the
    timing and height of real mouth movements (a moving average would flatten them).
    """
    window = max(5, int(round(0.2 * fps)) | 1)
    for start, end in shot_runs(present, cuts):
        if end - start >= window:
            # A few points at a time: the filter works in float64, a long run's copy adds up.
            for first in range(0, landmarks.shape[1], 32):
                points = slice(first, first + 32)
                landmarks[start:end, points] = savgol_filter(landmarks[start:end, points], window, 2, axis=0)
