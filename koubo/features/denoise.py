"""Background noise out of a speech recording (fans, street, hum), before the mouth is read from it.

Spectral gating (`noisereduce`, no model to download): each frequency's noise floor is estimated
from the recording's own pauses (found by the speech-activity detector the mouth uses) and what
stays below it is attenuated. The settings were chosen by bench/denoise.py over fan, street and
mains-hum noise at 0, 5 and 10 dB SNR: a floor from the pauses beat one from the whole recording
(which counts speech as noise), and noisereduce's default mask smoothing (500 Hz) attenuates the
lowest bins, where voices' fundamentals are, so it is kept narrow. DeepFilterNet, the neural
alternative, fetches its model at run time, which koubo never does.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from scipy.ndimage import binary_dilation

from koubo.features.mouth import analyse_speech

# Attenuate noise by this share: deeper gating (0.9+) leaves bursts of residual noise standing out
# of near silence, which the speech detector then takes for speech (bench/denoise.py, rest ratio).
PROP_DECREASE = 0.75
# A bin counts as noise below the pauses' mean + this many standard deviations of its level.
THRESHOLD_STD = 1.0
FREQ_SMOOTH_HZ = 64
TIME_SMOOTH_MS = 32
# Analysis window: 64 ms at any rate (1024 samples at 16 kHz), so bins stay ~16 Hz wide.
WINDOW_S = 0.064
# Pauses closer than this to speech are left out of the noise estimate (breaths, word ends).
_PAUSE_MARGIN_FRAMES = 5  # of 10 ms
# Below this much pause, the floor is estimated from the whole recording instead.
_MIN_PAUSE_S = 0.5


class Denoise(StrEnum):
    """Per job: off; only the mouth reads cleaned speech; or the output's sound track is cleaned too."""

    off = "off"
    mouth = "mouth"
    all = "all"


def denoise(samples: np.ndarray, rate: int) -> np.ndarray:
    """`samples` (mono float32) with stationary background noise attenuated; same length and rate."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.size < 2048:  # shorter than one analysis window: nothing to estimate a floor from
        return samples
    # Imported here: noisereduce imports torch (~200 MB resident), which a job without denoising
    # should not carry.
    import noisereduce

    cleaned = noisereduce.reduce_noise(
        y=samples,
        sr=rate,
        stationary=True,
        y_noise=_pauses(samples, rate),
        prop_decrease=PROP_DECREASE,
        n_std_thresh_stationary=THRESHOLD_STD,
        freq_mask_smooth_hz=FREQ_SMOOTH_HZ,
        time_mask_smooth_ms=TIME_SMOOTH_MS,
        n_fft=2 * round(WINDOW_S * rate / 2),
    )
    return np.clip(cleaned, -1.0, 1.0).astype(np.float32)


def _pauses(samples: np.ndarray, rate: int) -> np.ndarray | None:
    """The recording's samples away from speech, or None when there is too little of them."""
    speech = analyse_speech(samples, rate).speech
    quiet = ~binary_dilation(speech, iterations=_PAUSE_MARGIN_FRAMES)
    per_frame = rate // 100
    mask = np.repeat(quiet, per_frame)[: samples.size]
    mask = np.pad(mask, (0, samples.size - mask.size))
    return samples[mask] if mask.sum() >= _MIN_PAUSE_S * rate else None
