"""Landmark geometry on MediaPipe's 478-point face mesh: index sets, mouth shape, alignment.

Everything here works on arrays of pixel coordinates, (..., 478, 2), so it serves one frame or
a whole track alike.
"""

from __future__ import annotations

import numpy as np

# Lip contours, corner to corner (MediaPipe face-mesh topology).
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
# Inner-lip pairs facing each other across the mouth opening.
INNER_GAP_PAIRS = [(81, 178), (82, 87), (13, 14), (312, 317), (311, 402)]

JAW = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361]
CHIN = [152, 148, 176, 377, 400, 199, 175]
# Points that move with the skull, not with the jaw or the lips: eye corners, nose bridge and
# base. Alignment between frames uses only these, so a different mouth opening cannot bias it.
STABLE = [33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 98, 327, 2]
# The region an engine may change: lips, chin and lower cheeks, up to just under the nose.
LOWER_FACE = sorted(
    set(JAW + LIPS_OUTER_UPPER + LIPS_OUTER_LOWER + [2, 98, 327, 164, 167, 393, 206, 426, 203, 423, 205, 425])
)

LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 33, 263
UPPER_LIP_INNER_MID, LOWER_LIP_INNER_MID = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 61, 291


def face_scale(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners: the unit mouth measures are expressed in."""
    return np.linalg.norm(landmarks[..., LEFT_EYE_OUTER, :2] - landmarks[..., RIGHT_EYE_OUTER, :2], axis=-1)


def mouth_aperture(landmarks: np.ndarray) -> np.ndarray:
    """Mean inner-lip gap over the middle of the mouth, in face-scale units (0 when closed)."""
    a = np.array([p for p, _ in INNER_GAP_PAIRS])
    b = np.array([q for _, q in INNER_GAP_PAIRS])
    gaps = np.linalg.norm(landmarks[..., a, :2] - landmarks[..., b, :2], axis=-1).mean(axis=-1)
    return gaps / face_scale(landmarks)


def mouth_width(landmarks: np.ndarray) -> np.ndarray:
    """Corner-to-corner width of the lips, in face-scale units."""
    return np.linalg.norm(landmarks[..., MOUTH_LEFT, :2] - landmarks[..., MOUTH_RIGHT, :2], axis=-1) / face_scale(
        landmarks
    )


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking src points to dst (Umeyama).

    Returns a 2x3 matrix for cv2.warpAffine.
    """
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var_s = (s**2).sum() / len(src)
    scale = (sig * sign).sum() / var_s if var_s > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


def pose_signature(landmarks: np.ndarray) -> np.ndarray:
    """A small vector describing head orientation independent of position and size.

    The stable points normalised for translation and scale: two frames with close signatures
    show the head turned and tilted alike, so a mouth taken from one fits the other.
    """
    pts = landmarks[..., STABLE, :2]
    centred = pts - pts.mean(axis=-2, keepdims=True)
    scale = face_scale(landmarks)[..., None, None]
    return (centred / scale).reshape(*landmarks.shape[:-2], -1)
