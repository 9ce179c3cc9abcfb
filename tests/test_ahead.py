"""Overlapping stages (koubo/media/ahead.py): items in order, errors where they happened, an early
stop ends the stage's thread, and the stage really runs while its consumer works."""

from __future__ import annotations

import threading

import pytest

from koubo.media.ahead import StageClock, ahead


def test_items_arrive_in_order_and_a_stage_error_reaches_the_consumer_after_them() -> None:
    def items():
        yield from range(5)
        raise ValueError("decoder broke")

    got = []
    with pytest.raises(ValueError, match="decoder broke"):
        for item in ahead(items(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_early_ends_the_stage_thread_and_closes_its_source() -> None:
    closed = threading.Event()

    def endless():
        try:
            k = 0
            while True:
                yield k
                k += 1
        finally:
            closed.set()

    before = threading.active_count()
    stream = ahead(endless(), depth=3, name="endless")
    assert [next(stream) for _ in range(4)] == [0, 1, 2, 3]
    stream.close()
    assert closed.is_set()
    assert threading.active_count() == before


def test_the_stage_produces_the_next_item_while_the_consumer_works_on_this_one() -> None:
    # Producer (before item k) and consumer (after item k-1) meet at a barrier: possible only if
    # both run at once. Run one after the other, they would never meet and the barrier breaks.
    meet = threading.Barrier(2, timeout=30)
    clock = StageClock()

    def items():
        for k in range(4):
            if k > 0:
                meet.wait()
            yield k

    got = []
    for item in ahead(items(), depth=1, clock=clock):
        got.append(item)
        if item < 3:
            meet.wait()
    assert got == [0, 1, 2, 3]
    assert clock.busy >= 0.0 and clock.waited >= 0.0
