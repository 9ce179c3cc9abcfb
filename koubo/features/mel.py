"""Wav2Lip's audio front end: a normalised log-mel spectrogram and the per-frame windows over it.

Neural engines were trained on exactly this recipe (hparams of Wav2Lip's `audio.py`), so every
constant here is part of the model's input contract, not a tuning choice.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import get_window, lfilter

MEL_RATE = 16_000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
MEL_FRAMES_PER_SECOND = 80  # MEL_RATE / HOP

PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MIN_AMPLITUDE = 1e-5

# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above with 27 steps
# per factor 6.4 in frequency.
_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(hz < _BREAK_HZ, linear, logarithmic)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _BREAK_MEL) - _BREAK_MEL))
    return np.where(mel < _BREAK_MEL, linear, logarithmic)


def mel_band_edges(n_mels: int = N_MELS, fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_mels + 2,) Hz: band i rises from edge i, peaks at edge i+1 and falls to edge i+2."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


def mel_filterbank(
    sr: int = MEL_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters, each scaled to unit area (Slaney norm)."""
    edges = mel_band_edges(n_mels, fmin, fmax)
    bins_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    # A triangle of height 1 over [lower, upper] has area (upper - lower) / 2: dividing by it keeps
    # the wide high bands from dominating the narrow low ones.
    return (triangles * (2.0 / (upper - lower))).astype(np.float32)


_FILTERBANK = mel_filterbank().astype(np.float64)
_WINDOW = get_window("hann", WIN, fftbins=True)
_BLOCK_FRAMES = 4096  # STFT frames transformed at once: a half-hour recording has 144 000


def _mel_magnitude(samples: np.ndarray) -> np.ndarray:
    """(N_MELS, 1 + len // HOP) mel-weighted STFT magnitude, frames centred on multiples of HOP
    with reflect-padded ends (librosa's centred STFT)."""
    if samples.size == 0:
        samples = np.zeros(1, dtype=samples.dtype)
    padded = np.pad(samples, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    blocks = [
        _FILTERBANK @ np.abs(np.fft.rfft(frames[i : i + _BLOCK_FRAMES] * _WINDOW, n=N_FFT, axis=1)).T
        for i in range(0, len(frames), _BLOCK_FRAMES)
    ]
    return np.concatenate(blocks, axis=1)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(80, 1 + len // 200) float32 in [-4, 4] from 16 kHz mono samples, as Wav2Lip computes it."""
    # float32 like the decoded audio: a half-hour recording is copied several times on the way.
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    emphasis = np.array([1.0, -PREEMPHASIS], dtype=np.float32)
    mel = _mel_magnitude(lfilter(emphasis, np.ones(1, dtype=np.float32), samples))
    db = 20.0 * np.log10(np.maximum(MIN_AMPLITUDE, mel)) - REF_LEVEL_DB
    scaled = 2 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_windows(mel: np.ndarray, fps: float, n_frames: int, steps: int = 16, first: int = 0) -> np.ndarray:
    """(n_frames - first, 80, steps) float32: the mel columns a neural engine sees for video frames
    first..n_frames-1 (an engine working in batches asks for one batch at a time).

    Window i starts at column int(i * 80 / fps), as in Wav2Lip. A window that would run past the
    end is replaced by the last `steps` columns (Wav2Lip's choice too), so the final frames repeat
    the final sound instead of seeing padding the model was never trained on. A spectrogram shorter
    than `steps` is first extended by repeating its last column.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n_columns = mel.shape[1]
    if n_columns == 0:
        raise ValueError("mel spectrogram has no columns")
    if n_columns < steps:
        mel = np.pad(mel, ((0, 0), (0, steps - n_columns)), mode="edge")
        n_columns = steps
    starts = (np.arange(first, n_frames) * MEL_FRAMES_PER_SECOND / fps).astype(np.int64)
    starts = np.minimum(starts, n_columns - steps)
    columns = starts[:, None] + np.arange(steps)[None, :]
    return np.ascontiguousarray(mel[:, columns].transpose(1, 0, 2), dtype=np.float32)
