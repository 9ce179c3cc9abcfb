"""Media files generated at test time: a moving real face, synthetic speech, and broken inputs.

Everything is written with PyAV (no ffmpeg binary) and is deterministic, so tests can assert on
known structure: where the syllables are, how long the silences last, which frame is where.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.stream import Disposition

# The demo's sample face and speech are the tests' too; speech_syllables is their ground truth.
from koubo.samples import _SEED, FACE_SIZE, face_image, speech_syllables, synth_speech, talking_frame  # noqa: F401

# Default codec for each container make_speech writes; PCM WAV depends on the sample format.
_AUDIO_CODECS = {
    "mp3": "libmp3lame",
    "ipod": "aac",
    "mp4": "aac",
    "adts": "aac",
    "flac": "flac",
    "ogg": "libopus",
    "asf": "wmav2",
    "amr": "libopencore_amrnb",
    "matroska": "libopus",
}
_WAV_CODECS = {"s16": "pcm_s16le", "s24": "pcm_s24le", "flt": "pcm_f32le"}
_LAYOUTS = {1: "mono", 2: "stereo", 4: "quad", 6: "5.1"}


def vfr_timestamps(seconds: float) -> list[Fraction]:
    """Frame times alternating 1/15 s and 1/30 s gaps (20 fps on average)."""
    times: list[Fraction] = []
    t = Fraction(0)
    while t < seconds:
        times.append(t)
        t += Fraction(1, 15) if len(times) % 2 else Fraction(1, 30)
    return times


def make_talking_video(
    path: str | Path,
    *,
    seconds: float = 2.0,
    fps: int = 25,
    size: tuple[int, int] = (FACE_SIZE, FACE_SIZE),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container: str | None = None,
    rotation: int = 0,
    vfr: bool = False,
    with_audio: bool = False,
    faststart: bool = False,
) -> Path:
    """Write a video of the moving face; `size` is (width, height) as displayed.

    `rotation` is the clockwise turn a player must apply (the phone's `rotate` tag): the frames
    are stored turned the other way and a display matrix says how to stand them up. `vfr`
    alternates 1/15 s and 1/30 s frame gaps in a 1/90000 time base.
    """
    path = Path(path)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stored_w, stored_h = size if rotation % 180 == 0 else size[::-1]
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, pix_fmt
        if rotation:
            # PyAV counts counter-clockwise (as VideoFrame.rotation reads it back).
            stream.set_display_rotation(-rotation)
        time_base = Fraction(1, 90000) if vfr else Fraction(1, fps)
        stream.codec_context.time_base = stream.time_base = time_base
        times = vfr_timestamps(seconds) if vfr else [Fraction(i, fps) for i in range(round(seconds * fps))]
        audio = _add_aac(out) if with_audio else None
        for t in times:
            upright = talking_frame(float(t), size)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(upright, rotation // 90)), format="rgb24")
            frame.time_base = time_base
            frame.pts = round(t / time_base)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio is not None:
            samples, _ = synth_speech(seconds, audio.rate)
            _encode_audio(out, audio, samples[None, :])
    return path


def _add_aac(out: av.container.OutputContainer) -> av.AudioStream:
    stream = out.add_stream("aac", rate=44100)
    stream.layout = "mono"
    return stream


def make_speech(
    path: str | Path,
    *,
    seconds: float = 3.0,
    rate: int = 16000,
    channels: int = 1,
    sample_format: str = "s16",
    container: str = "wav",
    codec: str | None = None,
) -> Path:
    """Write synth_speech to `path`. container is a PyAV format name (wav, mp3, ipod for m4a,
    flac, ogg, asf for wma, amr); sample_format picks the PCM WAV codec: s16, s24 or flt.
    More than one channel: the later channels are the voice at 0.8, 0.6... of the level.
    """
    path = Path(path)
    codec = codec or (_WAV_CODECS[sample_format] if container == "wav" else _AUDIO_CODECS[container])
    samples, _ = synth_speech(seconds, rate)
    planes = np.stack([samples * (1.0 - 0.2 * c) for c in range(channels)])
    with av.open(str(path), "w", format=container) as out:
        options = {"strict": "experimental"} if codec == "vorbis" else {}
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.layout = _LAYOUTS[channels]
        if codec == "wmav2":
            stream.bit_rate = 64000 * channels  # the WMA encoder refuses to guess one
        _encode_audio(out, stream, planes)
    return path


def _encode_audio(out: av.container.OutputContainer, stream: av.AudioStream, planes: np.ndarray) -> None:
    """Encode float planes (channels, samples), converted to what the encoder takes."""
    channels, total = planes.shape
    resampler = av.AudioResampler(
        format=stream.codec_context.codec.audio_formats[0].name,
        layout=stream.layout.name,
        rate=stream.rate,
        frame_size=stream.codec_context.frame_size or 1024,
    )
    layout = _LAYOUTS[channels]
    step = 4096
    for offset in range(0, total, step):
        chunk = np.ascontiguousarray(planes[:, offset : offset + step], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = stream.rate
        frame.pts = offset
        for converted in resampler.resample(frame):
            out.mux(stream.encode(converted))
    for converted in resampler.resample(None):
        out.mux(stream.encode(converted))
    out.mux(stream.encode(None))


def make_mp3_with_cover_art(path: str | Path, *, seconds: float = 1.5) -> Path:
    """An MP3 whose only video stream is an attached picture (album art)."""
    path = Path(path)
    with av.open(str(path), "w", format="mp3") as out:
        audio = out.add_stream("libmp3lame", rate=44100)
        audio.layout = "mono"
        cover = out.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.codec_context.time_base = Fraction(1, 1)
        cover.disposition = Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(cv2.resize(face_image(), (64, 64)), format="rgb24")
        picture.pts = 0
        out.mux(cover.encode(picture) + cover.encode(None))
        samples, _ = synth_speech(seconds, audio.rate)
        _encode_audio(out, audio, samples[None, :])
    return path


def espeak_speech(path: str | Path, text: str, voice: str = "en", *, streamed: bool = False) -> Path | None:
    """Real synthetic speech from espeak-ng (a WAV), or None where espeak-ng is not installed.
    `streamed`: as `espeak-ng --stdout` writes it into a pipe, its sizes left as placeholders."""
    binary = shutil.which("espeak-ng") or ("/usr/bin/espeak-ng" if os.path.exists("/usr/bin/espeak-ng") else None)
    if binary is None:
        return None
    path = Path(path)
    if streamed:
        spoken = subprocess.run([binary, "-v", voice, "--stdout", text], check=True, capture_output=True, timeout=60)
        path.write_bytes(spoken.stdout)
    else:
        subprocess.run([binary, "-v", voice, "-w", str(path), text], check=True, capture_output=True, timeout=60)
    return path


def as_streamed_wav(path: str | Path, riff_size: int = 0x7FFFF024, data_size: int = 0x7FFFF000) -> Path:
    """Rewrite a PCM WAV's RIFF and data sizes as a writer streaming into a pipe leaves them (it
    cannot seek back to fill them in); the defaults are espeak-ng --stdout's."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    data[4:8] = riff_size.to_bytes(4, "little")
    at = data.index(b"data", 12)
    data[at + 4 : at + 8] = data_size.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def write_text_file(path: str | Path) -> Path:
    """A text file (name it .mp4 to check that content, not the extension, decides)."""
    path = Path(path)
    path.write_text("This is not a video.\n这不是视频。\n" * 40, encoding="utf-8")
    return path


def write_empty_file(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_random_bytes(path: str | Path, size: int = 64 * 1024) -> Path:
    path = Path(path)
    path.write_bytes(np.random.default_rng(_SEED).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def make_truncated_mp4(path: str | Path, *, faststart: bool, keep: float = 0.6) -> Path:
    """A talking video with audio cut to `keep` of its bytes. With faststart the index survives
    and the media data is lost; without it (moov at the end) the index itself is lost."""
    path = Path(path)
    whole = path.with_name(f"whole-{path.name}")
    make_talking_video(whole, seconds=2.0, size=(128, 128), with_audio=True, faststart=faststart)
    data = whole.read_bytes()
    whole.unlink()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def wav_format_tag(path: str | Path) -> int:
    """The WAVE format tag of a RIFF file's fmt chunk: 1 PCM, 3 float, 0xFFFE extensible."""
    data = Path(path).read_bytes()
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"fmt ":
            return int.from_bytes(data[offset + 8 : offset + 10], "little")
        offset += 8 + size + (size & 1)
    raise ValueError(f"{path} has no fmt chunk")


# The sample face's mesh spans about this share of talking_frame's side (x 68..188 of 256).
FACE_SHARE = 120 / FACE_SIZE


def face_on_canvas(
    t: float, face_width: int, canvas: tuple[int, int] = (1080, 1920), at: tuple[int, int] = (400, 900)
) -> tuple[np.ndarray, float]:
    """talking_frame(t) scaled so its face is `face_width` pixels wide, its top-left corner at `at`
    on a `canvas` (width, height) of soft gradients; also the scale, so a test can map the full-size
    face's landmarks to where they must be found: landmarks * scale + at."""
    width, height = canvas
    side = round(face_width / FACE_SHARE)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = 60 + 80 * xx / width
    frame[..., 1] = 90 + 60 * yy / height
    frame[..., 2] = 110
    face = cv2.resize(talking_frame(t), (side, side), interpolation=cv2.INTER_AREA)
    x, y = at
    frame[y : y + side, x : x + side] = face
    return frame, side / FACE_SIZE


def hand_over_mouth(frame: np.ndarray) -> np.ndarray:
    """A 256-pixel talking_frame with a flat skin-toned, hand-like patch (four finger creases) over
    the lips and chin, as when a speaker touches their mouth."""
    out = frame.copy()
    cv2.ellipse(out, (128, 174), (62, 32), -10, 0, 360, (214, 160, 130), -1)
    for k in range(4):
        cv2.line(out, (75 + 28 * k, 154), (90 + 28 * k, 197), (170, 115, 90), 3)
    return out


def write_frames(path: str | Path, frames: np.ndarray, fps: int = 25) -> Path:
    """Encode RGB frames (N, H, W, 3) as an H.264 MP4 with PyAV, nearly losslessly (CRF 12)."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "ultrafast"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode(None))
    return path
