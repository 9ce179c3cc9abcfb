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
    # The map is piecewise linear: computing it on a coarser grid loses nothing visible.
    step = max(2, max(h, w) // 100)
    gy, gx = np.mgrid[0 : h + step : step, 0 : w + step : step]
    grid = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)
    mapped = _coarse_map(grid, src, dst, step, gx.shape)
    # Upsampling the coarse map: pixel (x, y) sits at (x / step, y / step) on the grid.
    xs = (np.arange(w, dtype=np.float32) / step)[None, :].repeat(h, 0)
    ys = (np.arange(h, dtype=np.float32) / step)[:, None].repeat(w, 1)
    # Where neighbouring triangles turn differently the map has a kink, which shows as a crease in
    # skin texture; a one-cell blur of the displacement rounds it off.
    shift = cv2.GaussianBlur((mapped - grid).reshape(*gx.shape, 2).astype(np.float32), (0, 0), 1.0)
    coarse_x = gx.astype(np.float32) + shift[..., 0]
    coarse_y = gy.astype(np.float32) + shift[..., 1]
    map_x = cv2.remap(coarse_x, xs, ys, cv2.INTER_LINEAR)
    map_y = cv2.remap(coarse_y, xs, ys, cv2.INTER_LINEAR)
    return cv2.remap(np.asarray(image), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(
        np.float32
    )


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
    e_inv = np.stack([np.stack([e[:, 1, 1], -e[:, 0, 1]], 1), np.stack([-e[:, 1, 0], e[:, 0, 0]], 1)], 1) / safe[:, None, None]
    linear = f @ e_inv  # (T, 2, 2): x -> src, about d0
    label = np.zeros(shape, dtype=np.int32)
    corners = np.round(dst[simplices] / step * 16).astype(np.int32)  # 4 fractional bits (shift=4)
    for t in np.flatnonzero(ok).tolist():
        cv2.fillConvexPoly(label, corners[t], t + 1, lineType=cv2.LINE_8, shift=4)
    label = label.ravel()
    mapped = grid.copy()
    inside = label > 0
    t = label[inside] - 1
    mapped[inside] = s0[t] + np.einsum("nij,nj->ni", linear[t], grid[inside] - d0[t])
    return mapped
