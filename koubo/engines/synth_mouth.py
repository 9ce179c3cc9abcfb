"""The inside of a mouth, painted for a face that never opens its own (the warp path).

What makes an opening read as a mouth and not a hole: a smooth almond outline meeting in the
corners, lips whose inner rim is darker and wetter, upper teeth hanging from the upper lip (more
of them the wider and more spread the mouth), a hint of lower teeth, a tongue, and a throat that
is dark but not black, its colour taken from this person's lips and the scene's light. Everything
is laid out in the face's own frame (`across` the mouth, `down` the face), so a tilted head gets
a tilted mouth, and edges are anti-aliased analytically so it does not look cut out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import PchipInterpolator

# Upper-teeth height at full teeth visibility, face-scale units (a real incisor shows ~0.05-0.07).
TEETH_HEIGHT = 0.085
# Incisor boundaries, as fractions of the mouth's half-width: central, lateral, canine.
_TOOTH_EDGES = (0.0, 0.22, 0.40, 0.56)
_TEETH_RGB = np.array([212.0, 204.0, 190.0])


@dataclass(frozen=True)
class MouthColours:
    lips: np.ndarray  # (3,) float RGB median of the lips
    skin: np.ndarray  # (3,) float RGB median of the skin around them

    @property
    def light(self) -> float:
        """Scene brightness relative to a well-lit face, so teeth do not glow in a dim video."""
        return float(np.clip(self.skin.mean() / 165.0, 0.35, 1.25))


def mouth_colours(region: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> MouthColours:
    """Lip and skin colour of `region` from the outer and inner lip polygons (region coordinates)."""
    h, w = region.shape[:2]
    lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(lips, [np.round(outer).astype(np.int32)], 255)
    opening = np.zeros((h, w), np.uint8)
    cv2.fillPoly(opening, [np.round(inner).astype(np.int32)], 255)
    lip_px = region[(lips > 0) & (opening == 0)]
    ring = cv2.dilate(lips, np.ones((9, 9), np.uint8), iterations=2) & ~lips
    skin_px = region[ring > 0]
    skin = np.median(skin_px, axis=0) if len(skin_px) else np.full(3, 150.0)
    lip = np.median(lip_px, axis=0) if len(lip_px) else skin * np.array([0.95, 0.75, 0.75])
    return MouthColours(lips=lip.astype(np.float64), skin=skin.astype(np.float64))


def _curve(points: np.ndarray) -> PchipInterpolator:
    """b(a) through the points, monotone between them: smooth, with no overshoot at the corners."""
    order = np.argsort(points[:, 0])
    a, b = points[order, 0], points[order, 1]
    keep = np.concatenate([[True], np.diff(a) > 1e-3])
    return PchipInterpolator(a[keep], b[keep], extrapolate=True)


def paint_mouth(
    region: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
    across: np.ndarray,
    down: np.ndarray,
    *,
    teeth: float,
    spread: float,
    scale: float,
    colours: MouthColours,
) -> np.ndarray:
    """Paint the opening between the inner-lip curves `upper` and `lower` (corner to corner,
    region coordinates) into float32 `region`, in place; returns it."""
    corner_l, corner_r = upper[0], upper[-1]
    centre = 0.5 * (corner_l + corner_r)
    half = max(1.0, 0.5 * float(np.linalg.norm(corner_r - corner_l)))
    pad = 3 + int(0.03 * scale)
    pts = np.vstack([upper, lower])
    x0, y0 = np.maximum(np.floor(pts.min(0)) - pad, 0).astype(int)
    x1, y1 = np.ceil(pts.max(0) + pad).astype(int)
    x1, y1 = min(x1, region.shape[1]), min(y1, region.shape[0])
    if x1 - x0 < 3 or y1 - y0 < 3:
        return region

    def face_frame(p: np.ndarray) -> np.ndarray:
        d = p - centre
        return np.column_stack([d @ across, d @ down])

    up_curve, lo_curve = _curve(face_frame(upper)), _curve(face_frame(lower))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    rel_x, rel_y = xx - centre[0], yy - centre[1]
    a = rel_x * across[0] + rel_y * across[1]
    b = rel_x * down[0] + rel_y * down[1]
    u = np.clip(a / half, -1.0, 1.0)  # -1 .. 1 across the mouth
    inside_a = np.abs(a) < half
    b_up = up_curve(np.clip(a, -half, half))
    b_lo = lo_curve(np.clip(a, -half, half))
    gap = np.maximum(b_lo - b_up, 0.0)
    if float(gap.max()) < 1.0:
        return region
    depth = b - b_up  # px below the upper lip's inner edge
    height = b_lo - b  # px above the lower lip's inner edge
    # Anti-aliased coverage of the opening (one-pixel ramp on every edge).
    cover = np.clip(np.minimum(depth, height) + 0.5, 0.0, 1.0) * inside_a
    if not cover.any():
        return region
    arch = np.sqrt(np.clip(1.0 - u * u, 0.0, 1.0))  # 1 mid-mouth, 0 in the corners
    lips, light = colours.lips, colours.light
    max_gap = float(gap.max())

    # Throat: the lips' own colour, very dark, a little less so near the rim where light enters.
    rim = np.exp(-np.clip(np.minimum(depth, height), 0, None) / max(1.5, 0.18 * max_gap))
    mouth = lips[None, None, :] * (0.15 + 0.1 * rim[..., None] + 0.04 * arch[..., None])

    # Tongue: a low rounded back across the lower part of the opening, lit from the front.
    tongue_h = 0.3 * gap * np.clip(max_gap / (0.10 * scale), 0.0, 1.0) * np.clip(1.0 - (u / 0.8) ** 2, 0.0, 1.0)
    tongue = np.clip((tongue_h - height) / np.maximum(1.5, 0.3 * tongue_h), 0.0, 1.0) * (tongue_h > 0.5)
    tongue_rgb = lips * np.array([0.85, 0.58, 0.6])
    toward_front = np.clip(1.0 - (tongue_h - height) / np.maximum(tongue_h, 1.0), 0.0, 1.0)
    tongue_shade = (0.35 + 0.35 * toward_front) * (0.6 + 0.4 * arch)
    mouth += tongue[..., None] * (tongue_rgb[None, None, :] * tongue_shade[..., None] - mouth)

    # Upper teeth: hang from the upper lip, recede (and darken) toward the corners.
    width_k = np.clip(0.75 + 0.35 * spread, 0.4, 1.1)
    teeth_u = np.clip(1.0 - (u / (0.78 * width_k + 0.1)) ** 2, 0.0, 1.0)
    t_height = TEETH_HEIGHT * scale * float(np.clip(teeth, 0.0, 1.0)) * np.sqrt(teeth_u)
    t_height = np.minimum(t_height, 0.5 * gap)
    upper_teeth = np.clip(t_height - depth + 0.5, 0.0, 1.0) * (t_height > 0.5)
    tooth_pos = np.abs(u) / max(float(width_k), 1e-3)
    seams = sum(np.exp(-(((tooth_pos - e) * half / 0.7) ** 2)) for e in _TOOTH_EDGES)
    lip_shadow = 1.0 - 0.4 * np.exp(-np.clip(depth, 0, None) / max(1.0, 0.2 * TEETH_HEIGHT * scale))
    tooth_shade = (0.5 + 0.5 * teeth_u) * lip_shadow * (1.0 - 0.08 * np.clip(seams, 0, 1))
    teeth_rgb = _TEETH_RGB * light * 0.92 + 0.08 * lips
    mouth += upper_teeth[..., None] * (teeth_rgb[None, None, :] * tooth_shade[..., None] - mouth)

    # Lower teeth: a thinner, shadowed edge above the lower lip when the mouth is wide and spread.
    l_height = 0.3 * t_height * np.clip(0.3 + 0.7 * spread, 0.0, 1.0) * np.clip(max_gap / (0.1 * scale) - 0.5, 0, 1)
    lower_teeth = np.clip(l_height - height + 0.5, 0.0, 1.0) * (l_height > 0.5)
    lower_shade = 0.55 * (0.5 + 0.5 * teeth_u)  # in the lower lip's shadow, no visible gaps
    mouth += lower_teeth[..., None] * (teeth_rgb[None, None, :] * lower_shade[..., None] - mouth)

    # A touch of softness, as a camera and the codec give every real edge.
    blur = max(0.5, 0.0035 * scale)
    mouth = cv2.GaussianBlur(mouth.astype(np.float32), (0, 0), blur)
    box = region[y0:y1, x0:x1]
    # Inner-lip shading: the wet inner rim of both lips, darker and redder, right at the opening.
    band = max(1.5, 0.025 * scale)
    outside = np.where(depth < 0, -depth, np.where(height < 0, -height, 0.0))
    rim_shade = np.exp(-outside / band) * (cover < 1.0) * inside_a * np.clip(gap / 2.0, 0, 1)
    box *= (1.0 - 0.18 * rim_shade)[..., None] * np.array([1.0, 0.93, 0.93])[None, None, :] ** rim_shade[..., None]
    c = cover[..., None].astype(np.float32)
    box[:] = box * (1.0 - c) + mouth * c
    return region
