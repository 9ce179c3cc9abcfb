"""Whether a tracked face can be edited, frame by frame, and why not.

A template is rarely clean from end to end: the head turns to profile, a hand or a microphone
passes in front of the mouth, the face leaves the frame, the camera whips. The mesh still returns
478 plausible points on most such frames, so presence alone is not trust. Each check here reads
the landmarks and, for occlusion and blur, the lower face itself compared with the same shot's
typical lower face; a frame that fails one is passed through (the engines fade around it).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import IntEnum

import cv2
import numpy as np

from koubo.face import geometry as geo
from koubo.media.video import ArrayFrames


class Skip(IntEnum):
    """Why a frame is not lip-synced (NONE: it is)."""

    NONE = 0
    NO_FACE = 1
    TOO_SMALL = 2
    OFF_FRAME = 3
    PROFILE = 4
    OCCLUDED = 5
    BLUR = 6

    @property
    def label(self) -> str:
        return self.name.lower()


# Eye-corner distance in pixels below which a mouth is too small to edit (a ~25 px wide face).
MIN_EYE_SPAN = 11.0
# The lower face may reach this far (in face scales) past the frame's edge before it counts as gone.
EDGE_MARGIN = 0.05
# Nose tip's position between the two cheek contours, 0.5 facing the camera; beyond this
# distance from 0.5 the far half of the mouth is hidden (roughly 50 degrees of yaw).
PROFILE_LIMIT = 0.3
# Lower face in a canonical square of this side, aligned on skull-fixed points.
PATCH = 48
# A pixel differs from the shot's typical lower face when it is this many of the face's own
# contrast units away; a frame is occluded when this share of its lower face (lips' opening
# excluded) differs. A talking mouth changes well under it, a hand or a microphone far over it.
OCCLUSION_DIFF = 1.0
OCCLUSION_SHARE = 0.3
# Sharpness of the canonical lower face under this share of the shot's median: motion blur.
# Real talking heads dip to ~0.4 (compression, focus breathing); a 25-pixel smear of a 120-pixel
# face reaches ~0.3.
BLUR_SHARE = 0.35
# Fewer frames than this in a shot: no typical lower face to compare with, so no appearance checks.
MIN_SHOT = 8

LEFT_CHEEK, RIGHT_CHEEK, NOSE_TIP = 234, 454, 1
# Reading lower faces in parallel: as the tracker does (chunks shorter than this are not worth a thread).
_MIN_CHUNK = 25
_MAX_WORKERS = 4


def assess(
    frames: Sequence[np.ndarray] | ArrayFrames,
    landmarks: np.ndarray,
    present: np.ndarray,
    cuts: np.ndarray,
    width: int,
    height: int,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """(N,) uint8 Skip code per frame; the first failing check names the reason."""
    skip = np.where(present, Skip.NONE, Skip.NO_FACE).astype(np.uint8)
    if not present.any():
        return skip
    idx = np.flatnonzero(present)
    lm = landmarks[idx]
    scale = geo.face_scale(lm)
    ok = skip[idx]
    ok[(ok == Skip.NONE) & (scale < MIN_EYE_SPAN)] = Skip.TOO_SMALL
    ok[(ok == Skip.NONE) & _off_frame(lm, scale, width, height)] = Skip.OFF_FRAME
    ok[(ok == Skip.NONE) & (np.abs(yaw_ratio(lm) - 0.5) > PROFILE_LIMIT)] = Skip.PROFILE
    skip[idx] = ok
    source = frames if hasattr(frames, "frames") else ArrayFrames(np.asarray(frames))
    _appearance(source, landmarks, skip, cuts, should_stop)
    return skip


def yaw_ratio(landmarks: np.ndarray) -> np.ndarray:
    """Where the nose tip lies between the cheek contours along the eye line: 0.5 when frontal."""
    ex = landmarks[..., geo.RIGHT_EYE_OUTER, :] - landmarks[..., geo.LEFT_EYE_OUTER, :]
    ex = ex / np.maximum(np.linalg.norm(ex, axis=-1, keepdims=True), 1e-6)
    left = (landmarks[..., LEFT_CHEEK, :] * ex).sum(-1)
    right = (landmarks[..., RIGHT_CHEEK, :] * ex).sum(-1)
    nose = (landmarks[..., NOSE_TIP, :] * ex).sum(-1)
    return (nose - left) / np.where(np.abs(right - left) < 1e-6, 1e-6, right - left)


def _off_frame(lm: np.ndarray, scale: np.ndarray, width: int, height: int) -> np.ndarray:
    pts = lm[:, geo.LOWER_FACE]
    margin = (EDGE_MARGIN * scale)[:, None]
    outside = (pts[..., 0] < -margin) | (pts[..., 1] < -margin)
    outside |= (pts[..., 0] > width - 1 + margin) | (pts[..., 1] > height - 1 + margin)
    return outside.any(axis=1)


def _shots(cuts: np.ndarray) -> list[tuple[int, int]]:
    edges = [0, *np.flatnonzero(cuts[1:]) + 1, len(cuts)]
    return list(itertools.pairwise(edges))


def _appearance(
    frames, landmarks: np.ndarray, skip: np.ndarray, cuts: np.ndarray, should_stop: Callable[[], bool] | None
) -> None:
    """Mark OCCLUDED and BLUR by comparing each lower face with its shot's median lower face.

    `frames` is a tracker FrameSource: the lower faces are read in one pass over the frames
    (parallel chunks), so a template is never held in memory.
    """
    shots = []
    for start, stop in _shots(cuts):
        idx = [i for i in range(start, stop) if skip[i] == Skip.NONE]
        if len(idx) >= MIN_SHOT:
            reference = _median_landmarks(landmarks, idx)
            shots.append((idx, reference, _canonical_frame(reference)))
    if not shots:
        return
    faces = _lower_faces(frames, landmarks, {i: (ref, canon) for idx, ref, canon in shots for i in idx}, should_stop)
    for idx, reference, canon in shots:
        mask = _skin_mask(landmarks[idx], reference, canon)
        if mask.sum() < 20:
            continue
        # Only the mask's pixels, one shot at a time: a ten-minute shot is 15000 patches.
        norm = _normalise(np.stack([faces[i][mask] for i in idx]).astype(np.float32))
        typical = np.median(norm, axis=0)
        share = np.concatenate(
            [(np.abs(norm[rows] - typical) > OCCLUSION_DIFF).mean(axis=1) for rows in _blocks(len(idx))]
        )
        del norm
        sharp = np.stack([_sharpness(faces[i].astype(np.float32), mask) for i in idx])
        for k, i in enumerate(idx):
            if share[k] > OCCLUSION_SHARE:
                skip[i] = Skip.OCCLUDED
        clear = [k for k, i in enumerate(idx) if skip[i] == Skip.NONE]
        if clear:
            relative = (sharp / np.maximum(np.median(sharp[clear], axis=0), 1e-6)).min(axis=1)
            for k in clear:
                if relative[k] < BLUR_SHARE:
                    skip[idx[k]] = Skip.BLUR


def _lower_faces(
    frames,
    landmarks: np.ndarray,
    wanted: dict[int, tuple[np.ndarray, np.ndarray]],
    should_stop: Callable[[], bool] | None,
) -> dict[int, np.ndarray]:
    """_lower_face of each frame in `wanted` (its shot's reference and canonical square), uint8."""
    order = sorted(wanted)
    chunks = max(1, min(os.cpu_count() or 1, _MAX_WORKERS, len(order) // _MIN_CHUNK))
    bounds = np.linspace(0, len(order), chunks + 1).astype(int)
    faces: dict[int, np.ndarray] = {}

    def run(chunk: int) -> None:
        mine = order[bounds[chunk] : bounds[chunk + 1]]
        for i, frame in enumerate(frames.frames(mine[0], mine[-1] + 1, should_stop), start=mine[0]):
            if i in wanted:
                faces[i] = _lower_face(frame, landmarks[i], *wanted[i])

    with ThreadPoolExecutor(chunks) as pool:
        for future in [pool.submit(run, c) for c in range(chunks)]:
            future.result()
    return faces


def _canonical_frame(reference: np.ndarray) -> np.ndarray:
    """2x3 matrix taking the shot's reference landmarks to a PATCH-sided square around the lower face."""
    hull = reference[geo.LOWER_FACE]
    lo, hi = hull.min(0), hull.max(0)
    side = float(max(hi - lo)) * 1.05
    s = PATCH / max(side, 1e-6)
    centre = 0.5 * (lo + hi)
    return np.array([[s, 0.0, PATCH / 2 - s * centre[0]], [0.0, s, PATCH / 2 - s * centre[1]]])


def _lower_face(frame: np.ndarray, lm: np.ndarray, reference: np.ndarray, canon: np.ndarray) -> np.ndarray:
    """Grey lower face of `frame`, aligned on skull-fixed points onto the shot's canonical square."""
    to_ref = geo.similarity_transform(lm[geo.STABLE], reference[geo.STABLE])
    linear = canon[:, :2] @ to_ref[:, :2]
    shift = canon[:, :2] @ to_ref[:, 2] + canon[:, 2]
    matrix = np.column_stack([linear, shift]).astype(np.float32)  # canon after to_ref
    # Small faces come up, large ones go down: an area-like prefilter keeps a large face's
    # skin texture from aliasing into "difference".
    zoom = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    # Only the frame's part that lands in the square is read (and, for a large face, blurred).
    corners = np.array([[0, 0], [PATCH, 0], [0, PATCH], [PATCH, PATCH]], np.float64)
    inverse = cv2.invertAffineTransform(matrix)
    height, width = frame.shape[:2]
    reach = geo.apply_affine(inverse, corners)
    x0, y0 = np.clip(np.floor(reach.min(0)).astype(int) - 4, 0, (width - 1, height - 1))
    x1, y1 = np.clip(np.ceil(reach.max(0)).astype(int) + 4, (x0 + 1, y0 + 1), (width, height))
    source = np.ascontiguousarray(frame[y0:y1, x0:x1])
    if zoom < 0.5:
        source = cv2.GaussianBlur(source, (0, 0), 0.5 / zoom)
    matrix = matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float32)
    patch = cv2.warpAffine(source, matrix, (PATCH, PATCH), flags=cv2.INTER_LINEAR)
    return cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)


def _skin_mask(landmarks: np.ndarray, reference: np.ndarray, canon: np.ndarray) -> np.ndarray:
    """Lower face in the canonical square, less the widest opening between the lips in the shot
    (teeth and tongue come and go there; lips, chin and cheeks keep their look)."""
    mask = np.zeros((PATCH, PATCH), np.uint8)
    hull = geo.apply_affine(canon, reference[geo.LOWER_FACE])
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(hull).astype(np.int32)), 1)
    inner = geo.LIPS_INNER_UPPER + geo.LIPS_INNER_LOWER[::-1]
    widest = int(np.argmax(np.nan_to_num(geo.mouth_aperture(landmarks))))
    to_ref = geo.similarity_transform(landmarks[widest][geo.STABLE], reference[geo.STABLE])
    lips = geo.apply_affine(canon, geo.apply_affine(to_ref, landmarks[widest][inner]))
    cv2.fillPoly(mask, [np.round(lips).astype(np.int32)], 0)
    return mask.astype(bool)


def _normalise(values: np.ndarray) -> np.ndarray:
    """Each patch's masked pixels (a row) in units of its own contrast: lighting drift is not
    occlusion. In place."""
    mean = values.mean(axis=1)[:, None]
    std = np.maximum(values.std(axis=1), 4.0)[:, None]
    values -= mean
    values /= std
    return values


def _blocks(n: int, size: int = 1024) -> list[slice]:
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def _median_landmarks(landmarks: np.ndarray, idx: list[int]) -> np.ndarray:
    """np.nanmedian(landmarks[idx], axis=0), a few points at a time (a long shot's copies add up)."""
    rows = np.asarray(idx)
    return np.concatenate([np.nanmedian(landmarks[rows, points], axis=0) for points in _blocks(landmarks.shape[1], 32)])


def _sharpness(patch: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fine-detail gradient energy across and along the image rows: motion blur smears one
    direction, so the two are kept apart (a lip's horizontal edges survive a horizontal smear)."""
    detail = patch - cv2.GaussianBlur(patch, (0, 0), 1.5)
    across = np.abs(cv2.Sobel(detail, cv2.CV_32F, 1, 0))[mask].mean()
    along = np.abs(cv2.Sobel(detail, cv2.CV_32F, 0, 1))[mask].mean()
    return np.array([across, along])
