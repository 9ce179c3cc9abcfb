"""Piecewise-affine warps over a triangulated set of landmarks.

One similarity transform cannot make one face's jaw and cheeks land on another's; a mesh can:
every triangle of control points moves by its own affine map, so each landmark lands exactly
where it is sent and the image between them follows smoothly.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay


def piecewise_affine(
    image: np.ndarray, src: np.ndarray, dst: np.ndarray, out_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Warp `image` so that its points `src` land on `dst`; returns float32 of `out_size` (w, h).

    Backward mapping: every output pixel is looked up through the triangle of the `dst` mesh it
    falls in. Output pixels outside the mesh keep the identity map, so the mesh should cover the
    output (add its corners as control points).
    """
    w, h = out_size or image.shape[1::-1]
    # The map is piecewise linear: computing it on a coarser grid loses nothing visible. Grid
    # points sit at cell centres, so a plain resize by `step` puts every value back where it
    # belongs (resize samples at (x + 0.5) / step - 0.5).
    step = max(2, max(h, w) // 100)
    gh, gw = -(-h // step), -(-w // step)
    gy, gx = np.mgrid[0:gh, 0:gw].astype(np.float64) * step + (step - 1) / 2
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    mapped = _coarse_map(grid, src, dst, step, gx.shape)
    # Where neighbouring triangles turn differently the map has a kink, which shows as a crease in
    # skin texture; a one-cell blur of the displacement rounds it off.
    shift = cv2.GaussianBlur((mapped - grid).reshape(gh, gw, 2).astype(np.float32), (0, 0), 1.0)
    coarse = np.dstack([gx, gy]).astype(np.float32) + shift
    full = cv2.resize(coarse, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)[:h, :w]
    return cv2.remap(
        np.asarray(image), full[..., 0].copy(), full[..., 1].copy(), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    ).astype(np.float32)


def _coarse_map(grid: np.ndarray, src: np.ndarray, dst: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Source position of each grid point: through its dst triangle's affine map (identity outside).

    Triangles are rasterised onto the grid (cheap) rather than located point by point.
    """
    simplices = Delaunay(dst).simplices
    # Each triangle's affine map dst -> src in closed form (2x2 inverses; batched LAPACK costs more).
    d0, s0 = dst[simplices[:, 0]], src[simplices[:, 0]]
    e = np.stack([dst[simplices[:, 1]] - d0, dst[simplices[:, 2]] - d0], axis=2)  # columns: edges
    f = np.stack([src[simplices[:, 1]] - s0, src[simplices[:, 2]] - s0], axis=2)
    det = e[:, 0, 0] * e[:, 1, 1] - e[:, 0, 1] * e[:, 1, 0]
    ok = np.abs(det) > 1e-9
    safe = np.where(ok, det, 1.0)
    adjugate = np.stack([np.stack([e[:, 1, 1], -e[:, 0, 1]], 1), np.stack([-e[:, 1, 0], e[:, 0, 0]], 1)], 1)
    e_inv = adjugate / safe[:, None, None]
    linear = f @ e_inv  # (T, 2, 2): x -> src, about d0
    # Row k + 1: triangle k's map as [linear | offset]; row 0, the identity, for grid points
    # outside every triangle. Looked up by label, one gather per point.
    maps = np.zeros((len(simplices) + 1, 2, 3))
    maps[0, :, :2] = np.eye(2)
    maps[1:, :, :2] = linear
    maps[1:, :, 2] = s0 - np.einsum("tij,tj->ti", linear, d0)
    label = np.zeros(shape, dtype=np.int32)
    cells = (dst - (step - 1) / 2) / step  # grid index coordinates
    corners = np.round(cells[simplices] * 16).astype(np.int32)  # 4 fractional bits (shift=4)
    for t in np.flatnonzero(ok).tolist():
        cv2.fillConvexPoly(label, corners[t], t + 1, lineType=cv2.LINE_8, shift=4)
    point = maps.reshape(-1, 6)[label.ravel()]
    x, y = grid[:, 0], grid[:, 1]
    return np.column_stack(
        [point[:, 0] * x + point[:, 1] * y + point[:, 2], point[:, 3] * x + point[:, 4] * y + point[:, 5]]
    )
