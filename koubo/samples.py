"""Sample inputs made on the spot: a real face photo that moves a little, and speech-like sound.

The face is NASA's public-domain portrait of astronaut Eileen Collins, which scikit-image ships
inside its wheel (nothing is downloaded). The speech is synthesized: glottal pulses through vowel
formants, syllables with plosive onsets, two phrases around a long pause. `koubo demo` uses these,
and so do the tests, which rely on the speech's known structure.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.signal import lfilter

_SEED = 20240611

# Centre and side of the square crop around the astronaut's face in skimage's 512x512 image;
# the face mesh spans about x 178-272, y 72-175 there.
_FACE_CENTRE = (225, 118)
_FACE_CROP = 200
FACE_SIZE = 256

# (F1, F2, F3) in Hz, textbook averages for an adult speaker.
_FORMANTS: dict[str, tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),
    "i": (270.0, 2290.0, 3010.0),
    "u": (300.0, 870.0, 2240.0),
    "o": (570.0, 840.0, 2410.0),
}
_LEAD_SILENCE = 0.3
_MIDDLE_SILENCE = 0.9
_MIN_PHRASE = 0.3
_BURST = 0.012
_CLOSURE = 0.03


@lru_cache(maxsize=1)
def _face_crop() -> np.ndarray:
    from skimage.data import astronaut

    cx, cy = _FACE_CENTRE
    half = _FACE_CROP // 2
    crop = astronaut()[cy - half : cy + half, cx - half : cx + half]
    return cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)


def face_image() -> np.ndarray:
    """RGB uint8 256x256 picture of a real face (the astronaut Eileen Collins) filling the frame."""
    return _face_crop().copy()


def talking_frame(t: float, size: tuple[int, int] = (FACE_SIZE, FACE_SIZE)) -> np.ndarray:
    """The face at time `t`, `size` = (width, height), moved a few pixels and tilted ~1.5 degrees.

    Incommensurate periods keep consecutive frames distinct, so a test can tell frames apart.
    """
    width, height = size
    base = cv2.resize(_face_crop(), (width, height), interpolation=cv2.INTER_AREA)
    scale = min(width, height) / FACE_SIZE
    dx = 3.0 * scale * np.sin(2 * np.pi * t / 1.3)
    dy = 2.0 * scale * np.sin(2 * np.pi * t / 1.7 + 0.5)
    angle = 1.5 * np.sin(2 * np.pi * t / 2.1)
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(base, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def _syllable_plan(seconds: float) -> list[tuple[float, float, str, float]]:
    """(start, end, vowel, pitch) of every syllable: two phrases around a 0.9 s pause from
    2.1 s on, one phrase in shorter clips; 0.3 s of silence at both ends."""
    rng = np.random.default_rng(_SEED)
    speech = seconds - 2 * _LEAD_SILENCE - _MIDDLE_SILENCE
    if speech >= 2 * _MIN_PHRASE:
        phrase_starts = (_LEAD_SILENCE, _LEAD_SILENCE + speech / 2 + _MIDDLE_SILENCE)
        phrase_ends = (_LEAD_SILENCE + speech / 2, seconds - _LEAD_SILENCE)
    else:
        phrase_starts, phrase_ends = (_LEAD_SILENCE,), (seconds - _LEAD_SILENCE,)
    vowels = "aiuo"
    plan: list[tuple[float, float, str, float]] = []
    for start, end in zip(phrase_starts, phrase_ends):
        t = start
        while True:
            length = float(rng.uniform(0.15, 0.3))
            if t + length > end:
                break
            vowel = vowels[len(plan) % 4] if rng.random() < 0.7 else vowels[int(rng.integers(4))]
            plan.append((t, t + length, vowel, float(rng.uniform(120, 200))))
            t += length + float(rng.uniform(0.03, 0.08))
    return plan


def speech_syllables(seconds: float = 3.0) -> list[tuple[float, float]]:
    """Ground truth of make_speech/synth_speech: (start, end) seconds of each syllable."""
    return [(start, end) for start, end, _, _ in _syllable_plan(seconds)]


def synth_speech(seconds: float = 3.0, rate: int = 16000) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speech-like float32 mono signal (peak 0.5) and its syllable intervals.

    Each syllable: a short noise burst (plosive), a closure gap, then a voiced vowel: a glottal
    pulse train at 120-200 Hz with 5.5 Hz vibrato through three formant resonators.
    """
    rng = np.random.default_rng(_SEED + 1)
    signal = np.zeros(round(seconds * rate), dtype=np.float64)
    for start, end, vowel, pitch in _syllable_plan(seconds):
        burst = rng.standard_normal(round(_BURST * rate)) * np.hanning(round(_BURST * rate)) * 0.3
        first = round(start * rate)
        signal[first : first + burst.size] += np.diff(burst, prepend=0.0)
        voiced = slice(round((start + _BURST + _CLOSURE) * rate), round(end * rate))
        signal[voiced] += _vowel(voiced.stop - voiced.start, vowel, pitch, rate)
    peak = np.abs(signal).max()
    if peak > 0:
        signal *= 0.5 / peak
    return signal.astype(np.float32), speech_syllables(seconds)


def _vowel(n: int, vowel: str, pitch: float, rate: int) -> np.ndarray:
    duration = n / rate
    t = np.arange(n) / rate
    f0 = pitch * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t)) * (1 - 0.1 * t / duration)
    phase = np.cumsum(f0) / rate
    pulses = np.diff(np.floor(phase), prepend=0.0)
    # A leaky integrator tilts the pulse spectrum down like a real glottal source.
    source = lfilter([1.0], [1.0, -0.95], pulses)
    voiced = source
    for formant, bandwidth in zip(_FORMANTS[vowel], (80.0, 100.0, 140.0)):
        # Narrowband rates (AMR's 8 kHz) cannot carry a formant near Nyquist.
        if formant < rate / 2 - bandwidth:
            voiced = _resonate(voiced, formant, bandwidth, rate)
    envelope = np.minimum(1.0, np.minimum(t / 0.02, (duration - t) / 0.03))
    return voiced * np.clip(envelope, 0.0, 1.0)


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float, rate: int) -> np.ndarray:
    radius = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * frequency / rate
    a = [1.0, -2 * radius * np.cos(theta), radius**2]
    return lfilter([sum(a)], a, signal)


def write_sample_speech(path: str | Path, seconds: float = 6.0, rate: int = 16000) -> Path:
    """synth_speech as a 16-bit mono WAV."""
    path = Path(path)
    samples, _ = synth_speech(seconds, rate)
    pcm = np.round(samples * 32767).astype(np.int16)[None, :]
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_sample_template(path: str | Path, seconds: float = 4.0, fps: int = 25, size: int = 512) -> Path:
    """The moving face as an H.264 MP4 without sound, a template like a user's."""
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(talking_frame(i / fps, (size, size)), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
