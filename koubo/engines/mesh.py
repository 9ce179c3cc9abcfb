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
    tri = Delaunay(dst)
    simplex = tri.find_simplex(grid)
    inside = simplex >= 0
    mapped = grid.copy()
    t = tri.transform[simplex[inside]]
    bary2 = np.einsum("nij,nj->ni", t[:, :2], grid[inside] - t[:, 2])
    bary = np.column_stack([bary2, 1.0 - bary2.sum(1)])
    verts = tri.simplices[simplex[inside]]
    mapped[inside] = np.einsum("ni,nij->nj", bary, src[verts])
    # Upsampling the coarse map: pixel (x, y) sits at (x / step, y / step) on the grid.
    xs = (np.arange(w, dtype=np.float32) / step)[None, :].repeat(h, 0)
    ys = (np.arange(h, dtype=np.float32) / step)[:, None].repeat(w, 1)
    coarse_x = mapped[:, 0].reshape(gx.shape).astype(np.float32)
    coarse_y = mapped[:, 1].reshape(gx.shape).astype(np.float32)
    map_x = cv2.remap(coarse_x, xs, ys, cv2.INTER_LINEAR)
    map_y = cv2.remap(coarse_y, xs, ys, cv2.INTER_LINEAR)
    return cv2.remap(np.asarray(image), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(
        np.float32
    )
