"""The built-in engine: lip-sync with no neural weights.

Two ways to give a frame the mouth the speech asks for:

- **Retrieval** (retrieval.py, the Video Rewrite idea): a template that shows the person talking
  already holds real mouths at every opening, teeth and lips included. The whole sequence of
  source mouths is chosen at once on shape, motion and head pose, cutting only where two mouths
  agree; each is warped onto the frame's own jaw and cheeks (mesh.py) and blended band by band
  (blend.py). Never a cross-dissolve: two mouths dissolved show two sets of lips.
- **Warp** (here): a template that never opens its mouth (a presenter at rest, one photo) has
  nothing to retrieve. Lips and jaw are moved by a piecewise-affine warp of a triangulated
  lower-face mesh into a smooth almond opening, and synth_mouth.py paints its inside.

Either way, only a feathered lower-face region changes: outside it, pixels are the template's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import cv2
import numpy as np

from koubo.engines.base import RenderInput
from koubo.engines.blend import (
    at_face_resolution,
    blend_patch,
    edit_strength,
    feathered_alpha,
    lower_face_hull,
    roi_around,
)
from koubo.engines.mesh import piecewise_affine
from koubo.engines.retrieval import (  # noqa: F401 (MouthBank, mouth_bank: the engine's public names)
    MouthBank,
    aligned_landmarks,
    donor_region,
    mouth_bank,
    paste_mouth,
    plan_retrieval,
    target_opening,
    target_spread,
)
from koubo.engines.synth_mouth import mouth_colours, paint_mouth
from koubo.errors import Cancelled
from koubo.face import geometry as geo
from koubo.media.video import FrameCrops

if TYPE_CHECKING:
    from koubo.config import Settings

# Synthesized opening per unit of target, in face-scale units (the painted teeth cover part of
# it, as real ones do).
WARP_FULL_APERTURE = 0.29
# Above WARP_KNEE the jaw drops more slowly (WARP_KNEE_SLOPE of the rate), so target 1.0 opens
# 0.85 x 0.29 = 0.25: the real talking videos in ../shared/media measure 0.15-0.25 face units at
# their 99th percentile (0.29 at most), and the full rate made the loudest syllables a wider
# mouth than any of them. Below the knee the rate stays: smaller openings would be measured
# worse on small faces (the sync check's correlation fell below its bound at 0.25 throughout).
WARP_KNEE = 0.75
WARP_KNEE_SLOPE = 0.4
# Spread/rounding at width target ±1, in face-scale units per lip corner.
WARP_FULL_WIDTH = 0.05
# A resting mouth parted wider than this (face-scale units) shows its own teeth, worth keeping;
# a narrower gap is only the dark line between closed lips, which the painted mouth replaces.
OWN_TEETH_APERTURE = 0.05


class ClassicEngine:
    name = "classic"

    def render(self, job: RenderInput, should_stop: Callable[[], bool] | None = None) -> Iterator[np.ndarray]:
        track = job.track
        # Only trusted frames lend their mouth, and only they are edited (fading in and out).
        usable = track.usable
        bank = mouth_bank(track.landmarks, usable)
        plan = plan_retrieval(job, bank) if bank.can_retrieve else None
        strength = edit_strength(usable[job.source_index], job.fps)
        opening, spread = target_opening(job.targets), target_spread(job.targets)

        def edited(i: int, s: int, frame: np.ndarray) -> np.ndarray:
            if strength[i] <= 0.0:
                return frame
            if plan is not None:
                return _retrieved(job, plan, donors, i, frame, float(strength[i]))
            return at_face_resolution(
                frame,
                track.landmarks[s],
                lambda image, landmarks: warp_mouth(
                    image,
                    landmarks,
                    aperture=float(opening[i]),
                    width=float(spread[i]),
                    own_aperture=float(bank.aperture[s]),
                    teeth=float(job.targets.teeth[i]),
                    closure=float(job.targets.closure[i]),
                    strength=float(strength[i]),
                ),
            )

        # The mouths borrowed from other frames are cut out first (one pass), the frames streamed.
        donors = job.frames.crops(donor_regions(job, plan, strength), should_stop) if plan is not None else None
        frames = job.frames.in_order(job.source_index, should_stop)
        try:
            for i, s in enumerate(job.source_index):
                if should_stop is not None and should_stop():
                    raise Cancelled()
                yield edited(i, int(s), next(frames))
        finally:
            frames.close()
            if donors is not None:
                donors.close()


# --- retrieval -----------------------------------------------------------------------------------


def make_engine(settings: Settings | None = None) -> ClassicEngine:
    """The registry's entry (koubo.engines.ENGINE_MODULES): the classic engine needs no settings."""
    return ClassicEngine()


def donor_regions(job: RenderInput, plan: np.ndarray, strength: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """The region of each template frame that lends its mouth to another output frame."""
    lent = {int(j) for j, s, w in zip(plan, job.source_index, strength) if j != s and w > 0.0}
    shape = (job.frames.height, job.frames.width)
    return {j: donor_region(job.track.landmarks[j], shape) for j in sorted(lent)}


def _retrieved(
    job: RenderInput, plan: np.ndarray, donors: FrameCrops, i: int, frame: np.ndarray, strength: float = 1.0
) -> np.ndarray:
    """Frame i with the mouth the plan chose. Never a dissolve of two mouths (it shows two sets of
    lips): the plan cuts where the mouths agree, and at a cut the new mouth's lips are warped
    halfway to the shape the previous run would have shown next (when that one is of this shot)."""
    track, s, j = job.track, int(job.source_index[i]), int(plan[i])
    previous = int(plan[i - 1]) if i > 0 else j
    continued = previous + 1
    cut = j not in (previous, continued) and continued < len(track.present) and bool(track.usable[continued])
    cut = cut and not track.cuts[min(continued, s) + 1 : max(continued, s) + 1].any()
    if j == s and not cut:
        return frame

    def edit(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        # `landmarks` are the frame's, in the (possibly enlarged) image the edit is drawn on.
        shape_from = aligned_landmarks(track.landmarks[continued], landmarks) if cut else None
        if j == s:
            source, source_lm = frame, track.landmarks[j]
        else:
            source, origin = donors.get(j)
            source_lm = track.landmarks[j] - origin.astype(np.float32)
        return paste_mouth(image, landmarks, source, source_lm, shape_from, strength)

    return at_face_resolution(frame, track.landmarks[s], edit)


# --- warp ----------------------------------------------------------------------------------------

# How far jaw points follow the opening (1 = the full opening, downwards).
_JAW_FOLLOW = {
    **{p: 0.9 for p in (152, 148, 176, 377, 400, 199, 175)},
    **{p: 0.65 for p in (149, 378)},
    **{p: 0.45 for p in (150, 379)},
    **{p: 0.25 for p in (136, 365)},
    **{p: 0.1 for p in (172, 397)},
}
_UPPER_LIPS = geo.LIPS_OUTER_UPPER[1:-1] + geo.LIPS_INNER_UPPER[1:-1]
_LOWER_LIPS = geo.LIPS_OUTER_LOWER[1:-1] + geo.LIPS_INNER_LOWER[1:-1]
_OUTER_LIPS = set(geo.LIPS_OUTER_UPPER + geo.LIPS_OUTER_LOWER)
_LIP_CORNERS = {61: -1.0, 78: -1.0, 291: 1.0, 308: 1.0}
_CORNER_DROP = 0.2  # the corners sink a little as the jaw opens
_UPPER_LIFT = 0.12  # the upper lip's inner edge rises a little, most in the middle
# Opening lips stretch thinner: the outer edges follow the inner ones only this far.
_UPPER_OUTER_LIFT = 0.4
_LOWER_OUTER_DROP = 0.9
# The inner lip corners sit this far out (fraction of the mouth's half-width, MediaPipe's mesh):
# the opening's profile is laid out between them, so it closes exactly where they are.
_INNER_CORNER = 0.91


def opening_profile(t: np.ndarray, width: float) -> np.ndarray:
    """Share of the full opening at `t` (-1 .. 1 between the inner lip corners) for lip spread
    `width` (-1 rounded .. +1 spread). Neutral and spread mouths open as a lens whose edges meet
    in the corners at an angle (never a blunt, square end); a spread one is flatter across the
    middle; a rounded one opens only in its middle, its lips sealed at the sides, as an oval."""
    rounded, spread = max(-width, 0.0), max(width, 0.0)
    reach = 1.0 - 0.15 * rounded  # a rounded mouth's opening ends before the corners
    power = 2.8 + 0.8 * spread - 0.8 * rounded
    taper = 0.85 + 0.15 * spread - 0.2 * rounded
    x = np.clip(np.abs(t) / reach, 0.0, 1.0)
    return (1.0 - x**power) ** taper


def _lip_moves(
    landmarks: np.ndarray, opening: float, spread: float, width: float, ex: np.ndarray, ey: np.ndarray
) -> dict:
    """Where each moving point goes: lips open along `opening_profile`, thinning as they stretch,
    the jaw follows the opening."""
    centre = 0.5 * (landmarks[geo.MOUTH_LEFT, :2] + landmarks[geo.MOUTH_RIGHT, :2])
    half = max(1.0, 0.5 * float(np.linalg.norm(landmarks[geo.MOUTH_RIGHT, :2] - landmarks[geo.MOUTH_LEFT, :2])))
    width = float(np.clip(width, -1.0, 1.0))
    # Lips pressed together press along their whole length, rounded or not (a rounded profile
    # under a closing mouth folded the sealed corners into a hook).
    shape = width if opening > 0.0 else 0.0
    moves = {}
    for p in _UPPER_LIPS + _LOWER_LIPS + list(_LIP_CORNERS):
        t = float(np.clip((landmarks[p, :2] - centre) @ ex / half, -1.0, 1.0))
        profile = float(opening_profile(np.array(t / _INNER_CORNER), shape))
        if p in _LIP_CORNERS:
            down = _CORNER_DROP
        elif p in _LOWER_LIPS:
            down = (_CORNER_DROP + (1.0 - _CORNER_DROP) * profile) * (_LOWER_OUTER_DROP if p in _OUTER_LIPS else 1.0)
        else:
            lift = _UPPER_LIFT * (_UPPER_OUTER_LIFT if p in _OUTER_LIPS else 1.0)
            down = _CORNER_DROP * (1.0 - profile) - lift * profile
        # Rounding gathers (spreading stretches) the lips evenly toward (from) the middle, so
        # points keep their order across the mouth and the opening's ends stay smooth.
        inward = _LIP_CORNERS.get(p, t)
        moves[p] = down * opening * ey + inward * spread * ex
    for p, follow in _JAW_FOLLOW.items():
        moves[p] = follow * opening * ey
    return moves


def warp_opening(aperture: float) -> float:
    """Share of WARP_FULL_APERTURE a target `aperture` opens: linear up to the knee, slower above."""
    return min(aperture, WARP_KNEE) + WARP_KNEE_SLOPE * max(aperture - WARP_KNEE, 0.0)


def warp_mouth(
    frame: np.ndarray,
    landmarks: np.ndarray,
    *,
    aperture: float,
    width: float,
    own_aperture: float,
    teeth: float | None = None,
    closure: float = 0.0,
    strength: float = 1.0,
) -> np.ndarray:
    """Open the mouth to `aperture` (0..1 of a full opening) by warping lips and jaw, and paint
    its inside; `closure` presses a slightly open resting mouth shut."""
    scale = float(geo.face_scale(landmarks))
    # Without closure the mouth never shuts further than the template's own resting lips.
    pressed = -own_aperture * scale * float(np.clip(closure, 0.0, 1.0))
    opening = max((warp_opening(aperture) * WARP_FULL_APERTURE - own_aperture) * scale, pressed)
    spread = width * WARP_FULL_WIDTH * scale
    if abs(opening) < 0.5 and abs(spread) < 0.5:
        return frame

    ex = landmarks[geo.RIGHT_EYE_OUTER, :2] - landmarks[geo.LEFT_EYE_OUTER, :2]
    ex = ex / np.linalg.norm(ex)
    ey = np.array([-ex[1], ex[0]])  # "down" in the face's own frame

    hull = lower_face_hull(landmarks)
    roi = roi_around(hull, 0.1 * scale, frame.shape[:2])
    x0, y0, x1, y1 = roi
    if x1 - x0 < 8 or y1 - y0 < 8:
        return frame

    moves = _lip_moves(landmarks, opening, spread, width, ex, ey)
    ids = list(moves)
    src = landmarks[ids, :2].astype(np.float64)
    dst = src + np.array([moves[p] for p in ids])
    # The ROI corners and a ring just outside the hull stay put: the warp fades to nothing at the
    # mask's edge. Anchors on the hull itself would sit in the path of the dropping chin and fold
    # the mesh (a crease on the chin).
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
    middle = hull.mean(0)
    anchors = np.vstack([middle + (hull - middle) * 1.12, corners])
    src_all = np.vstack([src, anchors]) - (x0, y0)
    dst_all = np.vstack([dst, anchors]) - (x0, y0)

    region = np.asarray(frame[y0:y1, x0:x1])
    local = landmarks[:, :2] - (x0, y0)
    colours = mouth_colours(
        region,
        np.vstack([local[geo.LIPS_OUTER_UPPER], local[geo.LIPS_OUTER_LOWER[::-1]]]),
        np.vstack([local[geo.LIPS_INNER_UPPER], local[geo.LIPS_INNER_LOWER[::-1]]]),
    )
    warped = piecewise_affine(region, src_all, dst_all)
    moved = local.copy()
    moved[ids] = dst - (x0, y0)
    if opening > 0.5:
        warped = paint_mouth(
            warped,
            moved[geo.LIPS_INNER_UPPER],
            moved[geo.LIPS_INNER_LOWER],
            ex,
            ey,
            teeth=float(aperture if teeth is None else teeth),
            spread=float(width),
            scale=scale,
            colours=colours,
        )
        if own_aperture > OWN_TEETH_APERTURE:
            warped = _keep_own_interior(warped, region, local, moves[geo.UPPER_LIP_INNER_MID], scale)
    alpha = feathered_alpha([hull], roi, 0.05 * scale)
    return blend_patch(frame, warped, alpha, roi, strength)


def _keep_own_interior(warped: np.ndarray, region: np.ndarray, local: np.ndarray, lift: np.ndarray, scale: float):
    """What showed between the lips before (the teeth of a smile) belongs to the upper jaw: it
    moves with the upper lip and covers the painted mouth, which fills only the new space."""
    old_inner = np.vstack([local[geo.LIPS_INNER_UPPER], local[geo.LIPS_INNER_LOWER[::-1]]]) + lift
    mask = np.zeros(region.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(old_inner).astype(np.int32)], 255)
    if not mask.any():
        return warped
    shift = np.float32([[1, 0, lift[0]], [0, 1, lift[1]]])
    kept = cv2.warpAffine(region, shift, region.shape[1::-1], borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(0.6, 0.004 * scale))[..., None]
    return warped * (1.0 - soft) + kept * soft
