"""Compositing a retrieved mouth: alignment and blend methods compared on a real template.

    .venv/bin/python bench/blend_methods.py [--template ../shared/media/speaker_map.mp4] [--pairs 40]

For pairs of frames of one talking template (the frame being edited, a donor frame ~1 s away),
each method pastes the donor's lower face into the frame:
  similarity+feather  one similarity on skull-fixed points, feathered alpha, mean colour shift (main's)
  mesh+feather        piecewise-affine mesh onto the frame's jaw and cheeks, same blend
  mesh+multiband      mesh, then a band-by-band (Laplacian) blend of the difference (koubo now)
  mesh+poisson        mesh, then OpenCV's gradient-domain seamlessClone
Figures: seam energy (mean squared difference between the output's and the frame's gradients in
a 5 px band on the mask's outline: an outline, colour step or blur edge raises it), PSNR of the
pixels outside the mask against the frame (inf = untouched), and ms per paste. Each figure is
also printed as a ratio to similarity+feather, measured in the same run. Figures are printed last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from koubo.engines.blend import (
    blend_patch,
    feathered_alpha,
    hull_distance,
    lower_face_hull,
    match_colour,
    multiband_blend,
    roi_around,
)
from koubo.engines.retrieval import donor_patch
from koubo.face import geometry as geo
from koubo.face.tracker import track_faces
from koubo.media.video import read_template

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"


def similarity_feather(frame, target_lm, source, source_lm):
    m = geo.similarity_transform(source_lm[geo.STABLE], target_lm[geo.STABLE])
    source_hull = geo.apply_affine(m, lower_face_hull(source_lm))
    target_hull = lower_face_hull(target_lm)
    scale = float(geo.face_scale(target_lm))
    roi = roi_around(np.vstack([source_hull, target_hull]), 0.05 * scale, frame.shape[:2])
    x0, y0, x1, y1 = roi
    m_roi = m.copy()
    m_roi[:, 2] -= (x0, y0)
    patch = cv2.warpAffine(source, m_roi, (x1 - x0, y1 - y0), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    alpha = feathered_alpha([source_hull, target_hull], roi, 0.08 * scale)
    patch = match_colour(patch, frame[y0:y1, x0:x1].astype(np.float32), alpha)
    return blend_patch(frame, patch, alpha, roi), [source_hull, target_hull]


def mesh_feather(frame, target_lm, source, source_lm):
    donor = donor_patch(frame.shape, target_lm, source, source_lm)
    x0, y0, x1, y1 = donor.roi
    alpha = feathered_alpha([donor.hull], donor.roi, donor.radius)
    patch = match_colour(donor.patch, frame[y0:y1, x0:x1].astype(np.float32), alpha)
    return blend_patch(frame, patch, alpha, donor.roi), [donor.hull]


def mesh_multiband(frame, target_lm, source, source_lm):
    donor = donor_patch(frame.shape, target_lm, source, source_lm)
    x0, y0, x1, y1 = donor.roi
    distance = hull_distance([donor.hull], donor.roi, donor.radius)
    alpha = np.clip(distance / donor.radius, 0.0, 1.0)
    patch = match_colour(donor.patch, frame[y0:y1, x0:x1].astype(np.float32), alpha)
    return multiband_blend(frame, patch, distance, donor.radius, donor.roi), [donor.hull]


def mesh_poisson(frame, target_lm, source, source_lm):
    donor = donor_patch(frame.shape, target_lm, source, source_lm)
    x0, y0, x1, y1 = donor.roi
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(mask, np.round(donor.hull - (x0, y0)).astype(np.int32), 255)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))  # seamlessClone needs a border around the mask
    ys, xs = np.nonzero(mask)
    centre = (int(x0 + (xs.min() + xs.max() + 1) // 2), int(y0 + (ys.min() + ys.max() + 1) // 2))
    patch = np.clip(donor.patch, 0, 255).astype(np.uint8)
    out = cv2.seamlessClone(patch, frame, mask, centre, cv2.NORMAL_CLONE)
    return out, [donor.hull]


METHODS = {
    "similarity+feather": similarity_feather,
    "mesh+feather": mesh_feather,
    "mesh+multiband": mesh_multiband,
    "mesh+poisson": mesh_poisson,
}


def seam_energy(out: np.ndarray, frame: np.ndarray, hulls: list[np.ndarray]) -> float:
    mask = np.zeros(frame.shape[:2], np.uint8)
    for hull in hulls:
        cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 255)
    outline = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0

    def gradients(image):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)

    (ox, oy), (fx, fy) = gradients(out), gradients(frame)
    return float(((ox - fx) ** 2 + (oy - fy) ** 2)[outline].mean())


def psnr_outside(out: np.ndarray, frame: np.ndarray, hulls: list[np.ndarray]) -> float:
    mask = np.zeros(frame.shape[:2], np.uint8)
    for hull in hulls:
        cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 255)
    outside = cv2.dilate(mask, np.ones((3, 3), np.uint8)) == 0
    mse = float(((out.astype(np.float64) - frame) ** 2)[outside].mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--template", type=Path, default=SHARED / "speaker_map.mp4")
    parser.add_argument("--pairs", type=int, default=40)
    args = parser.parse_args()
    if not args.template.exists():
        sys.exit(f"{args.template} is missing: this bench needs a real talking template")
    with tempfile.TemporaryDirectory() as tmp:
        template = read_template(args.template, work_dir=Path(tmp))
        frames = np.asarray(template.frames).copy()
    track = track_faces(frames, fps=float(template.fps))
    usable = np.flatnonzero(track.present)
    offset = max(1, int(round(float(template.fps))))
    pairs = [(int(i), int(usable[(k + offset) % len(usable)])) for k, i in enumerate(usable)][:: max(1, len(usable) // args.pairs)]
    figures = {name: {"seam": [], "psnr": [], "ms": []} for name in METHODS}
    for i, j in pairs:
        for name, method in METHODS.items():
            start = time.perf_counter()
            out, hulls = method(frames[i], track.landmarks[i], frames[j], track.landmarks[j])
            figures[name]["ms"].append(1000 * (time.perf_counter() - start))
            figures[name]["seam"].append(seam_energy(out, frames[i], hulls))
            figures[name]["psnr"].append(psnr_outside(out, frames[i], hulls))
    base = figures["similarity+feather"]
    print(f"\nkoubo bench/blend_methods.py: {args.template.name}, {len(pairs)} frame pairs (edited, donor ~1 s away)")
    print(f"{'method':20s} {'seam energy':>12s} {'vs base':>8s} {'PSNR outside':>13s} {'ms/paste':>9s} {'vs base':>8s}")
    for name, f in figures.items():
        seam, ms = float(np.mean(f["seam"])), float(np.median(f["ms"]))
        psnr = float(np.min(f["psnr"]))
        print(
            f"{name:20s} {seam:12.1f} {seam / np.mean(base['seam']):8.2f} {psnr:13.1f} "
            f"{ms:9.1f} {ms / np.median(base['ms']):8.2f}"
        )


if __name__ == "__main__":
    main()
