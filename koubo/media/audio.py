"""Decode any speech recording to the 16 kHz mono float32 signal the analysis stages read."""

from __future__ import annotations

import os
import tempfile
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from koubo import errors
from koubo.media.probe import pick_audio_stream, probe

ANALYSIS_RATE = 16_000

# Without a ceiling, libswresample sums float channels unscaled (stereo -> mono peaks at 1.41);
# 1.0 makes the downmix an average, so the signal stays within [-1, 1].
_DOWNMIX_OPTIONS = {"rematrix_maxval": "1.0"}


@dataclass(frozen=True)
class Audio:
    path: Path  # the original file, kept for the output's audio track
    samples: np.ndarray  # float32 mono at ANALYSIS_RATE, about [-1, 1]
    duration: float  # seconds of decoded audio


def load_audio(path: str | Path, *, max_duration: float | None = None, display_name: str | None = None) -> Audio:
    """Validate `path` as speech (probe) and decode it to ANALYSIS_RATE mono float32."""
    path = Path(path)
    name = display_name or path.name
    probe(path, expect="audio", max_duration=max_duration, display_name=name)
    try:
        chunks = list(_decode_mono(path, ANALYSIS_RATE))
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        raise errors.truncated(name) from exc
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise errors.empty_media(name)
    return Audio(path=path, samples=samples, duration=samples.size / ANALYSIS_RATE)


def decode_mono(path: str | Path, rate: int) -> np.ndarray:
    """The whole recording as float32 mono at `rate` (for a sound track to process, not analysis)."""
    chunks = list(_decode_mono(Path(path), rate))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def _decode_mono(path: Path, rate: int) -> Iterator[np.ndarray]:
    with av.open(str(path), metadata_errors="ignore") as container:
        frames = container.decode(pick_audio_stream(container))
        for frame in resample_audio(frames, sample_format="flt", layout="mono", rate=rate):
            yield frame.to_ndarray().reshape(-1)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit mono WAV of float samples in [-1, 1], written under a temporary name and renamed."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file, wave.open(file, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(pcm.tobytes())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def resample_audio(
    frames: Iterable[av.AudioFrame], *, sample_format: str, layout: str, rate: int
) -> Iterator[av.AudioFrame]:
    """Convert decoded frames to one sample format, layout and rate, downmixing by averaging.

    A stream may change its format mid-way (concatenated MP3s, AAC switching layouts): each
    change gets a new resampler, the previous one flushed first so no samples are lost.
    """
    resampler, source = None, None
    for frame in frames:
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if shape != source:
            if resampler is not None:
                yield from resampler.resample(None)
            resampler, source = av.AudioResampler(sample_format, layout, rate, options=_DOWNMIX_OPTIONS), shape
        yield from resampler.resample(frame)
    if resampler is not None:
        yield from resampler.resample(None)
