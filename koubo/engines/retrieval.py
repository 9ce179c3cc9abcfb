"""Retrieval: give each output frame a real mouth from the template (the Video Rewrite idea).

A template that shows the person talking already holds real mouths at every opening, teeth and
lips included. `plan_retrieval` chooses, for the whole output at once (Viterbi), which template
frame lends its mouth to each output frame: its shape must match the target's, its motion the
target's motion (an opening mouth is not served by a closing one), its head pose the edited
frame's; the sequence prefers runs of consecutive template frames, and cuts only between mouths
that look alike, so a cut needs no cross-dissolve (a dissolve of two different mouths shows two
sets of lips). `paste_mouth` warps the chosen lower face onto the edited frame's own jaw and
cheeks with a triangulated mesh and blends it in band by band.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from koubo.engines.blend import edit_strength, hull_distance, lower_face_hull, match_colour, multiband_blend, roi_around
from koubo.engines.mesh import piecewise_affine
from koubo.face import geometry as geo
from koubo.features.mouth import MouthTargets

# Aperture spread (in face-scale units, 5th..95th percentile) a template needs before its own
# mouths are worth retrieving; below it the person barely moves the lips.
RETRIEVAL_MIN_RANGE = 0.06
CANDIDATES = 24
COST_HOLD = 0.03  # showing the same source mouth twice
COST_JUMP = 0.25  # cutting to a non-consecutive source frame
COST_CUT_MISMATCH = 2.0  # per unit of shape difference between the mouth cut to and the one cut from
WEIGHT_WIDTH = 0.25
WEIGHT_VELOCITY = 1.0
WEIGHT_POSE = 0.25  # the mesh fits the donor to the frame's jaw, so pose may differ more than a similarity allowed
OWN_FRAME_BONUS = 0.05  # the frame's own mouth needs no alignment at all
# Where the edit fades out towards frames it must not touch (and back in after them), the frame's
# own mouth is worth this much more, times how far the fade has gone: the plan hands over to the
# template's own mouth where the two agree, so the fade does not dissolve two different mouths
# into each other (two sets of lips, for a few frames).
FADE_OWN_BONUS = 10.0
# A mouth from another shot (another light, another camera, maybe another person) is never shown;
# finite, so a shot without a usable mouth cannot make every path impossible.
COST_OTHER_SHOT = 1e6

# Lips and chin keep the donor's shape (that is the mouth we borrow); the rest of the lower face
# lands on the edited frame's own landmarks, so jaw line and cheeks meet the frame where the
# blend ends. Chin points in between follow the donor partly (the jaw opens with the mouth).
_DONOR_LIPS = sorted(set(geo.LIPS_OUTER_UPPER + geo.LIPS_OUTER_LOWER + geo.LIPS_INNER_UPPER + geo.LIPS_INNER_LOWER))
_DONOR_SHARE = {
    **{p: 1.0 for p in _DONOR_LIPS},
    **{p: 0.8 for p in (152, 148, 176, 377, 400, 199, 175, 18, 200)},
    **{p: 0.5 for p in (149, 378, 32, 262)},
    **{p: 0.25 for p in (150, 379)},
}
_MESH_POINTS = sorted(set(geo.LOWER_FACE) | set(_DONOR_SHARE) | {50, 280, 207, 427, 187, 411, 214, 434})


@dataclass(frozen=True)
class MouthBank:
    """Mouth shape, motion and head pose of every template frame, and the range the mouth covers."""

    aperture: np.ndarray
    width: np.ndarray
    velocity: np.ndarray  # aperture change per frame (face-scale units), 0 where unknown
    pose: np.ndarray
    present: np.ndarray
    rest: float  # aperture of a closed mouth for this person and camera
    open: float  # aperture of a wide speaking mouth
    width_mid: float
    width_range: float

    @property
    def can_retrieve(self) -> bool:
        return int(self.present.sum()) >= 10 and self.open - self.rest >= RETRIEVAL_MIN_RANGE

    @property
    def span(self) -> float:
        return max(self.open - self.rest, 1e-6)


def mouth_bank(landmarks: np.ndarray, present: np.ndarray) -> MouthBank:
    aperture = np.nan_to_num(geo.mouth_aperture(landmarks))
    width = np.nan_to_num(geo.mouth_width(landmarks))
    pose = np.nan_to_num(geo.pose_signature(landmarks))
    velocity = np.gradient(aperture) if len(aperture) > 1 else np.zeros_like(aperture)
    known = present & np.roll(present, 1) & np.roll(present, -1)
    velocity = np.where(known, velocity, 0.0)
    seen_a = aperture[present] if present.any() else np.zeros(1)
    seen_w = width[present] if present.any() else np.zeros(1)
    return MouthBank(
        aperture=aperture,
        width=width,
        velocity=velocity,
        pose=pose,
        present=present,
        rest=float(np.percentile(seen_a, 5)),
        open=float(np.percentile(seen_a, 95)),
        width_mid=float(np.median(seen_w)),
        width_range=float(max(np.percentile(seen_w, 95) - np.percentile(seen_w, 5), 1e-3)),
    )


def target_opening(targets: MouthTargets) -> np.ndarray:
    """Aperture 0..1 the lips should show: closure presses them together whatever the loudness."""
    return np.clip(targets.aperture * (1.0 - targets.closure), 0.0, 1.0)


def target_spread(targets: MouthTargets) -> np.ndarray:
    """Lip spread -1 (rounded) .. +1 (spread): width, narrowed by rounding beyond what width implies."""
    implied = np.clip(-targets.width, 0.0, 1.0)
    return np.clip(targets.width - np.clip(targets.rounding - implied, 0.0, 1.0), -1.0, 1.0)


def _shape(bank: MouthBank, frames: np.ndarray) -> np.ndarray:
    """Shape vectors of template frames in units where 1 is the person's full range."""
    return np.stack(
        [
            bank.aperture[frames] / bank.span,
            np.sqrt(WEIGHT_WIDTH) * bank.width[frames] / bank.width_range,
            np.sqrt(WEIGHT_VELOCITY) * bank.velocity[frames] / bank.span,
        ],
        axis=-1,
    )


def plan_retrieval(job, bank: MouthBank) -> np.ndarray:
    """Choose, for every output frame, the template frame whose mouth it shows (Viterbi).

    Unary cost: distance to the target's shape (opening, spread) and motion (the target's change
    per frame), plus head-pose difference to the frame being edited; mouths from another shot of
    the template are ruled out; where the edit fades out (see FADE_OWN_BONUS), the frame's own
    mouth is preferred the further the fade has gone. Transition cost: free when
    the next source frame follows the previous one (real motion between them), small for holding
    a mouth, and for a cut a fixed price plus the difference between the mouth cut to and the one
    a continuous run would have shown, so cuts fall where the two agree.
    """
    candidates_all = np.flatnonzero(bank.present)
    target_a = bank.rest + target_opening(job.targets) * bank.span
    target_w = bank.width_mid + target_spread(job.targets) * 0.5 * bank.width_range
    target_v = np.gradient(target_a) if len(target_a) > 1 else np.zeros_like(target_a)
    target = np.stack(
        [
            target_a / bank.span,
            np.sqrt(WEIGHT_WIDTH) * target_w / bank.width_range,
            np.sqrt(WEIGHT_VELOCITY) * target_v / bank.span,
        ],
        axis=-1,
    )
    bank_shape = _shape(bank, candidates_all)

    src = job.source_index
    # Output frames x template frames is a large matrix for a long template (a minute of speech
    # over ten minutes of template: 1500 x 15000); it is built a block of rows at a time, and of
    # each row only the best CANDIDATES are kept.
    pose_d = np.empty((len(src), len(candidates_all)))
    for rows in _row_blocks(len(src), len(candidates_all) * bank.pose.shape[-1]):
        pose_d[rows] = np.linalg.norm(bank.pose[candidates_all][None, :, :] - bank.pose[src[rows]][:, None, :], axis=-1)
    pose_scale = max(float(np.percentile(pose_d, 90)), 1e-6)
    shot = np.cumsum(job.track.cuts)
    own_bonus = OWN_FRAME_BONUS + FADE_OWN_BONUS * (1.0 - edit_strength(job.track.usable[src], job.fps))
    k = min(CANDIDATES, len(candidates_all))
    top = np.empty((len(src), k), dtype=np.int64)
    cost = np.empty((len(src), k))
    for rows in _row_blocks(len(src), len(candidates_all) * bank_shape.shape[-1]):
        shape_cost = ((bank_shape[None, :, :] - target[rows, None, :]) ** 2).sum(-1)
        unary = shape_cost + WEIGHT_POSE * (pose_d[rows] / pose_scale) ** 2
        unary -= own_bonus[rows, None] * (candidates_all[None, :] == src[rows, None])
        unary += COST_OTHER_SHOT * (shot[candidates_all][None, :] != shot[src[rows]][:, None])
        top[rows] = np.argpartition(unary, k - 1, axis=1)[:, :k]
        cost[rows] = np.take_along_axis(unary, top[rows], axis=1)
    del pose_d
    # The frame's own mouth is always a candidate, so a run of untouched frames stays possible.
    own_pos = np.searchsorted(candidates_all, src)
    own_ok = (own_pos < len(candidates_all)) & (candidates_all[np.minimum(own_pos, len(candidates_all) - 1)] == src)
    has_own = (top == own_pos[:, None]).any(axis=1)
    replace = own_ok & ~has_own
    if replace.any():
        # The own frame's cost as the unary gives it (no pose difference, same shot).
        rows = np.flatnonzero(replace)
        cost[rows, -1] = ((_shape(bank, src[rows]) - target[rows]) ** 2).sum(-1) - own_bonus[rows]
    top[replace, -1] = own_pos[replace]

    cand = candidates_all[top]  # (n_out, k) template frame numbers
    n_template = len(bank.aperture)
    n = len(src)
    back = np.zeros((n, k), dtype=np.int32)
    total = cost[0].copy()
    for i in range(1, n):
        prev = cand[i - 1][:, None]
        cur = cand[i][None, :]
        continued = np.minimum(cand[i - 1] + 1, n_template - 1)
        mismatch = ((_shape(bank, continued)[:, None, :] - _shape(bank, cand[i])[None, :, :]) ** 2).sum(-1)
        cut = COST_JUMP + COST_CUT_MISMATCH * mismatch
        trans = np.where(cur == prev + 1, 0.0, np.where(cur == prev, COST_HOLD, cut))
        step = total[:, None] + trans
        back[i] = np.argmin(step, axis=0)
        total = step[back[i], np.arange(k)] + cost[i]
    path = np.empty(n, dtype=np.int64)
    best = int(np.argmin(total))
    for i in range(n - 1, -1, -1):
        path[i] = cand[i, best]
        best = back[i, best]
    return path


def _row_blocks(rows: int, columns: int, cells: int = 4_000_000) -> list[slice]:
    """Slices of `rows` such that a block of rows by `columns` stays under `cells` cells."""
    step = max(1, cells // max(columns, 1))
    return [slice(start, min(rows, start + step)) for start in range(0, rows, step)]


@dataclass(frozen=True)
class DonorPatch:
    """A donor's lower face warped into the edited frame's ROI, and where it may go."""

    patch: np.ndarray  # (h, w, 3) float32 over roi
    hull: np.ndarray  # outline the blend must stay inside, frame coordinates
    roi: tuple[int, int, int, int]
    radius: float  # feather radius, pixels


# A donor's crop reaches this many face scales past its lower-face mesh on every side: the patch is
# warped from points on the donor's mesh and from the edited frame's ROI mapped back onto the donor,
# which lies within a fraction of a face scale of it for any pose the plan accepts.
DONOR_MARGIN = 0.75


def donor_region(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a frame that donor_patch may read when the frame lends its mouth."""
    return roi_around(landmarks[_MESH_POINTS, :2], DONOR_MARGIN * float(geo.face_scale(landmarks)), shape)


def aligned_landmarks(landmarks: np.ndarray, target_lm: np.ndarray) -> np.ndarray:
    """`landmarks` moved onto the target frame by a similarity on skull-fixed points."""
    m = geo.similarity_transform(landmarks[geo.STABLE], target_lm[geo.STABLE])
    return geo.apply_affine(m, landmarks[:, :2])


def donor_patch(
    frame_shape: tuple[int, ...],
    target_lm: np.ndarray,
    source: np.ndarray,
    source_lm: np.ndarray,
    shape_from: np.ndarray | None = None,
) -> DonorPatch | None:
    """Warp the lower face of `source` into the frame: lips and chin as the donor has them, aligned
    on skull-fixed points; jaw line and cheeks on the frame's own landmarks (None if too small).

    `shape_from` (aligned landmarks of another mouth) moves the lips halfway to that mouth's shape:
    at a cut, the new mouth's texture takes a step toward the old one's shape instead of a dissolve.
    """
    m = geo.similarity_transform(source_lm[geo.STABLE], target_lm[geo.STABLE])
    aligned = geo.apply_affine(m, source_lm[:, :2])
    if shape_from is not None:
        aligned = aligned.copy()
        aligned[_DONOR_LIPS] = 0.5 * (aligned[_DONOR_LIPS] + shape_from[_DONOR_LIPS])
    share = np.array([_DONOR_SHARE.get(p, 0.0) for p in _MESH_POINTS])[:, None]
    dst_points = share * aligned[_MESH_POINTS] + (1.0 - share) * target_lm[_MESH_POINTS, :2]
    moved = target_lm[:, :2].copy()
    moved[_MESH_POINTS] = dst_points
    hull = lower_face_hull(moved)
    scale = float(geo.face_scale(target_lm))
    roi = roi_around(np.vstack([hull, dst_points]), 0.05 * scale, frame_shape[:2])
    x0, y0, x1, y1 = roi
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    # The ROI's corners follow the similarity alone: outside the face the two frames agree on it.
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
    src = np.vstack([source_lm[_MESH_POINTS, :2], geo.apply_affine(cv2.invertAffineTransform(m), corners)])
    dst = np.vstack([dst_points, corners]) - (x0, y0)
    patch = piecewise_affine(source, src, dst, (x1 - x0, y1 - y0))
    return DonorPatch(patch=patch, hull=hull, roi=roi, radius=0.08 * scale)


def paste_mouth(
    frame: np.ndarray,
    target_lm: np.ndarray,
    source: np.ndarray,
    source_lm: np.ndarray,
    shape_from: np.ndarray | None = None,
    strength: float = 1.0,
) -> np.ndarray:
    """Put the lower face of `source` onto `frame` (donor_patch), colour-matched and blended band
    by band, so neither an outline nor a colour step shows where it ends; `strength` < 1 fades the
    edit towards the frame's own pixels (next to frames that must not be edited)."""
    donor = donor_patch(frame.shape, target_lm, source, source_lm, shape_from)
    if donor is None:
        return frame
    x0, y0, x1, y1 = donor.roi
    distance = hull_distance([donor.hull], donor.roi, donor.radius)
    alpha = np.clip(distance / donor.radius, 0.0, 1.0)
    patch = match_colour(donor.patch, frame[y0:y1, x0:x1].astype(np.float32), alpha)
    blended = multiband_blend(frame, patch, distance, donor.radius, donor.roi)
    if strength >= 1.0:
        return blended
    out = frame.copy()
    mixed = strength * blended[y0:y1, x0:x1].astype(np.float32) + (1.0 - strength) * frame[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return out
