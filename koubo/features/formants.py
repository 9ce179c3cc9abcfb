"""The first two formants every 10 ms, by linear prediction (LPC), for any language.

F1 rises as the jaw and lips open (/a/ high, /i/ /u/ low); F2 rises as the lips spread and the
tongue moves forward (/i/ high) and falls as they round (/u/ /o/ low). Each 25 ms frame is
modelled as an all-pole filter; the poles' angles are the resonances, and the two lowest
resonances that are narrow enough to be formants are F1 and F2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import get_window, resample_poly

FORMANT_RATE = 100  # Hz, the speech envelope's frame rate

_RATE = 10_000  # formants of interest lie below 3.5 kHz; 10 kHz keeps the LPC order small
_HOP = _RATE // FORMANT_RATE
_WIN = 250  # 25 ms
_ORDER = 12  # two poles per kHz of bandwidth, plus two for the glottal and radiation tilt
_PREEMPHASIS = 0.7
_MIN_HZ = 200.0
_MAX_BANDWIDTH_HZ = 500.0
_BLOCK_FRAMES = 4096


@dataclass(frozen=True)
class Formants:
    """F1 and F2 every 1 / FORMANT_RATE s, frame k centred on (k + 0.5) * 10 ms."""

    f1: np.ndarray  # (T,) float32 Hz, NaN where a frame has no clear resonance (silence, noise)
    f2: np.ndarray  # (T,) float32 Hz, NaN likewise


def _levinson(ac: np.ndarray, order: int) -> np.ndarray:
    """(T, order + 1) prediction polynomials from (T, order + 1) autocorrelations, all frames at once."""
    frames = ac.shape[0]
    a = np.zeros((frames, order + 1))
    a[:, 0] = 1.0
    error = ac[:, 0].copy()
    for i in range(1, order + 1):
        reflection = -(a[:, :i] * ac[:, i:0:-1]).sum(axis=1) / np.maximum(error, 1e-12)
        a[:, 1 : i + 1] = a[:, 1 : i + 1] + reflection[:, None] * a[:, i - 1 :: -1][:, :i]
        error *= 1.0 - reflection**2
    return a


def _two_lowest(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 and F2 (Hz, NaN where not found) from prediction polynomials."""
    order = a.shape[1] - 1
    companion = np.zeros((a.shape[0], order, order))
    companion[:, 0, :] = -a[:, 1:]
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    roots = np.linalg.eigvals(companion)
    hz = np.angle(roots) * _RATE / (2 * np.pi)
    bandwidth = -np.log(np.maximum(np.abs(roots), 1e-9)) * _RATE / np.pi
    usable = (hz > _MIN_HZ) & (bandwidth < _MAX_BANDWIDTH_HZ)
    candidates = np.sort(np.where(usable, hz, np.inf), axis=1)
    f1, f2 = candidates[:, 0], candidates[:, 1]
    return np.where(np.isfinite(f1), f1, np.nan), np.where(np.isfinite(f2), f2, np.nan)


def track_formants(samples: np.ndarray, n_frames: int, sample_rate: int = 16_000) -> Formants:
    """F1 and F2 of n_frames 10 ms frames of mono samples."""
    samples = np.asarray(samples, dtype=np.float64).reshape(-1)
    common = np.gcd(int(sample_rate), _RATE)
    samples = resample_poly(samples, _RATE // common, int(sample_rate) // common)
    samples = np.append(samples[0] if len(samples) else 0.0, samples[1:] - _PREEMPHASIS * samples[:-1])
    left = _WIN // 2 - _HOP // 2
    padded = np.pad(samples, (left, _WIN + n_frames * _HOP))
    view = np.lib.stride_tricks.sliding_window_view(padded, _WIN)[::_HOP][:n_frames]
    window = get_window("hamming", _WIN)
    f1s, f2s = [], []
    for start in range(0, n_frames, _BLOCK_FRAMES):
        frames = view[start : start + _BLOCK_FRAMES] * window
        spectrum = np.abs(np.fft.rfft(frames, n=2 * _WIN, axis=1)) ** 2
        ac = np.fft.irfft(spectrum, axis=1)[:, : _ORDER + 1]
        ac[:, 0] *= 1.0 + 1e-9  # a touch of white noise keeps silent frames solvable
        silent = ac[:, 0] <= 1e-10
        f1, f2 = _two_lowest(_levinson(np.where(silent[:, None], np.eye(1, _ORDER + 1), ac), _ORDER))
        f1s.append(np.where(silent, np.nan, f1))
        f2s.append(np.where(silent, np.nan, f2))
    if not f1s:
        return Formants(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32))
    return Formants(np.concatenate(f1s).astype(np.float32), np.concatenate(f2s).astype(np.float32))
