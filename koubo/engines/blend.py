"""Putting a generated or borrowed lower face back into a frame without a seam.

Both engines end here: a hull just inside the jaw line, an alpha that eases to exactly 0 at its
outline, the patch's colour matched to the frame along the blend band, and the blend itself, at a
strength that fades in and out around the frames a template does not let us edit.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from koubo.face import geometry as geo

# A mouth is drawn with its eye-corner distance at least this many pixels: a 48-pixel face's lips
# are ~12 px wide, too few to warp, paint teeth into and feather at the frame's own resolution.
WORK_MIN_SCALE = 96.0
# Time over which the edit fades to the template before a frame that must not be edited, and back.
FADE_SECONDS = 0.2


def lower_face_hull(landmarks: np.ndarray) -> np.ndarray:
    """Lower-face outline pulled slightly inside the jaw line, so the seam falls on skin."""
    pts = landmarks[geo.LOWER_FACE, :2]
    centre = landmarks[geo.LIPS_OUTER_LOWER, :2].mean(0)
    pts = centre + (pts - centre) * 0.92
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)


def roi_around(points: np.ndarray, margin: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape
    x0, y0 = np.floor(points.min(0) - margin).astype(int)
    x1, y1 = np.ceil(points.max(0) + margin).astype(int)
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def feathered_alpha(hull_list: list[np.ndarray], roi: tuple[int, int, int, int], radius: float) -> np.ndarray:
    """Alpha in [0, 1]: 1 deeper than `radius` inside the hulls, easing to exactly 0 at their outline
    (smoothstep: no visible crease where the ramp ends)."""
    return _smoothstep(np.clip(hull_distance(hull_list, roi, radius) / radius, 0.0, 1.0))


def at_face_resolution(
    frame: np.ndarray, landmarks: np.ndarray, edit: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """`edit(image, landmarks)` on the region around the lower face, enlarged first when the face
    is small; the change it makes (not its resampled image) is brought back down into `frame`, so
    pixels the edit leaves alone stay the frame's own."""
    scale = float(geo.face_scale(landmarks))
    if scale >= WORK_MIN_SCALE:
        return edit(frame, landmarks)
    x0, y0, x1, y1 = roi_around(landmarks[geo.LOWER_FACE, :2], 0.3 * scale, frame.shape[:2])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return frame
    region = np.asarray(frame[y0:y1, x0:x1])
    zoom = WORK_MIN_SCALE / max(scale, 1.0)
    size = (round((x1 - x0) * zoom), round((y1 - y0) * zoom))
    big = cv2.resize(region, size, interpolation=cv2.INTER_CUBIC)
    fx, fy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    big_landmarks = (landmarks[:, :2] - (x0, y0)) * (fx, fy)
    change = edit(big, big_landmarks).astype(np.float32) - big
    if not change.any():
        return frame
    small = cv2.resize(change, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    # A frame pixel the edit barely touched (the feather's last fraction) stays as it was, so the
    # edit ends where the mask does and does not bleed a pixel past it.
    touched = cv2.resize(change.any(axis=-1).astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    small[touched < 0.5] = 0.0
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(np.round(region + small), 0, 255).astype(np.uint8)
    return out


def edit_strength(usable: np.ndarray, fps: float) -> np.ndarray:
    """(n,) weight of the edit per output frame: 0 on frames that must not be edited, easing to 1
    over FADE_SECONDS away from them, so the mouth never pops between edited and untouched."""
    n = len(usable)
    if usable.all():
        return np.ones(n)
    if not usable.any():
        return np.zeros(n)
    bad = np.flatnonzero(~usable)
    positions = np.arange(n)
    nearest = np.searchsorted(bad, positions)
    before = np.abs(positions - bad[np.clip(nearest - 1, 0, len(bad) - 1)])
    after = np.abs(bad[np.clip(nearest, 0, len(bad) - 1)] - positions)
    distance = np.minimum(before, after).astype(np.float64)
    ramp = np.clip(distance / max(1.0, FADE_SECONDS * fps), 0.0, 1.0)
    return ramp * ramp * (3.0 - 2.0 * ramp)


def blend_patch(
    frame: np.ndarray, patch: np.ndarray, alpha: np.ndarray, roi: tuple[int, int, int, int], strength: float = 1.0
) -> np.ndarray:
    x0, y0, x1, y1 = roi
    out = frame.copy()
    base = frame[y0:y1, x0:x1].astype(np.float32)
    a = strength * alpha[..., None]
    out[y0:y1, x0:x1] = np.clip(base + a * (patch - base), 0, 255).astype(np.uint8)
    return out


def match_colour(patch: np.ndarray, base: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Shift the patch's colour to the frame's along the blend band, where a seam would show."""
    step = max(1, min(alpha.shape) // 64)  # a mean needs a few thousand samples, not every pixel
    a = alpha[::step, ::step]
    band = (a > 0.02) & (a < 0.9)
    if band.sum() < 20:
        return patch
    offset = base[::step, ::step][band].mean(0) - patch[::step, ::step][band].mean(0)
    return patch + offset.astype(np.float32)


def hull_distance(hull_list: list[np.ndarray], roi: tuple[int, int, int, int], radius: float) -> np.ndarray:
    """Distance in pixels from each ROI pixel to the outline of the hulls' union (0 outside).

    Only needed to ease weights in over `radius` or more, so it is measured on a grid a few times
    coarser than the pixels; the outline itself stays exact.
    """
    x0, y0, x1, y1 = roi
    w, h = x1 - x0, y1 - y0
    f = max(1, int(radius // 8))
    small = np.zeros((-(-h // f), -(-w // f)), dtype=np.uint8)
    hard = np.zeros((h, w), dtype=np.uint8)
    for hull in hull_list:
        local = hull - (x0, y0)
        cv2.fillConvexPoly(small, np.round(local / f).astype(np.int32), 255)
        cv2.fillConvexPoly(hard, np.round(local).astype(np.int32), 255)
    distance = cv2.distanceTransform(small, cv2.DIST_L2, 3) * f
    distance = cv2.resize(distance, (w, h), interpolation=cv2.INTER_LINEAR)
    distance[hard == 0] = 0.0
    return distance


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# Band k of the difference (k = 0 finest) eases in over MULTIBAND_RADII[k] x the feather radius:
# fine detail switches over a short distance (no blurred rim), lighting over a long one (no step).
MULTIBAND_RADII = (0.35, 0.7, 1.4, 2.8)


def multiband_blend(
    frame: np.ndarray, patch: np.ndarray, distance: np.ndarray, radius: float, roi: tuple[int, int, int, int]
) -> np.ndarray:
    """Blend `patch` into `frame` band by band (a Laplacian-pyramid blend of their difference).

    `distance` is hull_distance for the ROI. Each band is weighted at its own resolution (the
    pyramid costs about one full-size pass), and the result is clipped to the hull, so pixels
    outside it stay the frame's own.
    """
    x0, y0, x1, y1 = roi
    out = frame.copy()
    base = frame[y0:y1, x0:x1].astype(np.float32)
    gaussian = [patch - base]
    while len(gaussian) < len(MULTIBAND_RADII) and min(gaussian[-1].shape[:2]) >= 8:
        gaussian.append(cv2.pyrDown(gaussian[-1]))
    blended = None
    for k in range(len(gaussian) - 1, -1, -1):
        level = gaussian[k]
        size = level.shape[1::-1]
        band = level if k == len(gaussian) - 1 else level - cv2.pyrUp(gaussian[k + 1], dstsize=size)
        near = distance if k == 0 else cv2.resize(distance, size, interpolation=cv2.INTER_AREA)
        weighted = _smoothstep(near / (MULTIBAND_RADII[k] * radius))[..., None] * band
        blended = weighted if blended is None else cv2.pyrUp(blended, dstsize=size) + weighted
    inside = (distance > 0)[..., None]
    out[y0:y1, x0:x1] = np.clip(base + inside * blended, 0, 255).astype(np.uint8)
    return out
