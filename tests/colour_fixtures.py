"""Colour test material made at test time: pictures that show chroma errors, clips with a given
colour description, bit depth and frame rate, and the plain PyAV encode koubo's writer is held to.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace


def colour_picture(width: int, height: int, k: int = 0) -> np.ndarray:
    """An (height, width, 3) uint8 RGB test card, shifted by `k` pixels per frame.

    Smooth gradients (where a wrong matrix or range shows), saturated bars with hard edges (where
    misplaced or misaligned chroma shows as fringes) and a pure black and a pure white patch.
    """
    y = np.arange(height, dtype=np.float32)[:, None] / height
    x = (np.arange(width, dtype=np.float32)[None, :] + 3 * k) / width
    rgb = np.empty((height, width, 3), np.float32)
    rgb[..., 0] = 255 * x % 256
    rgb[..., 1] = 255 * y
    rgb[..., 2] = 127.5 + 127.5 * np.sin(2 * np.pi * (x + y))
    bars = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255]])
    top, bottom = height // 3, height // 2
    columns = (np.arange(width) + 2 * k) * len(bars) // width % len(bars)
    rgb[top:bottom] = bars[columns][None]
    side = max(2, min(width, height) // 8)
    rgb[-side:, :side] = 0
    rgb[-side:, -side:] = 255
    return rgb.astype(np.uint8)


def colour_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    return [colour_picture(width, height, k) for k in range(count)]


def make_colour_clip(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: Fraction = Fraction(25),
    pix_fmt: str = "yuv420p",
    colorspace: Colorspace | None = None,
    full_range: bool = False,
    tagged: bool = True,
    crf: int = 12,
) -> Path:
    """A camera's H.264 clip of `frames` (RGB): its samples converted with `colorspace` (None:
    swscale's default, BT.601) in limited or full range, and, when `tagged`, its headers saying
    so (BT.709 primaries and transfer go with a BT.709 matrix). Time base 1/fps."""
    path = Path(path)
    frames = list(frames)
    height, width = frames[0].shape[:2]
    colour_range = ColorRange.JPEG if full_range else ColorRange.MPEG
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = 1 / fps
        context = stream.codec_context
        if tagged:
            context.color_range = colour_range
            if colorspace == Colorspace.ITU709:
                context.colorspace = context.color_primaries = context.color_trc = 1
        for index, rgb in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=colorspace, dst_color_range=colour_range
            )
            picture.pts = index
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


def plain_encode(path: str | Path, frames: Iterable[np.ndarray], *, fps: Fraction, crf: int, preset: str) -> Path:
    """The reference: frames handed to PyAV's libx264 as RGB, converted by PyAV itself."""
    path = Path(path)
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": preset})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, rgb in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            picture.pts = index
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


def decode_rgb(path: str | Path) -> np.ndarray:
    """Every frame of `path` as RGB, converted with the matrix and range its headers give."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 10 * np.log10(255**2 / max(mse, 1e-10))
