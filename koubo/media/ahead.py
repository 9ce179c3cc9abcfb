"""Stages that overlap: an iterator run in its own thread, a bounded queue ahead of its consumer.

Decoding (PyAV), tracking (MediaPipe), rendering (numpy, OpenCV) and encoding (x264) all release
the GIL for their heavy parts, so decode -> render -> encode in three threads take about the time
of the slowest stage instead of the sum. Each stage keeps at most `depth` items ahead (frames:
bounded memory). An exception in a stage reaches its consumer at the item where it happened;
a consumer that stops early (an error of its own, a cancellation) stops the stage's thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL = 0.1  # seconds a blocked producer waits before looking whether its consumer has gone


@dataclass
class StageClock:
    """Seconds a stage's thread spent producing its items, and its consumer spent waiting for them."""

    busy: float = 0.0
    waited: float = 0.0


class _End:
    pass


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _Ahead(Generic[T]):
    def __init__(self, items: Iterator[T], depth: int, name: str, clock: StageClock) -> None:
        self._items, self._clock = items, clock
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._gone = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

    def _produce(self) -> None:
        try:
            while not self._gone.is_set():
                start = time.perf_counter()
                try:
                    item = next(self._items)
                except StopIteration:
                    self._put(_End())
                    return
                finally:
                    self._clock.busy += time.perf_counter() - start
                self._put(item)
        except BaseException as error:  # noqa: BLE001 (handed to the consumer, which re-raises it)
            self._put(_Failed(error))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()  # in this thread: a generator's cleanup (closing a decoder) runs where it ran

    def _put(self, item: object) -> None:
        while not self._gone.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[T]:
        self._thread.start()  # on the first next(): a generator never started never runs its finally
        try:
            while True:
                start = time.perf_counter()
                item = self._queue.get()
                self._clock.waited += time.perf_counter() - start
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self._gone.set()
            self._thread.join()


def ahead(items: Iterator[T], depth: int = 4, name: str = "stage", clock: StageClock | None = None) -> Iterator[T]:
    """`items` produced in a thread of their own, up to `depth` ahead of the caller; see the module."""
    return iter(_Ahead(iter(items), depth, name, clock if clock is not None else StageClock()))


class ReadAhead:
    """A template (TemplateStream or ArrayFrames) whose frames in output order are decoded in a
    thread of their own, `depth` frames ahead of the engine reading them."""

    def __init__(self, frames, depth: int = 4, clock: StageClock | None = None) -> None:
        self._frames, self.depth = frames, depth
        self.clock = clock if clock is not None else StageClock()

    @property
    def width(self) -> int:
        return self._frames.width

    @property
    def height(self) -> int:
        return self._frames.height

    def __len__(self) -> int:
        return len(self._frames)

    def in_order(self, indices, should_stop=None) -> Iterator:
        return ahead(self._frames.in_order(indices, should_stop), self.depth, "decode", self.clock)

    def crops(self, regions, should_stop=None):
        start = time.perf_counter()
        try:
            return self._frames.crops(regions, should_stop)
        finally:  # decoding the engine waits for
            spent = time.perf_counter() - start
            self.clock.busy += spent
            self.clock.waited += spent
