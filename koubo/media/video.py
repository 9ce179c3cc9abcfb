"""Template frames in, lip-synced MP4 out.

`read_template` decodes a template to upright, constant-rate, even-sized RGB frames (on disk
when they would not fit comfortably in memory); `loop_indices` stretches a short template to the
speech's length; `Mp4Writer` encodes H.264 + AAC and publishes the file only once it is whole.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from koubo import errors
from koubo.media.audio import resample_audio
from koubo.media.colour import Colour, yuv420p_frame
from koubo.media.probe import (
    FrameBudget,
    MediaInfo,
    VideoStreamInfo,
    output_frame_count,
    pick_audio_stream,
    pick_video_stream,
    probe,
)

__all__ = [
    "MEMMAP_THRESHOLD_BYTES",
    "FrameStore",
    "Mp4Writer",
    "TemplateVideo",
    "loop_indices",
    "output_frame_count",
    "read_template",
]

# Frames beyond this many bytes go to a memory-mapped file in the job's work_dir: a minute of
# 4K is ~45 GB of RGB, which must not have to fit in RAM.
MEMMAP_THRESHOLD_BYTES = 2 * 1024 * 1024 * 1024
# A source frame up to this fraction of an output period late still counts as "at" that time:
# timestamps rounded to a coarse time base (1/1000 s) must not shift a constant-rate template.
_TIMESTAMP_SLACK = 0.25
# Sample rates the AAC encoder accepts; other rates are resampled to the next one up.
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_AAC_FALLBACK_RATE = 48000  # for a source whose header does not say its rate
_AAC_FRAME = 1024
_AAC_BITRATE_PER_CHANNEL = 96_000


@dataclass(frozen=True)
class TemplateVideo:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, upright, constant rate, H and W even; maybe np.memmap
    fps: Fraction
    info: MediaInfo
    colour: Colour = Colour()  # of its first frame; what the output is encoded and tagged with

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    def __len__(self) -> int:
        return self.frames.shape[0]


def read_template(
    path: str | Path,
    *,
    work_dir: Path,
    max_duration: float | None = None,
    display_name: str | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_side: int | None = None,
    store: FrameStore | None = None,
    budget: FrameBudget | None = None,
    output_seconds: float | None = None,
) -> TemplateVideo:
    """Validate `path` as a template (probe) and decode all of it; see TemplateVideo.

    `max_side` scales frames down (while decoding) so neither side exceeds it: for analysis that
    does not need every pixel, such as the quality check. With a `store`, frames that fit in memory
    go into its buffer, overwriting what an earlier call put there. With a `budget`, a video over it
    (its frames, or an output of `output_seconds`) is refused before a frame is decoded.
    """
    path = Path(path)
    name = display_name or path.name
    info = probe(path, expect="video", max_duration=max_duration, display_name=name)
    if budget is not None:
        budget.check(info, name, output_seconds)
    video = info.video
    assert video is not None  # probe(expect="video") guarantees it
    if max_side is not None and max(video.width, video.height) > max_side:
        factor = max_side / max(video.width, video.height)
        video = replace(video, width=round(video.width * factor), height=round(video.height * factor))
    shape = (video.frame_count, video.height - video.height % 2, video.width - video.width % 2, 3)
    frames = _frame_store(shape, Path(work_dir), store)
    colour = Colour()

    def noting_colour(decoded: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        nonlocal colour
        for index, frame in enumerate(decoded):
            if index == 0:
                colour = Colour.of_frame(frame)
            yield frame

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = pick_video_stream(container)
            stream.thread_type = "AUTO"
            upright = _upright_frames(noting_colour(container.decode(stream)), video, name, should_stop)
            if _fill_constant_rate(frames, upright, video.fps, progress) == 0:
                raise errors.undecodable(name, video.codec)
    except BaseException:
        _discard(frames)
        raise
    return TemplateVideo(frames=frames, fps=video.fps, info=info, colour=colour)


class FrameStore:
    """A grow-only buffer that successive read_template calls of one process decode into.

    Touching freshly allocated memory is what dominates decoding large templates (measured on a
    2-core VM: 15-18 ms per 1080x1920 frame on first touch, under 1 ms when reused), so a worker
    that renders job after job keeps one of these instead of allocating gigabytes per job.
    """

    def __init__(self) -> None:
        self._buffer: np.ndarray | None = None

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64))
        if self._buffer is None or self._buffer.size < size:
            self._buffer = None  # drop the old buffer before allocating its successor
            self._buffer = np.empty(size, dtype=np.uint8)
        return self._buffer[:size].reshape(shape)


def _frame_store(shape: tuple[int, int, int, int], work_dir: Path, store: FrameStore | None) -> np.ndarray:
    if np.prod(shape, dtype=np.int64) <= MEMMAP_THRESHOLD_BYTES:
        return store.take(shape) if store is not None else np.empty(shape, dtype=np.uint8)
    work_dir.mkdir(parents=True, exist_ok=True)
    return np.memmap(work_dir / f"template-{uuid.uuid4().hex}.rgb", dtype=np.uint8, mode="w+", shape=shape)


def _discard(frames: np.ndarray) -> None:
    # Unlinking a mapped file is safe on POSIX: its space is freed once the map is dropped.
    if isinstance(frames, np.memmap) and frames.filename is not None:
        Path(frames.filename).unlink(missing_ok=True)


def _upright_frames(
    decoded: Iterator[av.VideoFrame], video: VideoStreamInfo, name: str, should_stop: Callable[[], bool] | None
) -> Iterator[tuple[float, Callable[[], np.ndarray]]]:
    """(time in seconds, lazy RGB) per decoded frame; the RGB is upright and cropped to even size.

    Conversion is deferred because VFR resampling skips some frames entirely.
    """
    stored = (video.height, video.width) if video.rotation in (90, 270) else (video.width, video.height)
    height, width = video.height - video.height % 2, video.width - video.width % 2
    turns = -video.rotation // 90  # np.rot90 turns counter-clockwise
    time = None
    try:
        for frame in decoded:
            if should_stop is not None and should_stop():
                raise errors.Cancelled()
            time = frame.time if frame.pts is not None else (time or 0.0) + 1 / float(video.fps)

            def rgb(frame: av.VideoFrame = frame) -> np.ndarray:
                # Mid-stream size changes are scaled back to the size probe reported.
                pixels = frame.to_ndarray(format="rgb24", width=stored[0], height=stored[1])
                return np.rot90(pixels, turns)[:height, :width]

            yield time, rgb
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        raise errors.truncated(name) from exc


def _fill_constant_rate(
    frames: np.ndarray,
    upright: Iterator[tuple[float, Callable[[], np.ndarray]]],
    fps: Fraction,
    progress: Callable[[float], None] | None,
) -> int:
    """Output frame k shows the latest source frame at or before time k/fps (counted from the
    first frame); the last source frame fills any remaining slots. Returns source frames seen."""
    total = frames.shape[0]
    period = 1 / float(fps)
    slack = _TIMESTAMP_SLACK * period
    filled, seen, start, reported = 0, 0, None, -1
    held: Callable[[], np.ndarray] | None = None
    held_rgb: np.ndarray | None = None
    for time, rgb in upright:
        start = time if start is None else start
        while held is not None and filled < total and time - start > filled * period + slack:
            if held_rgb is None:
                held_rgb = held()
            frames[filled] = held_rgb
            filled += 1
        held, held_rgb, seen = rgb, None, seen + 1
        if progress is not None and (percent := 100 * filled // total) != reported:
            reported = percent
            progress(filled / total)
        if filled == total:
            break
    if held is None:
        return 0
    if filled < total:
        frames[filled:] = held_rgb if held_rgb is not None else held()
    if progress is not None:
        progress(1.0)
    return seen


def loop_indices(n_template: int, n_out: int) -> np.ndarray:
    """Template frame for each output frame: the beginning when the template is long enough,
    else forwards then backwards (0..n-1, n-2..1, 0..), never jumping back to frame 0."""
    if n_template < 1:
        raise ValueError("a template needs at least one frame")
    steps = np.arange(n_out)
    if n_out <= n_template or n_template == 1:
        return np.minimum(steps, n_template - 1)
    cycle = 2 * n_template - 2
    phase = steps % cycle
    return np.where(phase < n_template, phase, cycle - phase)


class Mp4Writer:
    """H.264 (libx264, 8-bit yuv420p, high profile) + AAC from the original audio file, +faststart.

    Frames are encoded with `colour`'s matrix and range and the stream is tagged with it: pass the
    template's (TemplateVideo.colour) and the output looks as the template did.

    Written to '.<name>.part-<random>.mp4' beside `path` and renamed to `path` only by close(),
    so readers never see a partial file. As a context manager: close() on success, abort() on an
    exception.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        fps: Fraction,
        audio_path: str | Path,
        duration: float,
        crf: int = 18,
        preset: str = "veryfast",
        colour: Colour = Colour(),
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, Fraction(fps)
        self.colour = colour
        self._temp = self.path.with_name(f".{self.path.name}.part-{secrets.token_hex(4)}.mp4")
        self._frames_written = 0
        self._finished = False
        self._source = av.open(str(audio_path), metadata_errors="ignore")
        try:
            self._output = av.open(str(self._temp), "w", format="mp4", options={"movflags": "+faststart"})
        except BaseException:
            self._source.close()
            raise
        try:
            self._video = self._add_video(crf, preset)
            self._soundtrack = _Soundtrack(self._source, self._output, duration, Path(audio_path).name)
        except BaseException:
            self.abort()
            raise

    def _add_video(self, crf: int, preset: str) -> av.VideoStream:
        stream = self._output.add_stream(
            "libx264", rate=self.fps, options={"crf": str(crf), "preset": preset, "profile": "high"}
        )
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        context = stream.codec_context
        context.time_base = 1 / self.fps
        # x264's frame threads (any thread type but SLICE, PyAV's default) outrun sliced threads;
        # 0 lets it size the pool from the cores.
        context.thread_type, context.thread_count = "FRAME", 0
        self.colour.tag(context)
        return stream

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of shape (height, width, 3)."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            expected = (self.height, self.width, 3)
            raise ValueError(f"expected uint8 frames of shape {expected}, got {frame.dtype} {frame.shape}")
        picture = yuv420p_frame(np.ascontiguousarray(frame), self.colour)
        picture.pts = self._frames_written
        self._output.mux(self._video.encode(picture))
        self._frames_written += 1
        self._output.mux(self._soundtrack.packets_until(self._frames_written / self.fps))

    def close(self) -> Path:
        """Finish both streams, write the index up front and move the file to `path`."""
        if self._finished:
            return self.path
        if self._frames_written == 0:
            self.abort()
            raise ValueError("no frames were written")
        try:
            self._output.mux(self._video.encode(None))
            self._output.mux(self._soundtrack.packets_until(None))
            self._output.close()
            self._source.close()
            os.replace(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        self._finished = True
        return self.path

    def abort(self) -> None:
        """Stop, and delete the temporary file; `path` is left as it was."""
        self._finished = True
        for container in (self._output, self._source):
            with contextlib.suppress(av.error.FFmpegError):
                container.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _Soundtrack:
    """The original audio, re-encoded to AAC and trimmed to the video's duration, handed out in
    step with the video so the file interleaves (and the muxer need not buffer a whole track)."""

    def __init__(
        self, source: av.container.InputContainer, output: av.container.OutputContainer, duration: float, name: str
    ) -> None:
        stream = pick_audio_stream(source)
        if stream is None:
            raise errors.no_audio_stream(name)
        rate = _aac_rate(stream.codec_context.sample_rate)
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        self._stream = output.add_stream("aac", rate=rate)
        self._stream.layout = layout
        self._stream.bit_rate = _AAC_BITRATE_PER_CHANNEL * (1 if layout == "mono" else 2)
        frames = resample_audio(source.decode(stream), sample_format="fltp", layout=layout, rate=rate)
        self._packets = self._encode(frames, round(duration * rate))
        self._next: av.Packet | None = None

    def packets_until(self, seconds: float | Fraction | None) -> list[av.Packet]:
        """Encoded packets that start before `seconds` (None: all that remain)."""
        ready: list[av.Packet] = []
        while (packet := self._peek()) is not None:
            if seconds is not None and packet.pts is not None and packet.pts * packet.time_base >= seconds:
                break
            ready.append(packet)
            self._next = None
        return ready

    def _peek(self) -> av.Packet | None:
        if self._next is None:
            self._next = next(self._packets, None)
        return self._next

    def _encode(self, frames: Iterator[av.AudioFrame], total: int) -> Iterator[av.Packet]:
        fifo = av.AudioFifo()
        sent = 0
        for frame in frames:
            frame.pts = None  # the FIFO re-times; source timestamps may jump
            fifo.write(frame)
            while fifo.samples >= _AAC_FRAME and sent < total:
                sent = yield from self._encode_chunk(fifo, min(_AAC_FRAME, total - sent), sent)
            if sent >= total:
                break
        while fifo.samples and sent < total:
            sent = yield from self._encode_chunk(fifo, min(_AAC_FRAME, fifo.samples, total - sent), sent)
        yield from self._stream.encode(None)

    def _encode_chunk(self, fifo: av.AudioFifo, samples: int, sent: int) -> Iterator[av.Packet]:
        chunk = fifo.read(samples)
        chunk.pts = sent
        chunk.time_base = Fraction(1, self._stream.rate)
        yield from self._stream.encode(chunk)
        return sent + samples


def _aac_rate(source_rate: int | None) -> int:
    """The source's rate when AAC takes it, else the next one up."""
    if not source_rate:
        return _AAC_FALLBACK_RATE
    return next((rate for rate in _AAC_RATES if rate >= source_rate), _AAC_RATES[-1])
