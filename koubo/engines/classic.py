"""The built-in engine: lip-sync with no neural weights.

Two ways to give a frame the mouth the speech asks for:

- **Retrieval** (the Video Rewrite idea): a template that shows the person talking already holds
  real mouths at every opening, teeth and lips included. For each output frame we choose a
  template frame whose mouth matches the target and whose head pose is close, align its lower face
  to the current frame on skull-fixed points and blend it in. The whole sequence of choices is made
  at once (Viterbi), preferring runs of consecutive template frames, so the mouth does not twitch.
- **Warp**: a template that never opens its mouth (a presenter at rest, one photo) has nothing to
  retrieve. Lips and jaw are then moved by a piecewise-affine warp of a triangulated lower-face mesh
  and the opening is filled with a synthesized cavity and teeth.

Either way, only a feathered lower-face region changes: outside it, pixels are the template's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np

from koubo.engines.base import RenderInput
from koubo.engines.blend import blend_patch, feathered_alpha, lower_face_hull, roi_around
from koubo.engines.mesh import piecewise_affine
from koubo.engines.retrieval import MouthBank, mouth_bank, paste_mouth, plan_retrieval  # noqa: F401
from koubo.errors import Cancelled
from koubo.face import geometry as geo

# Synthesized opening at target 1.0, in face-scale units (a wide but natural speaking mouth).
WARP_FULL_APERTURE = 0.24
# Spread/rounding at width target ±1, in face-scale units per lip corner.
WARP_FULL_WIDTH = 0.05


class ClassicEngine:
    name = "classic"

    def render(self, job: RenderInput, should_stop: Callable[[], bool] | None = None) -> Iterator[np.ndarray]:
        track = job.track
        bank = mouth_bank(track.landmarks, track.present)
        plan = plan_retrieval(job, bank) if bank.can_retrieve else None
        for i, s in enumerate(job.source_index):
            if should_stop is not None and should_stop():
                raise Cancelled()
            frame = np.asarray(job.frames[s])
            if not track.present[s]:
                yield frame
            elif plan is not None:
                yield _retrieved(job, plan, i, frame)
            else:
                yield warp_mouth(
                    frame,
                    track.landmarks[s],
                    aperture=float(job.targets.aperture[i]),
                    width=float(job.targets.width[i]),
                    own_aperture=float(bank.aperture[s]),
                )


# --- retrieval -----------------------------------------------------------------------------------


def _retrieved(job: RenderInput, plan: np.ndarray, i: int, frame: np.ndarray) -> np.ndarray:
    """Frame i with the mouth the plan chose. Never a dissolve of two mouths: the plan cuts only
    where the mouths agree, and a dissolve of two different ones shows two sets of lips."""
    track, s, j = job.track, int(job.source_index[i]), int(plan[i])
    return frame if j == s else paste_mouth(frame, track.landmarks[s], job.frames[j], track.landmarks[j])


# --- warp ----------------------------------------------------------------------------------------

# How far each point follows the jaw when the mouth opens (1 = the full opening, downwards) and
# the upper lip's small lift (negative = upwards).
_JAW_FOLLOW = {
    **{p: 1.0 for p in geo.LIPS_INNER_LOWER[1:-1] + geo.LIPS_OUTER_LOWER[1:-1]},
    **{p: -0.12 for p in geo.LIPS_INNER_UPPER[1:-1]},
    **{p: -0.08 for p in geo.LIPS_OUTER_UPPER[1:-1]},
    **{p: 0.45 for p in (61, 291, 78, 308)},
    **{p: 0.9 for p in (152, 148, 176, 377, 400, 199, 175)},
    **{p: 0.65 for p in (149, 378)},
    **{p: 0.45 for p in (150, 379)},
    **{p: 0.25 for p in (136, 365)},
    **{p: 0.1 for p in (172, 397)},
}
_CORNERS = {61: -1.0, 78: -1.0, 291: 1.0, 308: 1.0}


def warp_mouth(
    frame: np.ndarray, landmarks: np.ndarray, *, aperture: float, width: float, own_aperture: float
) -> np.ndarray:
    """Open the mouth to `aperture` (0..1 of a full opening) by warping lips and jaw."""
    scale = float(geo.face_scale(landmarks))
    opening = max(0.0, aperture * WARP_FULL_APERTURE - own_aperture) * scale
    spread = width * WARP_FULL_WIDTH * scale
    if opening < 0.5 and abs(spread) < 0.5:
        return frame

    ex = landmarks[geo.RIGHT_EYE_OUTER, :2] - landmarks[geo.LEFT_EYE_OUTER, :2]
    ex = ex / np.linalg.norm(ex)
    ey = np.array([-ex[1], ex[0]])  # "down" in the face's own frame

    hull = lower_face_hull(landmarks)
    roi = roi_around(hull, 0.02 * scale, frame.shape[:2])
    x0, y0, x1, y1 = roi
    if x1 - x0 < 8 or y1 - y0 < 8:
        return frame

    ids = list(_JAW_FOLLOW)
    src = landmarks[ids, :2].astype(np.float64)
    move = np.array([_JAW_FOLLOW[p] for p in ids])[:, None] * opening * ey
    move += np.array([_CORNERS.get(p, 0.0) for p in ids])[:, None] * spread * ex
    dst = src + move
    # The hull and the ROI corners stay put: the warp fades to nothing at the mask's edge.
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
    anchors = np.vstack([hull, corners])
    src_all = np.vstack([src, anchors]) - (x0, y0)
    dst_all = np.vstack([dst, anchors]) - (x0, y0)

    region = np.asarray(frame[y0:y1, x0:x1])
    warped = piecewise_affine(region, src_all, dst_all)
    # What showed between the lips before (teeth of a smile) belongs to the upper jaw: it stays
    # with the upper lip, and only the newly opened space below it becomes cavity.
    lift = _JAW_FOLLOW[geo.UPPER_LIP_INNER_MID] * opening * ey
    old_inner = _inner_polygon(landmarks[:, :2] + lift) - (x0, y0)
    new_inner = _inner_polygon_from(dict(zip(ids, dst)), landmarks) - (x0, y0)
    shifted = cv2.warpAffine(
        region, np.float32([[1, 0, lift[0]], [0, 1, lift[1]]]), region.shape[1::-1], borderMode=cv2.BORDER_REFLECT
    ).astype(np.float32)
    warped = _paint_cavity(warped, shifted, new_inner, old_inner, opening, scale)
    alpha = feathered_alpha([hull], roi, 0.05 * scale)
    return blend_patch(frame, warped, alpha, roi)


def _inner_polygon(points: np.ndarray) -> np.ndarray:
    return np.vstack([points[geo.LIPS_INNER_UPPER], points[geo.LIPS_INNER_LOWER[::-1]]])


def _inner_polygon_from(moved: dict[int, np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    return np.vstack([moved.get(p, landmarks[p, :2]) for p in geo.LIPS_INNER_UPPER + geo.LIPS_INNER_LOWER[::-1]])


def _polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 255)
    return mask


def _paint_cavity(
    region: np.ndarray, kept: np.ndarray, new_inner: np.ndarray, old_inner: np.ndarray, opening: float, scale: float
) -> np.ndarray:
    """_paint_mouth within the box around the lips: the rest of the region stays as it is."""
    pad = int(4 * max(0.8, 0.008 * scale)) + 3  # room for the soft edge's blur
    x0, y0, x1, y1 = roi_around(np.vstack([new_inner, old_inner]), pad, region.shape[:2])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return region
    box = (slice(y0, y1), slice(x0, x1))
    region[box] = _paint_mouth(region[box], kept[box], new_inner - (x0, y0), old_inner - (x0, y0), opening, scale)
    return region


def _paint_mouth(
    region: np.ndarray, kept: np.ndarray, new_inner: np.ndarray, old_inner: np.ndarray, opening: float, scale: float
) -> np.ndarray:
    """Fill the opened lips: the old mouth interior where it was, below it a dark cavity.

    When the old interior shows no teeth (lips were closed), the top of the cavity gets a band of
    softly shaded upper teeth; wide openings show a hint of tongue at the bottom.
    """
    h, w = region.shape[:2]
    opened = _polygon_mask((h, w), new_inner)
    old = _polygon_mask((h, w), old_inner) & opened
    mask = opened & ~old
    if not mask.any():
        return region
    # The cavity follows the face's exposure, so a dim video does not get a glowing mouth.
    around = region[opened == 0]
    light = float(np.clip((around.mean() if around.size else 140.0) / 140.0, 0.4, 1.4))

    ys, xs = np.nonzero(mask)
    top_y = np.full(w, h, dtype=np.float64)
    np.minimum.at(top_y, xs, ys)
    x_min, x_max = xs.min(), xs.max()
    centre_x = 0.5 * (x_min + x_max)
    half = max(1.0, 0.5 * (x_max - x_min))

    yy, xx = np.mgrid[0:h, 0:w]
    across = np.clip(1.0 - ((xx - centre_x) / half) ** 2, 0.0, 1.0)  # 1 mid-mouth, 0 at the corners
    depth = yy - top_y[np.clip(xx, 0, w - 1)]
    bottom_y = np.zeros(w, dtype=np.float64)
    np.maximum.at(bottom_y, xs, ys)
    column = np.clip(xx, 0, w - 1)
    fraction = np.clip(depth / np.maximum(bottom_y[column] - top_y[column], 1.0), 0.0, 1.0)
    cavity = np.empty((h, w, 3), dtype=np.float32)
    cavity[:] = np.array([46.0, 20.0, 21.0]) * light
    tongue = np.clip((fraction - 0.55) / 0.45, 0.0, 1.0) * min(1.0, opening / (0.15 * scale))
    cavity += tongue[..., None] * (np.array([125.0, 58.0, 58.0]) * light - cavity)
    cavity *= (0.6 + 0.4 * across)[..., None]

    old_gap = old.any(axis=0).sum() and float(old.sum(axis=0).max())
    teeth_h = max(0.0, min(0.45 * opening, 0.07 * scale) - old_gap)
    teeth = (depth >= 0) & (depth < teeth_h) & (mask > 0)
    shade = (0.75 + 0.25 * np.sqrt(across)) * (1.0 - 0.2 * np.clip(depth / max(teeth_h, 1.0), 0, 1))
    teeth_rgb = np.array([222.0, 216.0, 204.0]) * min(light, 1.1)
    cavity[teeth] = (teeth_rgb * shade[teeth][:, None]).astype(np.float32)

    blur = max(0.6, 0.004 * scale)
    cavity = cv2.GaussianBlur(cavity, (0, 0), blur)
    soft_old = cv2.GaussianBlur(old.astype(np.float32) / 255.0, (0, 0), blur)[..., None]
    soft_new = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), blur)[..., None]
    out = region * (1.0 - soft_old) + kept * soft_old
    return out * (1.0 - soft_new) + cavity * soft_new
