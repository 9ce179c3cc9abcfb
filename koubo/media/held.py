"""A short template's frames, decoded once per job and kept.

One job reads its template several times: face tracking (in parallel chunks), the trust check's
second pass, the donor mouths, and rendering, which loops the template forwards and backwards to
the speech's length (20 s of speech over an 8 s template: every frame decoded 4.5 times). When all
of its frames fit under the job's limit (`template_memory_bytes`), each is decoded on first use
and every later read is a memory read; a longer template streams as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction

import numpy as np

from koubo.errors import Cancelled
from koubo.media.video import FrameCrops, TemplateStream

ShouldStop = Callable[[], bool] | None


def frame_bytes(template: TemplateStream) -> int:
    """Bytes of all of `template`'s frames as RGB."""
    return len(template) * template.height * template.width * 3


def held(template: TemplateStream, limit: int) -> TemplateStream | HeldFrames:
    """`template` itself when its frames are over `limit` bytes, else the frames kept as read."""
    return HeldFrames(template) if 0 < frame_bytes(template) <= limit else template


class HeldFrames:
    """TemplateStream's reading methods over frames decoded once each and then kept.

    Frames are handed out read-only: an engine that edited a kept frame in place would change
    every later output frame that shows it. Chunks read in parallel threads fill disjoint slots.
    """

    def __init__(self, stream: TemplateStream) -> None:
        self.stream = stream
        self._array = np.empty((len(stream), stream.height, stream.width, 3), np.uint8)
        self._have = np.zeros(len(stream), bool)

    @property
    def fps(self) -> Fraction:
        return self.stream.fps

    @property
    def width(self) -> int:
        return self.stream.width

    @property
    def height(self) -> int:
        return self.stream.height

    def __len__(self) -> int:
        return len(self.stream)

    def frames(self, start: int = 0, stop: int | None = None, should_stop: ShouldStop = None) -> Iterator[np.ndarray]:
        stop = len(self) if stop is None else min(stop, len(self))
        if self._have[start:stop].all():
            for k in range(start, stop):
                yield self._kept(k)
            return
        for k, frame in enumerate(self.stream.frames(start, stop, should_stop), start=start):
            yield self._keep(k, frame)

    def in_order(self, indices: np.ndarray, should_stop: ShouldStop = None) -> Iterator[np.ndarray]:
        indices = np.asarray(indices)
        if self._have[indices].all():
            for k in indices:
                if should_stop is not None and should_stop():
                    raise Cancelled()
                yield self._kept(int(k))
            return
        for k, frame in zip(indices, self.stream.in_order(indices, should_stop)):
            yield self._kept(int(k)) if self._have[k] else self._keep(int(k), frame)

    def crops(self, regions: dict[int, tuple[int, int, int, int]], should_stop: ShouldStop = None) -> FrameCrops:
        """The regions cut from the kept frames, as TemplateStream.crops cuts them from decoded
        ones (an engine given whole frames instead draws a borrowed mouth's edges differently)."""
        if not self._have[list(regions)].all():
            return self.stream.crops(regions, should_stop)
        crops = FrameCrops(self.stream.work_dir)
        for k, region in sorted(regions.items()):
            crops.add(k, self._array[k], region)
        return crops

    def _keep(self, k: int, frame: np.ndarray) -> np.ndarray:
        self._array[k] = frame
        self._have[k] = True
        return self._kept(k)

    def _kept(self, k: int) -> np.ndarray:
        view = self._array[k]
        view.flags.writeable = False
        return view
