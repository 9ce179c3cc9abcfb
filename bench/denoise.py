"""Cleaner input audio: SNR gained, mouth movement in pauses, and the time denoising adds.

    .venv/bin/python bench/denoise.py

Clean speech (../shared/media/speech_en_44k.wav and speech_zh_48k_stereo.wav when present, else
espeak-ng speech) is mixed with recorded-style noise — a fan (low-passed pink noise with a blade
whine), a street (traffic rumble and babble-like modulated noise) and mains hum (50 Hz and its
harmonics) — at 0, 5 and 10 dB SNR. For no denoising and each variant it prints:

- SNR gain: SNR of the output against the clean speech, minus the input's;
- rest ratio: mean mouth aperture in the clean speech's pauses over that in its speech (the
  mouth should rest in pauses: lower is better; the clean recording's own figure is the floor);
- seconds of processing per minute of audio.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import noisereduce
import numpy as np
from scipy.signal import lfilter

from koubo.features.denoise import denoise
from koubo.features.mouth import analyse_speech, mouth_targets
from koubo.media.audio import ANALYSIS_RATE, load_audio

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
FPS = 25.0
RATE = ANALYSIS_RATE


def speeches() -> dict[str, np.ndarray]:
    found = {p.stem: load_audio(p).samples for p in (SHARED / "speech_en_44k.wav", SHARED / "speech_zh_48k_stereo.wav") if p.is_file()}
    if found:
        return found
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from media_fixtures import make_speech

    folder = Path(tempfile.mkdtemp())
    return {"espeak": load_audio(make_speech(folder / "speech.wav", seconds=20.0)).samples}


def noises(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(n) / RATE
    white = rng.standard_normal(n)
    # Pink noise by Paul Kellet's filter, low-passed: the broadband rush of a fan, plus its blade tone.
    pink = lfilter([0.049922035, -0.095993537, 0.050612699, -0.004408786], [1, -2.494956002, 2.017265875, -0.522189400], white)
    fan = lfilter([0.15], [1, -0.85], pink) + 0.05 * np.sin(2 * np.pi * 180 * t)
    # Traffic: brown rumble; passers-by: speech-band noise that swells and fades at syllable rate.
    rumble = np.cumsum(white)
    rumble -= lfilter([1], [1, -0.999], rumble) * 0.001
    rumble = lfilter([0.05], [1, -0.95], np.diff(rumble, prepend=0))
    babble = lfilter([1, 0, -1], [1, -1.6, 0.8], rng.standard_normal(n)) * (1 + 0.8 * np.sin(2 * np.pi * 3.3 * t) ** 2)
    street = rumble / np.std(rumble) + 0.6 * babble / np.std(babble)
    hum = sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in (1, 2, 3, 5, 7))
    return {"fan": fan, "street": street, "hum": hum}


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return (clean + gain * noise).astype(np.float32)


def snr(clean: np.ndarray, signal: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(clean**2) / max(np.sum((signal - clean) ** 2), 1e-12)))


def rest_ratio(samples: np.ndarray, pauses: np.ndarray) -> float:
    env = analyse_speech(samples, RATE)
    aperture = mouth_targets(env, FPS, len(pauses)).aperture
    return float(aperture[pauses].mean() / max(aperture[~pauses].mean(), 1e-6))


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda y: y,
    "koubo (floor from pauses)": lambda y: denoise(y, RATE),
    "noisereduce defaults": lambda y: noisereduce.reduce_noise(y=y, sr=RATE, stationary=True),
    "non-stationary defaults": lambda y: noisereduce.reduce_noise(y=y, sr=RATE, stationary=False),
}


def main() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for name, clean in speeches().items():
        clean_env = analyse_speech(clean, RATE)
        n_frames = int(len(clean) / RATE * FPS)
        pauses = ~mouth_targets(clean_env, FPS, n_frames).speech
        floor = rest_ratio(clean, pauses)
        for noise_name, noise in noises(len(clean), rng).items():
            for snr_db in (0, 5, 10):
                noisy = mix(clean, noise, snr_db)
                for variant, run in VARIANTS.items():
                    start = time.perf_counter()
                    out = run(noisy)
                    seconds = time.perf_counter() - start
                    per_minute = seconds / (len(clean) / RATE) * 60
                    gain = snr(clean, out) - snr(clean, noisy)
                    rows.append((name, noise_name, snr_db, variant, gain, rest_ratio(out, pauses), floor, per_minute))
    print(f"{'speech':<22}{'noise':<8}{'SNR in':>7}  {'variant':<26}{'SNR gain dB':>12}{'rest ratio':>11}{'clean':>7}{'s/min':>7}")
    for name, noise_name, snr_db, variant, gain, ratio, floor, per_minute in rows:
        print(f"{name:<22}{noise_name:<8}{snr_db:>7}  {variant:<26}{gain:>12.1f}{ratio:>11.2f}{floor:>7.2f}{per_minute:>7.2f}")
    print("\nmeans over speeches, noises and SNRs:")
    for variant in VARIANTS:
        mine = [r for r in rows if r[3] == variant]
        print(
            f"  {variant:<26} SNR gain {np.mean([r[4] for r in mine]):5.1f} dB, rest ratio "
            f"{np.mean([r[5] for r in mine]):.2f} (clean {np.mean([r[6] for r in mine]):.2f}), "
            f"{np.mean([r[7] for r in mine]):.2f} s per minute of audio"
        )


if __name__ == "__main__":
    main()
