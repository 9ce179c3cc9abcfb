"""Templates are streamed, never held whole: ranges, loop order, borrowed crops, and a generation
whose memory does not grow with the template's length."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from koubo.config import Settings
from koubo.media.held import HeldFrames, held
from koubo.media.video import loop_indices, open_template, read_template
from koubo.pipeline import GenerateOptions, Generator

from media_fixtures import make_speech, make_talking_video, talking_frame, vfr_timestamps

FPS = 25


def write_short_gops(path: Path, seconds: float, size: int = 128, keyint: int = 10, vfr: bool = False) -> Path:
    """The moving face with a keyframe every `keyint` frames, so reading from a frame seeks."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"g": str(keyint), "preset": "ultrafast", "crf": "20"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        time_base = Fraction(1, 90000) if vfr else Fraction(1, FPS)
        stream.codec_context.time_base = stream.time_base = time_base
        times = vfr_timestamps(seconds) if vfr else [Fraction(i, FPS) for i in range(round(seconds * FPS))]
        for t in times:
            frame = av.VideoFrame.from_ndarray(talking_frame(float(t), (size, size)), format="rgb24")
            frame.time_base, frame.pts = time_base, round(t / time_base)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("vfr", [False, True], ids=["cfr", "vfr"])
def test_any_range_read_by_seeking_equals_the_whole_decode(tmp_path: Path, vfr: bool) -> None:
    path = write_short_gops(tmp_path / "gops.mp4", 3.0, vfr=vfr)
    whole = read_template(path, work_dir=tmp_path / "work").frames
    stream = open_template(path, work_dir=tmp_path / "work")
    assert len(stream) == len(whole) and (stream.height, stream.width) == whole.shape[1:3]
    for start, stop in [(0, 7), (13, 31), (40, len(whole)), (len(whole) - 1, len(whole) + 5)]:
        got = np.stack(list(stream.frames(start, stop)))
        assert np.array_equal(got, whole[start:stop]), (start, stop)


def test_loop_order_is_streamed_forwards_and_backwards_in_small_windows(tmp_path: Path) -> None:
    path = write_short_gops(tmp_path / "gops.mp4", 2.0)
    whole = read_template(path, work_dir=tmp_path / "work").frames
    stream = open_template(path, work_dir=tmp_path / "work")
    order = loop_indices(len(stream), 4 * len(stream) + 3)
    # A window of 6 frames: a backwards run is read in many windows, each from its keyframe.
    got = list(stream.in_order(order, window_bytes=6 * stream.width * stream.height * 3))
    assert len(got) == len(order)
    assert all(np.array_equal(frame, whole[k]) for frame, k in zip(got, order))
    single = list(stream.in_order(np.array([5, 5, 5, 9, 8, 8])))
    assert all(np.array_equal(frame, whole[k]) for frame, k in zip(single, [5, 5, 5, 9, 8, 8]))


def test_crops_come_back_from_their_file_as_cut(tmp_path: Path) -> None:
    path = write_short_gops(tmp_path / "gops.mp4", 2.0)
    whole = read_template(path, work_dir=tmp_path / "work").frames
    work = tmp_path / "crops"
    regions = {3: (10, 20, 70, 90), 31: (0, 0, 128, 128), 48: (100, 5, 128, 40)}
    crops = open_template(path, work_dir=work).crops(regions)
    for k, (x0, y0, x1, y1) in regions.items():
        crop, origin = crops.get(k)
        assert np.array_equal(crop, whole[k, y0:y1, x0:x1]) and tuple(origin) == (x0, y0)
    assert crops.nbytes == sum((x1 - x0) * (y1 - y0) * 3 for x0, y0, x1, y1 in regions.values())
    crops.close()
    assert list(work.iterdir()) == []


def traced_peak(generator: Generator, speech: Path, template: Path, out: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        result = generator.generate(speech, template, out, GenerateOptions(check=False))
        return tracemalloc.get_traced_memory()[1], result.frames
    finally:
        tracemalloc.stop()


def test_generation_memory_does_not_grow_with_the_template(tmp_path: Path) -> None:
    """A template 4x longer than another, the same 1-second speech: numpy's (traced) allocations
    peak far below the long template's frames, and grow by far less than a frame per extra
    template frame (its landmarks and thumbnails, not its pixels). Frames are never kept here
    (template_memory_bytes 0): this is the path of a template too long to keep."""
    speech = make_speech(tmp_path / "speech.wav", seconds=1.0)
    size = 256
    short = make_talking_video(tmp_path / "short.mp4", seconds=2.0, size=(size, size))
    long = make_talking_video(tmp_path / "long.mp4", seconds=8.0, size=(size, size))
    generator = Generator(Settings(data_dir=tmp_path / "data"))
    generator.generate(speech, short, tmp_path / "warm.mp4", GenerateOptions(check=False))  # imports, caches
    generator.cache.clear_memory()
    short_peak, frames = traced_peak(
        Generator(Settings(data_dir=tmp_path / "data-short", template_memory_bytes=0)),
        speech,
        short,
        tmp_path / "s.mp4",
    )
    streaming = Settings(data_dir=tmp_path / "data-long", template_memory_bytes=0)
    long_peak, _ = traced_peak(Generator(streaming), speech, long, tmp_path / "l.mp4")
    frame_bytes = size * size * 3
    extra_frames = (8 - 2) * FPS
    assert frames == FPS
    assert long_peak < 8 * FPS * frame_bytes / 4, (long_peak, short_peak)
    assert long_peak - short_peak < extra_frames * frame_bytes / 3, (long_peak, short_peak)


class CountingStream:
    """A TemplateStream that counts the frames it decodes."""

    def __init__(self, stream) -> None:
        self.inner, self.decoded = stream, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)

    def frames(self, start=0, stop=None, should_stop=None):
        for frame in self.inner.frames(start, stop, should_stop):
            self.decoded += 1
            yield frame

    def in_order(self, indices, should_stop=None):
        for frame in self.inner.in_order(indices, should_stop):
            self.decoded += 1
            yield frame


def test_a_kept_template_is_decoded_once_and_read_as_decoded(tmp_path: Path) -> None:
    """Two chunks (as tracking reads them), then the loop order: every frame equals the plain decode, the
    loop decodes nothing more, and a kept frame cannot be edited in place."""
    path = write_short_gops(tmp_path / "gops.mp4", 2.0)
    whole = read_template(path, work_dir=tmp_path / "work").frames
    stream = CountingStream(open_template(path, work_dir=tmp_path / "work"))
    kept = held(stream, limit=whole.nbytes)
    assert isinstance(kept, HeldFrames)
    half = len(whole) // 2
    chunks = [list(kept.frames(0, half)), list(kept.frames(half))]
    assert all(np.array_equal(f, whole[k]) for k, f in enumerate(chunks[0] + chunks[1]))
    assert stream.decoded == len(whole)
    order = loop_indices(len(whole), 3 * len(whole))
    looped = list(kept.in_order(order))
    assert all(np.array_equal(f, whole[k]) for f, k in zip(looped, order)) and len(looped) == len(order)
    assert stream.decoded == len(whole)
    with pytest.raises(ValueError):
        looped[0][0, 0] = 0
    crops = kept.crops({3: (4, 6, 20, 30)})
    crop, origin = crops.get(3)
    assert np.array_equal(crop, whole[3, 6:30, 4:20]) and tuple(origin) == (4, 6)
    crops.close()
    assert stream.decoded == len(whole)


def test_a_template_over_the_limit_streams_and_loops_decode_on_first_use(tmp_path: Path) -> None:
    path = write_short_gops(tmp_path / "gops.mp4", 2.0)
    whole = read_template(path, work_dir=tmp_path / "work").frames
    stream = open_template(path, work_dir=tmp_path / "work")
    assert held(stream, limit=whole.nbytes - 1) is stream
    assert held(stream, limit=0) is stream
    # Kept, but first read in loop order (a cached face track skips the tracking pass).
    counting = CountingStream(stream)
    kept = held(counting, limit=whole.nbytes)
    order = loop_indices(len(whole), 2 * len(whole) + 5)
    assert all(np.array_equal(f, whole[k]) for f, k in zip(kept.in_order(order), order))
    first = counting.decoded
    assert all(np.array_equal(f, whole[k]) for k, f in enumerate(kept.frames()))
    assert counting.decoded == first


def test_a_kept_template_renders_the_same_video_as_a_streamed_one(tmp_path: Path) -> None:
    speech = make_speech(tmp_path / "speech.wav", seconds=3.0)
    template = make_talking_video(tmp_path / "t.mp4", seconds=1.2, size=(128, 128))
    outputs = []
    for limit in (0, 1 << 30):
        settings = Settings(data_dir=tmp_path / f"data-{limit}", template_memory_bytes=limit)
        result = Generator(settings).generate(speech, template, tmp_path / f"{limit}.mp4", GenerateOptions(check=False))
        outputs.append(read_template(result.output, work_dir=tmp_path / "work").frames)
    assert outputs[0].shape == outputs[1].shape and np.array_equal(outputs[0], outputs[1])
