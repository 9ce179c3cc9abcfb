"""Validate an uploaded file by its content and describe the stream koubo will use.

`probe` opens the file with PyAV, demuxes every packet of the stream that matters (cheap: no
decoding) and decodes only its first frame and its last few packets. That is enough to tell
"not media" from "wrong kind of media" and "damaged" from "merely odd", and to measure what the
readers need: duration, frame rate, frame count, rotation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import av
import numpy as np
from av.container import InputContainer
from av.stream import Disposition

from koubo import errors

if TYPE_CHECKING:
    from koubo.config import Settings

# Still-image demuxers open a picture as a one-frame "video"; it is neither speech nor a template.
_IMAGE_FORMAT_SUFFIX = "_pipe"
_IMAGE_FORMATS = frozenset({"image2"})
# Container families whose header indexes every packet, so a short demux proves a cut file.
_INDEXED_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})
# ISO base media boxes that may open a file (old QuickTime files need not start with ftyp).
_ISO_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"})
# A stream that demuxes this much shorter than its header claims has lost its end.
_MISSING_SECONDS = 0.25
_MISSING_FRACTION = 0.05
# Writers that stream a WAV (to a pipe, so they cannot seek back) leave its RIFF size unknown:
# 0, all ones, or just under 2 GiB (espeak-ng --stdout writes 0x7ffff024). From here up the size
# is a placeholder, not a promise of bytes to come.
_RIFF_PLACEHOLDER_SIZE = 0x7FFF0000
# Packets kept from the end of the stream to decode once more (video: from its last keyframe).
_TAIL_AUDIO_PACKETS = 8
_TAIL_VIDEO_PACKETS = 48
# Frame gaps that differ by more than this fraction of the typical gap make a stream VFR.
_VFR_GAP_SPREAD = 0.1
# A header frame rate this close to the measured one is the exact rate (30000/1001, not 29.97).
_RATE_AGREEMENT = 0.01

StreamT = TypeVar("StreamT", bound=av.stream.Stream)


@dataclass(frozen=True)
class VideoStreamInfo:
    codec: str
    width: int  # as displayed: after rotation, before cropping to even sizes
    height: int
    rotation: int  # clockwise degrees (0/90/180/270) that turn decoded frames upright
    fps: Fraction  # average rate; what the template is resampled to
    frame_count: int  # frames at constant `fps`: output_frame_count(duration, fps)
    variable_frame_rate: bool


@dataclass(frozen=True)
class AudioStreamInfo:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    container: str  # PyAV format name
    duration: float  # seconds of the expected stream (audio or video)
    audio: AudioStreamInfo | None  # the expected audio, or a template's soundtrack (from its header)
    video: VideoStreamInfo | None  # only when video was expected: probing audio does not read it


def output_frame_count(duration: float, fps: Fraction) -> int:
    """Frames a constant-rate video of `duration` seconds has at `fps` (at least one)."""
    return max(1, round(duration * float(fps)))


def pick_audio_stream(container: InputContainer) -> av.AudioStream | None:
    """The audio stream koubo uses: the one flagged default, else the first."""
    return _prefer_default(list(container.streams.audio))


def pick_video_stream(container: InputContainer) -> av.VideoStream | None:
    """The video stream koubo uses, never an attached picture (an MP3's cover art)."""
    return _prefer_default([s for s in container.streams.video if not s.disposition & Disposition.attached_pic])


def _prefer_default(streams: list[StreamT]) -> StreamT | None:
    flagged = [s for s in streams if s.disposition & Disposition.default]
    return (flagged or streams or [None])[0]


def probe(
    path: str | Path,
    *,
    expect: Literal["audio", "video"],
    max_duration: float | None = None,
    display_name: str | None = None,
) -> MediaInfo:
    """Check that `path` holds a usable `expect` stream and describe it; raise MediaError if not."""
    path = Path(path)
    name = display_name or path.name
    if path.stat().st_size == 0:
        raise errors.empty_media(name)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError):  # missing file, no permission: not the upload's fault
            raise
        raise (errors.truncated(name) if _is_cut_iso_file(path) else errors.not_media(name)) from exc
    with container:
        return _probe_container(container, path, name, expect, max_duration)


def _probe_container(
    container: InputContainer, path: Path, name: str, expect: str, max_duration: float | None
) -> MediaInfo:
    format_name = container.format.name
    audio, video = pick_audio_stream(container), pick_video_stream(container)
    is_image = format_name.endswith(_IMAGE_FORMAT_SUFFIX) or format_name in _IMAGE_FORMATS
    if is_image or not (container.streams.audio or container.streams.video):
        raise errors.not_media(name)
    stream = audio if expect == "audio" else video
    if stream is None:
        raise errors.no_audio_stream(name) if expect == "audio" else errors.no_video_stream(name)
    if stream.codec_context is None:
        raise errors.undecodable(name, _codec_name(stream))

    claimed = _claimed_duration(container, stream)
    # Refuse an over-long upload from its header alone, before reading all of it.
    if max_duration is not None and claimed is not None and claimed > max_duration:
        raise errors.too_long(name, claimed, max_duration)

    scan = _scan_stream(container, stream, path.stat().st_size, name)
    duration = scan.duration()
    if scan.first_frame is None or duration <= 0:
        raise errors.empty_media(name)
    if _looks_cut(container, stream, scan, claimed) or _is_cut_riff_file(path):
        raise errors.truncated(name)
    if max_duration is not None and duration > max_duration:
        raise errors.too_long(name, duration, max_duration)

    if expect == "audio":
        return MediaInfo(path, format_name, duration, _audio_info(stream, scan.first_frame), None)
    soundtrack = _audio_info(audio, None) if audio is not None and audio.codec_context is not None else None
    return MediaInfo(path, format_name, duration, soundtrack, _video_info(stream, scan, duration))


def _codec_name(stream: av.stream.Stream) -> str:
    if stream.codec_context is not None:
        return stream.codec_context.codec.canonical_name
    return stream.metadata.get("codec_name", "unknown")


def _claimed_duration(container: InputContainer, stream: av.stream.Stream) -> float | None:
    """What the header says the stream lasts; the container's figure only if it has one stream."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    media_streams = [s for s in container.streams if s.type in ("audio", "video")]
    if container.duration and len(media_streams) == 1:
        return container.duration / av.time_base
    return None


@dataclass(frozen=True)
class _Scan:
    """What one demux pass over a stream found."""

    time_base: Fraction
    starts: np.ndarray  # packet presentation times in time_base ticks, sorted
    end: int  # when the last packet stops showing, in ticks
    packet_count: int
    damaged: bool  # a demux error, a packet past the end of the file, or an undecodable tail
    first_frame: av.frame.Frame | None

    def duration(self) -> float:
        if self.starts.size == 0:
            return 0.0
        # Negative times are priming (AAC's first 1024 samples in MP4): decoded, never shown.
        return float((self.end - max(int(self.starts[0]), 0)) * self.time_base)


def _scan_stream(container: InputContainer, stream: av.stream.Stream, file_size: int, name: str) -> _Scan:
    """Demux every packet of `stream`; decode its first frame and, at the end, its last packets."""
    stream.thread_type = "AUTO"
    is_video = stream.type == "video"
    tail: deque[av.Packet] = deque(maxlen=None if is_video else _TAIL_AUDIO_PACKETS)
    starts: list[int] = []
    last_start, last_end = None, 0
    count, damaged = 0, False
    first_frame: av.frame.Frame | None = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            count += 1
            start = packet.pts if packet.pts is not None else packet.dts
            if start is not None:
                starts.append(start)
                if last_start is None or start >= last_start:
                    last_start, last_end = start, start + (packet.duration or 0)
            if packet.pos is not None and packet.pos >= 0 and packet.pos + packet.size > file_size:
                damaged = True
            if first_frame is None:
                first_frame = _decode_first(stream, packet, name)
            _keep_tail(tail, packet, is_video)
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        damaged = True
    if first_frame is None:
        first_frame = _decode_first(stream, None, name)
    elif not _tail_decodes(stream, tail):
        damaged = True

    ticks = np.sort(np.asarray(starts, dtype=np.int64))
    if last_start is not None and last_end <= last_start:
        # No duration on the last packet: assume it lasts as long as a typical one.
        last_end = last_start + (int(np.median(np.diff(ticks))) if ticks.size > 1 else 0)
    return _Scan(
        time_base=stream.time_base or Fraction(1, 1),
        starts=ticks,
        end=last_end,
        packet_count=count,
        damaged=damaged,
        first_frame=first_frame,
    )


def _decode_first(stream: av.stream.Stream, packet: av.Packet | None, name: str) -> av.frame.Frame | None:
    """Feed one packet (None: drain) to the decoder; its first frame, if one came out."""
    try:
        frames = stream.decode(packet)
    except av.error.FFmpegError as exc:
        raise errors.undecodable(name, _codec_name(stream)) from exc
    return frames[0] if frames else None


def _keep_tail(tail: deque[av.Packet], packet: av.Packet, is_video: bool) -> None:
    """Keep the last packets; for video those from the last keyframe on, so they can decode."""
    if not is_video:
        tail.append(packet)
        return
    if packet.is_keyframe:
        tail.clear()
    if len(tail) < _TAIL_VIDEO_PACKETS:
        tail.append(packet)


def _tail_decodes(stream: av.stream.Stream, tail: deque[av.Packet]) -> bool:
    """Whether the kept last packets decode to at least one frame without an error."""
    if not tail:
        return True
    stream.codec_context.flush_buffers()
    frames = 0
    try:
        for packet in tail:
            frames += len(stream.decode(packet))
        frames += len(stream.decode(None))
    except av.error.FFmpegError:
        return False
    return frames > 0


def _looks_cut(container: InputContainer, stream: av.stream.Stream, scan: _Scan, claimed: float | None) -> bool:
    if scan.damaged:
        return True
    if container.format.name in _INDEXED_FORMATS and 0 < scan.packet_count < stream.frames:
        return True
    if claimed is None:
        return False
    return claimed - scan.duration() > max(_MISSING_SECONDS, _MISSING_FRACTION * claimed)


def _audio_info(stream: av.AudioStream, frame: av.AudioFrame | None) -> AudioStreamInfo:
    # A decoded frame knows better than the header (HE-AAC doubles its rate once decoded).
    if frame is not None:
        return AudioStreamInfo(_codec_name(stream), frame.sample_rate, frame.layout.nb_channels)
    context = stream.codec_context
    return AudioStreamInfo(_codec_name(stream), context.sample_rate, context.channels)


def _video_info(stream: av.VideoStream, scan: _Scan, duration: float) -> VideoStreamInfo:
    frame = scan.first_frame
    rotation = _rotation(frame, stream)
    width, height = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
    gaps = np.diff(scan.starts)
    variable = gaps.size >= 2 and float(gaps.max() - gaps.min()) > _VFR_GAP_SPREAD * float(np.median(gaps))
    fps = _frame_rate(stream, scan.packet_count, duration, variable)
    return VideoStreamInfo(
        codec=_codec_name(stream),
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        frame_count=output_frame_count(duration, fps),
        variable_frame_rate=variable,
    )


def _rotation(frame: av.VideoFrame, stream: av.VideoStream) -> int:
    """Clockwise degrees to stand the frames up: from the display matrix the decoder attaches
    to every frame (PyAV reports it counter-clockwise), else from an old-style `rotate` tag."""
    degrees = -frame.rotation if frame.rotation else int(float(stream.metadata.get("rotate", "0") or 0))
    return round(degrees / 90) * 90 % 360


def _frame_rate(stream: av.VideoStream, frames: int, duration: float, variable: bool) -> Fraction:
    measured = Fraction(frames / duration).limit_denominator(1001)
    header = stream.average_rate
    if not variable and header and abs(float(header) - float(measured)) <= _RATE_AGREEMENT * float(measured):
        return header.limit_denominator(1001)
    return measured


def _is_cut_riff_file(path: Path) -> bool:
    """Whether a WAV/AVI declares more bytes than it has. FFmpeg quietly clamps such a stream
    to the bytes present, so its header duration cannot tell."""
    with path.open("rb") as file:
        header = file.read(8)
    if len(header) < 8 or header[:4] != b"RIFF":
        return False
    field = int.from_bytes(header[4:8], "little")
    if field == 0 or field >= _RIFF_PLACEHOLDER_SIZE:
        return False
    declared = field + 8
    return declared - path.stat().st_size > _MISSING_FRACTION * declared


def _is_cut_iso_file(path: Path) -> bool:
    """Whether `path` is an MP4/MOV whose top-level boxes run past its end or lack the index."""
    size = path.stat().st_size
    seen: set[bytes] = set()
    offset = 0
    with path.open("rb") as file:
        while offset + 8 <= size:
            file.seek(offset)
            header = file.read(16)
            box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if not seen and kind not in _ISO_FIRST_BOXES:
                return False
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8 or offset + box_size > size:
                return True
            seen.add(kind)
            offset += box_size
    return bool(seen) and b"moov" not in seen


@dataclass(frozen=True)
class FrameBudget:
    """What one job may decode and render: frame size, and width x height x frames of the template
    (decoded and stored whole) and of the output (rendered frame by frame)."""

    max_width: int
    max_height: int
    max_pixels: int

    @classmethod
    def of(cls, settings: Settings) -> FrameBudget:
        return cls(settings.max_video_width, settings.max_video_height, settings.max_job_pixels)

    def check(self, info: MediaInfo, name: str, output_seconds: float | None = None) -> None:
        """Raises MediaError when `info`'s video exceeds the budget; from the probe, before decoding."""
        video = info.video
        if video is None:
            return
        if video.width > self.max_width or video.height > self.max_height:
            raise errors.frame_too_large(name, video.width, video.height, self.max_width, self.max_height)
        frame = video.width * video.height
        template = frame * video.frame_count
        if template > self.max_pixels:
            raise errors.too_many_pixels(name, "its frames", "画面", template, self.max_pixels)
        if output_seconds is not None:
            output = frame * output_frame_count(output_seconds, video.fps)
            if output > self.max_pixels:
                raise errors.too_many_pixels(
                    name, "the output at this audio's length", "按该音频时长输出的视频", output, self.max_pixels
                )
