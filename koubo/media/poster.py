"""A poster frame: one small JPEG that identifies a video in a list (the history's thumbnails)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np

from koubo import errors

POSTER_HEIGHT = 72
# Far enough in to pass a fade-in or a black first frame, near enough to decode at once.
POSTER_SECONDS = 0.5
_JPEG_QUALITY = 80


def poster_frame(video: Path, height: int = POSTER_HEIGHT) -> np.ndarray:
    """The frame at POSTER_SECONDS (or the last one of a shorter video), as RGB, `height` pixels high."""
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            chosen = None
            for frame in container.decode(stream):
                chosen = frame
                if frame.time is not None and frame.time >= POSTER_SECONDS:
                    break
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise errors.not_media(video.name) from exc
    if chosen is None:
        raise errors.empty_media(video.name)
    rgb = chosen.to_ndarray(format="rgb24")
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def write_poster(video: Path, target: Path) -> Path:
    """`video`'s poster frame as a JPEG at `target`, written under a temporary name and renamed."""
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(poster_frame(video), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
    )
    if not ok:
        raise errors.not_media(video.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    partial.write_bytes(encoded.tobytes())
    partial.replace(target)
    return target
