"""Template frames in, lip-synced MP4 out.

`read_template` decodes a template to upright, constant-rate, even-sized RGB frames (on disk
when they would not fit comfortably in memory); `loop_indices` stretches a short template to the
speech's length; `Mp4Writer` encodes H.264 + AAC and publishes the file only once it is whole.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np
from av.video.frame import PictureType

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

log = logging.getLogger(__name__)

__all__ = [
    "MEMMAP_THRESHOLD_BYTES",
    "ArrayFrames",
    "FrameCrops",
    "Mp4Writer",
    "TemplateStream",
    "TemplateVideo",
    "loop_indices",
    "open_template",
    "output_frame_count",
    "read_template",
]

# Frames beyond this many bytes go to a memory-mapped file in the job's work_dir: a minute of
# 4K is ~45 GB of RGB, which must not have to fit in RAM.
MEMMAP_THRESHOLD_BYTES = 2 * 1024 * 1024 * 1024
# Decoded pictures a backwards run of a looped template holds at once (decoded forwards, given out
# reversed); as YUV 4:2:0, 41 frames of 1080x1920.
WINDOW_BYTES = 128 * 1024 * 1024
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
    budget: FrameBudget | None = None,
    output_seconds: float | None = None,
) -> TemplateVideo:
    """Validate `path` as a template (probe) and decode all of it into one array; see TemplateVideo.

    For analysis and tests of short clips: generation streams instead (open_template), since a
    long template's frames do not fit in memory. Frames over MEMMAP_THRESHOLD_BYTES go to a
    memory-mapped file in `work_dir`. `max_side`, `budget` and `output_seconds`: see open_template.
    """
    stream = open_template(
        path,
        work_dir=work_dir,
        max_duration=max_duration,
        display_name=display_name,
        should_stop=should_stop,
        max_side=max_side,
        budget=budget,
        output_seconds=output_seconds,
    )
    shape = (len(stream), stream.height, stream.width, 3)
    frames = _frame_array(shape, Path(work_dir))
    try:
        reported = -1
        for k, frame in enumerate(stream.frames(should_stop=should_stop)):
            frames[k] = frame
            if progress is not None and (percent := 100 * k // len(stream)) != reported:
                reported = percent
                progress(k / len(stream))
    except BaseException:
        _discard(frames)
        raise
    if progress is not None:
        progress(1.0)
    return TemplateVideo(frames=frames, fps=stream.fps, info=stream.info, colour=stream.colour)


def _frame_array(shape: tuple[int, int, int, int], work_dir: Path) -> np.ndarray:
    if np.prod(shape, dtype=np.int64) <= MEMMAP_THRESHOLD_BYTES:
        return np.empty(shape, dtype=np.uint8)
    work_dir.mkdir(parents=True, exist_ok=True)
    return np.memmap(work_dir / f"template-{uuid.uuid4().hex}.rgb", dtype=np.uint8, mode="w+", shape=shape)


def _discard(frames: np.ndarray) -> None:
    # Unlinking a mapped file is safe on POSIX: its space is freed once the map is dropped.
    if isinstance(frames, np.memmap) and frames.filename is not None:
        Path(frames.filename).unlink(missing_ok=True)


def open_template(
    path: str | Path,
    *,
    work_dir: Path,
    max_duration: float | None = None,
    display_name: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_side: int | None = None,
    budget: FrameBudget | None = None,
    output_seconds: float | None = None,
) -> TemplateStream:
    """Validate `path` as a template (probe) and decode its first frame; see TemplateStream.

    `max_side` scales frames down (while decoding) so neither side exceeds it: for analysis that
    does not need every pixel, such as the quality check. With a `budget`, a video over it (its
    frames, or an output of `output_seconds`) is refused before a frame is decoded.
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
    decoded: list[av.VideoFrame] = []

    def noting(frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        for frame in frames:
            decoded.append(frame)
            yield frame

    with av.open(str(path), metadata_errors="ignore") as container:
        stream = pick_video_stream(container)
        first = next(_upright_frames(noting(container.decode(stream)), video, name, should_stop), None)
        if first is None:
            raise errors.undecodable(name, video.codec)
        colour = Colour.of_frame(decoded[0])
    return TemplateStream(
        path=path, name=name, info=info, video=video, colour=colour, origin=first[0], work_dir=Path(work_dir)
    )


@dataclass(frozen=True)
class TemplateStream:
    """A template read on demand: upright, constant-rate, even-sized RGB frames, decoded while
    they are used and never all kept. A 10-minute 1080p template is ~90 GB of RGB; generation
    holds a few frames of it at a time (and face crops where an engine borrows a mouth).

    `video` is the stream as decoded (after any `max_side` scaling); `origin` the time of its first
    frame, from which frame k's time k/fps is counted.
    """

    path: Path
    name: str
    info: MediaInfo
    video: VideoStreamInfo
    colour: Colour  # of its first frame; what the output is encoded and tagged with
    origin: float
    work_dir: Path

    @property
    def fps(self) -> Fraction:
        return self.video.fps

    @property
    def width(self) -> int:
        return self.video.width - self.video.width % 2

    @property
    def height(self) -> int:
        return self.video.height - self.video.height % 2

    def __len__(self) -> int:
        return self.video.frame_count

    def frames(
        self, start: int = 0, stop: int | None = None, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[np.ndarray]:
        """Frames start..stop-1 in order; a later start seeks to the keyframe before it."""
        for picture in self._pictures(start, stop, should_stop):
            yield picture.rgb()

    def _pictures(
        self, start: int = 0, stop: int | None = None, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[_Picture]:
        stop = len(self) if stop is None else min(stop, len(self))
        if start >= stop:
            return
        if start > 0:
            seeked = self._decode(start, stop, should_stop, seek=True)
            first = next(seeked, None)
            if first is not None:  # else the seek overshot (or found nothing): decode from the start
                yield first
                yield from seeked
                return
        yielded = False
        for picture in self._decode(start, stop, should_stop, seek=False):
            yielded = True
            yield picture
        if not yielded:
            raise errors.undecodable(self.name, self.video.codec)

    def _decode(self, start: int, stop: int, should_stop: Callable[[], bool] | None, seek: bool) -> Iterator[_Picture]:
        with av.open(str(self.path), metadata_errors="ignore") as container:
            stream = pick_video_stream(container)
            stream.thread_type = "AUTO"
            if seek:
                target = self.origin + start / float(self.fps)
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
            upright = _upright_frames(container.decode(stream), self.video, self.name, should_stop)
            for k, picture in _constant_rate(upright, self.fps, len(self), self.origin, start):
                if k != start and seek:
                    return  # the first frame after the seek lies past `start`
                seek = False
                yield picture
                start = k + 1
                if start >= stop:
                    return

    def in_order(
        self, indices: np.ndarray, should_stop: Callable[[], bool] | None = None, window_bytes: int = WINDOW_BYTES
    ) -> Iterator[np.ndarray]:
        """Frames indices[0], indices[1], ... as loop_indices orders them: forwards runs are
        streamed, backwards runs decoded forwards a window at a time and given out reversed (at
        most `window_bytes` of decoded YUV 4:2:0 pictures held, each converted to RGB as it is
        given out), a repeated index is the previous frame again."""
        window = max(1, window_bytes * 2 // (self.width * self.height * 3))
        for first, last, step, count in _runs(np.asarray(indices)):
            if step == 0:
                frame = next(self.frames(first, first + 1, should_stop))
                for _ in range(count):
                    yield frame
            elif step > 0:
                yield from self.frames(first, last + 1, should_stop)
            else:
                top = first + 1
                while top > last:
                    bottom = max(last, top - window)
                    held = list(self._pictures(bottom, top, should_stop))
                    while held:
                        yield held.pop().rgb()
                    top = bottom

    def crops(
        self, regions: dict[int, tuple[int, int, int, int]], should_stop: Callable[[], bool] | None = None
    ) -> FrameCrops:
        """The (x0, y0, x1, y1) region of each frame in `regions`, decoded in one forward pass
        and kept in a file in work_dir (a long template's crops need not fit in memory)."""
        crops = FrameCrops(self.work_dir)
        if regions:
            wanted = sorted(regions)
            for k, frame in enumerate(self.frames(wanted[0], wanted[-1] + 1, should_stop), start=wanted[0]):
                if k in regions:
                    crops.add(k, frame, regions[k])
        return crops


class ArrayFrames:
    """Frames already in memory behind TemplateStream's reading methods (tests, short clips)."""

    def __init__(self, frames: np.ndarray) -> None:
        self.array = frames

    @property
    def width(self) -> int:
        return self.array.shape[2]

    @property
    def height(self) -> int:
        return self.array.shape[1]

    def __len__(self) -> int:
        return len(self.array)

    def frames(
        self, start: int = 0, stop: int | None = None, should_stop: Callable[[], bool] | None = None
    ) -> Iterator[np.ndarray]:
        for k in range(start, len(self) if stop is None else min(stop, len(self))):
            yield np.asarray(self.array[k])

    def in_order(self, indices: np.ndarray, should_stop: Callable[[], bool] | None = None) -> Iterator[np.ndarray]:
        for k in indices:
            yield np.asarray(self.array[k])

    def crops(
        self, regions: dict[int, tuple[int, int, int, int]], should_stop: Callable[[], bool] | None = None
    ) -> FrameCrops:
        return FrameCrops(None, whole=self.array)


class FrameCrops:
    """Regions of some template frames, appended once and read back by frame number.

    Kept in an unlinked-on-close file, read with plain reads (not mapped), so a thousand 1080p
    face crops cost disk, not resident memory. With `whole`, every frame is there in full.
    """

    def __init__(self, work_dir: Path | None, whole: np.ndarray | None = None) -> None:
        self._whole = whole
        self._where: dict[int, tuple[int, tuple[int, int, int], tuple[int, int]]] = {}
        self._file = None
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)
            self._path = work_dir / f"crops-{uuid.uuid4().hex}.rgb"
            self._file = open(self._path, "w+b")  # noqa: SIM115 (closed by close())

    def add(self, k: int, frame: np.ndarray, region: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = region
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        assert self._file is not None
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(crop.tobytes())
        self._where[k] = (offset, crop.shape, (x0, y0))

    def get(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame k's crop and its top-left corner in the frame."""
        if self._whole is not None:
            return np.asarray(self._whole[k]), np.zeros(2)
        offset, shape, origin = self._where[k]
        assert self._file is not None
        self._file.seek(offset)
        data = self._file.read(int(np.prod(shape)))
        return np.frombuffer(data, np.uint8).reshape(shape), np.array(origin, np.float64)

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(shape)) for _, shape, _ in self._where.values())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._path.unlink(missing_ok=True)
            self._file = None


def _runs(indices: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """(first index, last index, step, length) of each run of steps +1, -1 or 0 in `indices`."""
    n, begin = len(indices), 0
    while begin < n:
        end = begin + 1
        step = int(indices[end] - indices[begin]) if end < n else 1
        if step not in (-1, 0, 1):
            step = 1
        else:
            while end < n and indices[end] - indices[end - 1] == step:
                end += 1
        yield int(indices[begin]), int(indices[end - 1]), step, end - begin
        begin = end


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


class _Picture:
    """A decoded frame, converted to upright RGB when first asked for and then kept (a frame that
    fills several constant-rate slots is converted once)."""

    __slots__ = ("_convert", "_rgb")

    def __init__(self, convert: Callable[[], np.ndarray]) -> None:
        self._convert: Callable[[], np.ndarray] | None = convert
        self._rgb: np.ndarray | None = None

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            assert self._convert is not None
            self._rgb, self._convert = self._convert(), None
        return self._rgb


def _constant_rate(
    upright: Iterator[tuple[float, Callable[[], np.ndarray]]],
    fps: Fraction,
    total: int,
    origin: float | None,
    wanted_from: int = 0,
) -> Iterator[tuple[int, _Picture]]:
    """(k, picture) for each output slot k in wanted_from..total-1 that the decoded frames reach.

    Slot k shows the latest source frame at or before time k/fps counted from `origin` (None: the
    first decoded frame's time); the last source frame fills any remaining slots. After a seek the
    first slot given out is the first one the first decoded frame covers. Frames no wanted slot
    shows are never converted to RGB.
    """
    period = 1 / float(fps)
    slack = _TIMESTAMP_SLACK * period
    filled = None
    held: _Picture | None = None
    for time, rgb in upright:
        if origin is None:
            origin = time
        if filled is None:
            filled = max(0, math.ceil((time - origin - slack) / period))
        while held is not None and filled < total and time - origin > filled * period + slack:
            if filled >= wanted_from:
                yield filled, held
            filled += 1
        held = _Picture(rgb)
        if filled >= total:
            return
    if held is None or filled is None:
        return
    while filled < total:
        if filled >= wanted_from:
            yield filled, held
        filled += 1


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


Encoder = Literal["auto", "libx264", "nvenc"]
# x264's preset names on NVENC's scale (p1 fastest .. p7 best).
_NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p4",
    "medium": "p4",
    "slow": "p5",
    "slower": "p6",
    "veryslow": "p7",
}


def nvenc_opens(width: int, height: int, fps: Fraction) -> bool:
    """Whether an h264_nvenc encoder opens for this size here (a GPU with NVENC and its driver)."""
    try:
        context = av.CodecContext.create("h264_nvenc", "w")
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.time_base = 1 / Fraction(fps)
        context.open()
    except (av.FFmpegError, ValueError) as error:  # ValueError: a PyAV build without it
        log.debug("h264_nvenc does not open: %s", error)
        return False
    return True  # the probe context is freed with its last reference


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
        encoder: Encoder = "auto",
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
            self._video = self._add_video(crf, preset, encoder)
            self._soundtrack = _Soundtrack(self._source, self._output, duration, Path(audio_path).name)
        except BaseException:
            self.abort()
            raise

    def _add_video(self, crf: int, preset: str, encoder: Encoder) -> av.VideoStream:
        # NVENC when asked for ("auto" tries it) and it opens at this size; libx264 otherwise. A GPU
        # without NVENC (H100/H200), a driver without libnvidia-encode or no GPU at all is no error.
        codec, options = "libx264", {"crf": str(crf), "preset": preset, "profile": "high"}
        if encoder != "libx264" and nvenc_opens(self.width, self.height, self.fps):
            codec = "h264_nvenc"
            options = {"rc": "vbr", "cq": str(crf), "preset": _NVENC_PRESETS[preset], "profile": "high"}
        elif encoder == "nvenc":
            log.warning("video_encoder = nvenc, but h264_nvenc does not open here; encoding with libx264")
        stream = self._output.add_stream(codec, rate=self.fps, options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        context = stream.codec_context
        context.time_base = 1 / self.fps
        if codec == "libx264":
            # x264's frame threads (any thread type but SLICE, PyAV's default) outrun sliced threads;
            # 0 lets it size the pool from the cores.
            context.thread_type, context.thread_count = "FRAME", 0
        self.colour.tag(context)
        self.encoder = codec
        return stream

    def write(self, frame: np.ndarray, keyframe: bool = False) -> None:
        """Append one RGB uint8 frame of shape (height, width, 3); a `keyframe` can be decoded on
        its own (a reader seeking to it decodes one frame)."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            expected = (self.height, self.width, 3)
            raise ValueError(f"expected uint8 frames of shape {expected}, got {frame.dtype} {frame.shape}")
        picture = yuv420p_frame(np.ascontiguousarray(frame), self.colour)
        picture.pts = self._frames_written
        if keyframe:
            picture.pict_type = PictureType.I
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
