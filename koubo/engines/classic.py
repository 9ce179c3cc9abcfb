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
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from koubo.engines.base import RenderInput
from koubo.engines.blend import (
    at_face_resolution,
    blend_patch,
    edit_strength,
    feathered_alpha,
    lower_face_hull,
    match_colour,
    roi_around,
)
from koubo.errors import Cancelled
from koubo.face import geometry as geo

# Aperture spread (in face-scale units, 5th..95th percentile) a template needs before its own
# mouths are worth retrieving; below it the person barely moves the lips.
RETRIEVAL_MIN_RANGE = 0.06
# Synthesized opening at target 1.0, in face-scale units (a wide but natural speaking mouth).
WARP_FULL_APERTURE = 0.24
# Spread/rounding at width target ±1, in face-scale units per lip corner.
WARP_FULL_WIDTH = 0.05
CANDIDATES = 24
COST_HOLD = 0.03  # showing the same source mouth twice
COST_JUMP = 0.25  # cutting to a non-consecutive source frame
OWN_FRAME_BONUS = 0.05  # the frame's own mouth needs no alignment at all
# A mouth from another shot (another light, another camera, maybe another person) is never shown;
# finite, so a shot without a usable mouth cannot make every path impossible.
COST_OTHER_SHOT = 1e6


@dataclass(frozen=True)
class MouthBank:
    """Mouth shape and head pose of every template frame, and the range the mouth covers."""

    aperture: np.ndarray
    width: np.ndarray
    pose: np.ndarray
    present: np.ndarray
    rest: float  # aperture of a closed mouth for this person and camera
    open: float  # aperture of a wide speaking mouth
    width_mid: float
    width_range: float

    @property
    def can_retrieve(self) -> bool:
        return int(self.present.sum()) >= 10 and self.open - self.rest >= RETRIEVAL_MIN_RANGE


def mouth_bank(landmarks: np.ndarray, present: np.ndarray) -> MouthBank:
    aperture = np.nan_to_num(geo.mouth_aperture(landmarks))
    width = np.nan_to_num(geo.mouth_width(landmarks))
    pose = np.nan_to_num(geo.pose_signature(landmarks))
    seen_a = aperture[present] if present.any() else np.zeros(1)
    seen_w = width[present] if present.any() else np.zeros(1)
    return MouthBank(
        aperture=aperture,
        width=width,
        pose=pose,
        present=present,
        rest=float(np.percentile(seen_a, 5)),
        open=float(np.percentile(seen_a, 95)),
        width_mid=float(np.median(seen_w)),
        width_range=float(max(np.percentile(seen_w, 95) - np.percentile(seen_w, 5), 1e-3)),
    )


class ClassicEngine:
    name = "classic"

    def render(self, job: RenderInput, should_stop: Callable[[], bool] | None = None) -> Iterator[np.ndarray]:
        track = job.track
        # Only trusted frames lend their mouth, and only they are edited (fading in and out).
        usable = track.usable
        bank = mouth_bank(track.landmarks, usable)
        plan = plan_retrieval(job, bank) if bank.can_retrieve else None
        strength = edit_strength(usable[job.source_index], job.fps)
        for i, s in enumerate(job.source_index):
            if should_stop is not None and should_stop():
                raise Cancelled()
            frame = np.asarray(job.frames[s])
            if strength[i] <= 0.0:
                yield frame
            elif plan is not None:
                yield _retrieved(job, plan, i, frame, float(strength[i]))
            else:
                yield at_face_resolution(
                    frame,
                    track.landmarks[s],
                    lambda image, landmarks, i=i, s=s: warp_mouth(
                        image,
                        landmarks,
                        aperture=float(job.targets.aperture[i]),
                        width=float(job.targets.width[i]),
                        own_aperture=float(bank.aperture[s]),
                        strength=float(strength[i]),
                    ),
                )


# --- retrieval -----------------------------------------------------------------------------------


def _retrieved(job: RenderInput, plan: np.ndarray, i: int, frame: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Frame i with the mouth the plan chose; at a cut, dissolved with the mouth the cut skipped."""
    track, s = job.track, int(job.source_index[i])

    def with_mouth(j: int) -> np.ndarray:
        if j == s:
            return frame
        return at_face_resolution(
            frame,
            track.landmarks[s],
            lambda image, landmarks: paste_mouth(image, landmarks, job.frames[j], track.landmarks[j], strength),
        )

    j = int(plan[i])
    out = with_mouth(j)
    previous = int(plan[i - 1]) if i > 0 else j
    continued = previous + 1
    cut = j not in (previous, continued)
    same_shot = not track.cuts[min(continued, s) + 1 : max(continued, s) + 1].any()
    if cut and continued < len(track.present) and track.usable[continued] and same_shot:
        # Half of what a continuous run would have shown softens the switch of mouth texture.
        out = ((out.astype(np.uint16) + with_mouth(continued)) // 2).astype(np.uint8)
    return out


def plan_retrieval(job: RenderInput, bank: MouthBank) -> np.ndarray:
    """Choose, for every output frame, the template frame whose mouth it shows (Viterbi).

    Unary cost: distance to the target mouth shape plus head-pose difference to the frame being
    edited; mouths from another shot are ruled out. Transition cost: free when the next source frame follows the previous one (real
    motion between them), small for holding a mouth, larger for a cut.
    """
    candidates_all = np.flatnonzero(bank.present)
    target_a = bank.rest + job.targets.aperture * (bank.open - bank.rest)
    target_w = bank.width_mid + job.targets.width * 0.5 * bank.width_range
    span = bank.open - bank.rest

    src = job.source_index
    shape_cost = ((bank.aperture[candidates_all][None, :] - target_a[:, None]) / span) ** 2 + 0.25 * (
        (bank.width[candidates_all][None, :] - target_w[:, None]) / bank.width_range
    ) ** 2
    pose_d = np.linalg.norm(bank.pose[candidates_all][None, :, :] - bank.pose[src][:, None, :], axis=-1)
    pose_scale = max(float(np.percentile(pose_d, 90)), 1e-6)
    unary = shape_cost + 0.5 * (pose_d / pose_scale) ** 2
    unary -= OWN_FRAME_BONUS * (candidates_all[None, :] == src[:, None])
    shot = np.cumsum(job.track.cuts)
    unary += COST_OTHER_SHOT * (shot[candidates_all][None, :] != shot[src][:, None])

    k = min(CANDIDATES, len(candidates_all))
    top = np.argpartition(unary, k - 1, axis=1)[:, :k]
    # The frame's own mouth is always a candidate, so a run of untouched frames stays possible.
    own_pos = np.searchsorted(candidates_all, src)
    own_ok = (own_pos < len(candidates_all)) & (candidates_all[np.minimum(own_pos, len(candidates_all) - 1)] == src)
    has_own = (top == own_pos[:, None]).any(axis=1)
    replace = own_ok & ~has_own
    top[replace, -1] = own_pos[replace]

    cand = candidates_all[top]  # (n_out, k) template frame numbers
    cost = np.take_along_axis(unary, top, axis=1)
    n = len(src)
    back = np.zeros((n, k), dtype=np.int32)
    total = cost[0].copy()
    for i in range(1, n):
        prev = cand[i - 1][:, None]
        cur = cand[i][None, :]
        trans = np.where(cur == prev + 1, 0.0, np.where(cur == prev, COST_HOLD, COST_JUMP))
        step = total[:, None] + trans
        back[i] = np.argmin(step, axis=0)
        total = step[back[i], np.arange(k)] + cost[i]
    path = np.empty(n, dtype=np.int64)
    best = int(np.argmin(total))
    for i in range(n - 1, -1, -1):
        path[i] = cand[i, best]
        best = back[i, best]
    return path


def paste_mouth(
    frame: np.ndarray, target_lm: np.ndarray, source: np.ndarray, source_lm: np.ndarray, strength: float = 1.0
) -> np.ndarray:
    """Put the lower face of `source` onto `frame`, aligned on skull-fixed points."""
    m = geo.similarity_transform(source_lm[geo.STABLE], target_lm[geo.STABLE])
    source_hull = geo.apply_affine(m, lower_face_hull(source_lm))
    target_hull = lower_face_hull(target_lm)
    scale = float(geo.face_scale(target_lm))
    roi = roi_around(np.vstack([source_hull, target_hull]), 0.05 * scale, frame.shape[:2])
    x0, y0, x1, y1 = roi
    if x1 - x0 < 8 or y1 - y0 < 8:
        return frame
    m_roi = m.copy()
    m_roi[:, 2] -= (x0, y0)
    patch = cv2.warpAffine(
        np.asarray(source), m_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    ).astype(np.float32)
    alpha = feathered_alpha([source_hull, target_hull], roi, 0.08 * scale)
    patch = match_colour(patch, frame[y0:y1, x0:x1].astype(np.float32), alpha)
    return blend_patch(frame, patch, alpha, roi, strength)


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
    frame: np.ndarray,
    landmarks: np.ndarray,
    *,
    aperture: float,
    width: float,
    own_aperture: float,
    strength: float = 1.0,
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
    warped = _piecewise_affine(region, src_all, dst_all)
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
    return blend_patch(frame, warped, alpha, roi, strength)


def _piecewise_affine(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Backward-map every pixel through the triangle of the destination mesh it falls in."""
    h, w = image.shape[:2]
    # The map is piecewise linear: computing it on a coarser grid loses nothing visible.
    step = max(2, max(h, w) // 100)
    gy, gx = np.mgrid[0:h:step, 0:w:step]
    grid = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)
    tri = Delaunay(dst)
    simplex = tri.find_simplex(grid)
    inside = simplex >= 0
    mapped = grid.copy()
    t = tri.transform[simplex[inside]]
    bary2 = np.einsum("nij,nj->ni", t[:, :2], grid[inside] - t[:, 2])
    bary = np.column_stack([bary2, 1.0 - bary2.sum(1)])
    verts = tri.simplices[simplex[inside]]
    mapped[inside] = np.einsum("ni,nij->nj", bary, src[verts])
    map_x = cv2.resize(mapped[:, 0].reshape(gx.shape).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    map_y = cv2.resize(mapped[:, 1].reshape(gx.shape).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(np.float32)


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
