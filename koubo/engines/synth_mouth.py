"""The inside of a mouth, painted for a face that never opens its own (the warp path).

What makes an opening read as a mouth and not a hole, measured on the real talking templates at
video size: the inside is not black but a dim, warm version of the lips (its median ~0.5 of the
lips' brightness, only the throat at the back ~0.2); the wet inner rim of the lips frames it; the
upper teeth hang from the upper lip (first to show, greyer toward the corners and under the lip's
shadow, never brighter than a lit tooth in this light); the lower teeth's edges show above the
lower lip only when the mouth opens wide, in its shadow; a tongue fills the lower half of a wide
mouth, lit on its top, its root sinking into the throat behind and its front in the lower lip's
shadow (a lit tongue touching the lip would hide the lip's inner edge from the face tracker, which
then measures a smaller opening). Inside colours are less saturated than the lips (a darkened lip
colour reads crimson). Colours come from this person's lips and skin, and the template's own
grain is put back so the painted region is not smoother than the video around it.

Everything is laid out in the face's own frame (`across` the mouth, `down` the face), so a
tilted head gets a tilted mouth, and every edge is anti-aliased so nothing looks cut out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import PchipInterpolator

# Upper-teeth height at full teeth visibility, face-scale units (a real incisor shows ~0.05-0.07).
TEETH_HEIGHT = 0.075
# Incisor boundaries, as fractions of the teeth's half-width: central, lateral, canine.
_TOOTH_EDGES = (0.0, 0.24, 0.44, 0.62)
# Warm dark red-brown of the throat relative to the lips' colour (less green and blue than lips).
_THROAT_TINT = np.array([1.0, 0.78, 0.74])
_TONGUE_TINT = np.array([1.0, 0.74, 0.74])
# Enamel is a little yellow; its brightness comes from the scene (see MouthColours.teeth).
_ENAMEL_TINT = np.array([1.0, 0.97, 0.89])


@dataclass(frozen=True)
class MouthColours:
    lips: np.ndarray  # (3,) float RGB median of the lips
    skin: np.ndarray  # (3,) float RGB median of the skin around them
    grain: float = 0.0  # std of the template's fine noise around the mouth, 8-bit levels

    @property
    def teeth(self) -> np.ndarray:
        """A lit tooth in this light: a little brighter than the skin beside it, never glowing."""
        level = min(1.12 * float(self.skin.mean()), 225.0)
        return 0.9 * level * _ENAMEL_TINT + 0.1 * self.lips


def mouth_colours(region: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> MouthColours:
    """Lip and skin colour and grain of `region` from the outer and inner lip polygons (region
    coordinates)."""
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
    # The codec's and camera's fine noise on the skin: robust std of what a small blur removes.
    # The channels' mean, exact (a sum of three bytes fits uint16): 10x faster than mean(-1).
    grey = (region[..., 0].astype(np.uint16) + region[..., 1] + region[..., 2]).astype(np.float32) / 3
    fine = (grey - cv2.GaussianBlur(grey, (0, 0), 1.2))[ring > 0]
    grain = 1.4826 * float(np.median(np.abs(fine - np.median(fine)))) if len(fine) else 0.0
    return MouthColours(lips=lip.astype(np.float64), skin=skin.astype(np.float64), grain=grain)


def _curve(points: np.ndarray) -> PchipInterpolator:
    """b(a) through the points, monotone between them: smooth, with no overshoot at the corners."""
    order = np.argsort(points[:, 0])
    a, b = points[order, 0], points[order, 1]
    keep = np.concatenate([[True], np.diff(a) > 1e-3])
    return PchipInterpolator(a[keep], b[keep], extrapolate=True)


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _muted(rgb: np.ndarray, amount: float) -> np.ndarray:
    """`rgb` moved `amount` of the way to its own grey: inside the mouth, colours are dimmer and
    less saturated than on the lit lips (a pure darkened lip colour reads as crimson)."""
    return rgb + amount * (rgb.mean() - rgb)


def _layer(mouth: np.ndarray, alpha: np.ndarray, rgb: np.ndarray) -> None:
    """Cover `mouth` with `rgb` ((3,) or (h, w, 3)) at `alpha` (h, w), in place."""
    mouth += alpha[..., None] * (rgb - mouth)


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
    centre = 0.5 * (upper[0] + upper[-1])

    def face_frame(p: np.ndarray) -> np.ndarray:
        d = p - centre
        return np.column_stack([d @ across, d @ down])

    up_pts, lo_pts = face_frame(upper), face_frame(lower)
    # The corners as the face frame sees them (a tilted lip line is not `across`): the opening
    # ends where both curves meet there, not at a fixed half-width (that cut square corners).
    a_l = float(min(up_pts[0, 0], up_pts[-1, 0], lo_pts[0, 0], lo_pts[-1, 0]))
    a_r = float(max(up_pts[0, 0], up_pts[-1, 0], lo_pts[0, 0], lo_pts[-1, 0]))
    half = max(1.0, 0.5 * (a_r - a_l))
    pad = 3 + int(0.03 * scale)
    pts = np.vstack([upper, lower])
    x0, y0 = np.maximum(np.floor(pts.min(0)) - pad, 0).astype(int)
    x1, y1 = np.ceil(pts.max(0) + pad).astype(int)
    x1, y1 = min(x1, region.shape[1]), min(y1, region.shape[0])
    if x1 - x0 < 3 or y1 - y0 < 3:
        return region

    up_curve, lo_curve = _curve(up_pts), _curve(lo_pts)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    rel_x, rel_y = xx - centre[0], yy - centre[1]
    a = rel_x * across[0] + rel_y * across[1]
    b = rel_x * down[0] + rel_y * down[1]
    a_in = np.clip(a, a_l, a_r)
    u = np.clip((a_in - 0.5 * (a_l + a_r)) / half, -1.0, 1.0)  # -1 .. 1 corner to corner
    b_up, b_lo = up_curve(a_in), lo_curve(a_in)
    gap = np.maximum(b_lo - b_up, 0.0)
    max_gap = float(gap.max())
    if max_gap < 1.0:
        return region
    depth = b - b_up  # px below the upper lip's inner edge
    height = b_lo - b  # px above the lower lip's inner edge
    # Anti-aliased coverage of the opening: a 1.5-pixel ramp on every edge, closed past the corners
    # and, where the lips are sealed (a rounded mouth's sides), no thinner than the gap itself.
    cover = np.clip((np.minimum(depth, height) + 0.75) / 1.5, 0.0, 1.0) * ((a > a_l) & (a < a_r))
    cover *= np.clip(gap, 0.0, 1.0)
    if not cover.any():
        return region
    lips = colours.lips
    wide = float(np.clip(max_gap / (0.2 * scale), 0.0, 1.0))  # 1 at a wide-open mouth
    fold = np.clip(np.minimum(depth, height), 0.0, None)  # px in from the nearer lip
    v = np.clip(depth / np.maximum(gap, 1.0), 0.0, 1.0)  # 0 at the upper lip, 1 at the lower
    corner = np.abs(u) ** 3  # the buccal corridor: the sides of the mouth are in shadow
    sides = 1.0 - 0.55 * corner

    # Throat: a dim, warm version of the lips, dark only at the back (centre, under the palate,
    # right behind the upper teeth); the sides and the floor catch the light that comes in.
    rim_light = np.exp(-fold / max(1.2, 0.2 * max_gap))
    back = np.exp(-((u / 0.55) ** 2) - ((v - 0.3) / 0.3) ** 2)
    throat = (0.16 + 0.14 * rim_light + 0.1 * v - 0.1 * back * wide) * (1.0 + 0.6 * wide * (1.0 - back))
    mouth = _muted(lips * _THROAT_TINT, 0.2)[None, None, :] * (throat * sides)[..., None]

    # Tongue: a body over the floor of the mouth, more of it the wider the mouth; its top is lit
    # toward the front, its root sinks into the throat, and its lowest part is in the lower lip's
    # shadow (so the lower lip's inner edge stays dark, as the face tracker expects).
    dome = np.sqrt(np.clip(1.0 - (u / 0.8) ** 2, 0.0, 1.0))
    tongue_h = (0.2 + 0.3 * wide) * gap * dome
    above = height / np.maximum(tongue_h, 1.0)  # 0 at the lower lip, 1 at the tongue's top
    tongue_alpha = (1.0 - _smooth((above - 0.75) / 0.35)) * (tongue_h > 0.4) * np.clip(wide * 3.0, 0.0, 1.0)
    lit_top = _smooth((above - 0.2) / 0.6) * (1.0 - _smooth((above - 0.8) / 0.3)) * (1.0 - 0.4 * np.abs(u))
    in_shadow = 1.0 - 0.45 * np.exp(-np.clip(height, 0.0, None) / max(1.0, 0.12 * max_gap))
    tongue_lit = (0.5 + 0.36 * lit_top) * in_shadow * sides
    tongue_rgb = _muted(0.75 * lips * _TONGUE_TINT + 0.25 * colours.skin, 0.2)
    _layer(mouth, tongue_alpha, tongue_rgb[None, None, :] * tongue_lit[..., None])

    teeth_rgb = colours.teeth
    # Lower teeth: only their edges, above the lower lip, when the mouth opens wide and spreads;
    # in the lower lip's shadow and narrower than the upper row.
    lower_k = float(np.clip((wide - 0.45) / 0.4, 0.0, 1.0) * np.clip(0.55 + 0.6 * spread, 0.0, 1.0))
    lower_w = np.clip(1.0 - (u / 0.55) ** 2, 0.0, 1.0)
    lower_h = 0.35 * TEETH_HEIGHT * scale * lower_k * np.sqrt(lower_w)
    lower_h = np.minimum(lower_h, 0.2 * gap)
    lower_alpha = np.clip(lower_h - height + 0.5, 0.0, 1.0) * (lower_h > 0.3)
    lower_lit = (0.45 + 0.25 * lower_w) * np.clip(0.6 + 0.4 * (height / np.maximum(lower_h, 1.0)), 0.0, 1.0)
    _layer(mouth, lower_alpha, teeth_rgb[None, None, :] * lower_lit[..., None])

    # Upper teeth: hang from the upper lip, the central incisors longest; they recede (narrower
    # and greyer) toward the corners, a rounded mouth shows fewer of them.
    teeth_w = float(np.clip(0.78 + 0.15 * spread, 0.5, 0.95))
    across_teeth = np.clip(1.0 - (u / teeth_w) ** 2, 0.0, 1.0)
    smile = 1.0 - 0.25 * (u / teeth_w) ** 2  # the incisal edge curves up toward the canines
    upper_h = TEETH_HEIGHT * scale * float(np.clip(teeth, 0.0, 1.0)) * np.sqrt(across_teeth) * smile
    upper_h = np.minimum(upper_h, 0.45 * gap)
    upper_alpha = np.clip(upper_h - depth + 0.5, 0.0, 1.0) * (upper_h > 0.3)
    tooth_pos = np.abs(u) / teeth_w
    seams = sum(np.exp(-(((tooth_pos - e) * half * teeth_w / 0.6) ** 2)) for e in _TOOTH_EDGES[1:])
    seams += np.exp(-((tooth_pos * half * teeth_w / 0.5) ** 2))  # between the central incisors
    under_lip = 1.0 - 0.35 * np.exp(-np.clip(depth, 0.0, None) / max(1.0, 0.015 * scale))
    edge = 1.0 - 0.18 * np.exp(-np.clip(upper_h - depth, 0.0, None) / 0.8)  # translucent tips
    upper_lit = (0.55 + 0.45 * np.sqrt(across_teeth)) * under_lip * edge * (1.0 - 0.12 * np.clip(seams, 0.0, 1.0))
    _layer(mouth, upper_alpha, teeth_rgb[None, None, :] * upper_lit[..., None])

    # The wet inner rim of both lips frames the opening: darker and redder than the lips.
    rim_w = max(0.8, 0.012 * scale)
    rim = np.exp(-fold / rim_w) * (0.6 + 0.4 * (1.0 - corner))
    _layer(mouth, 0.35 * rim, (lips * np.array([0.72, 0.58, 0.6]))[None, None, :])

    # The camera's softness and the codec's grain, as the video around it has.
    mouth = cv2.GaussianBlur(mouth.astype(np.float32), (0, 0), max(0.5, 0.004 * scale))
    if colours.grain > 0.05:
        # One fixed pattern (a flickering one would shimmer frame to frame) at the skin's grain.
        noise = np.random.default_rng(0).normal(0.0, 1.0, mouth.shape[:2]).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), 0.6)
        mouth += (noise * (colours.grain / max(float(noise.std()), 1e-6)))[..., None]
    box = region[y0:y1, x0:x1]
    # The lips' edge darkens a little into the opening (they curl inward and shade themselves).
    outside = np.clip(-np.minimum(depth, height), 0.0, None)
    lip_shade = np.exp(-outside / max(1.2, 0.018 * scale)) * (cover < 1.0) * (a > a_l) * (a < a_r)
    lip_shade *= np.clip(gap / 2.0, 0.0, 1.0)
    box *= 1.0 - 0.15 * lip_shade[..., None] * np.array([1.0, 1.15, 1.15])[None, None, :]
    c = cover[..., None].astype(np.float32)
    box[:] = box * (1.0 - c) + mouth * c
    return region
