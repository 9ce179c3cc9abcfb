"""Noise reduction of the input speech: measured on the mouth targets and on the output's sound track."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from koubo.config import Settings
from koubo.features.denoise import denoise
from koubo.features.mouth import mouth_targets
from koubo.media.audio import ANALYSIS_RATE, decode_mono, write_wav
from koubo.pipeline import GenerateOptions, Generator
from koubo.samples import speech_syllables, synth_speech

from media_fixtures import make_talking_video

SECONDS = 6.0
FPS = 25.0


def hum(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return sum(np.sin(2 * np.pi * 50 * k * t + k) / k for k in (1, 2, 3, 5)).astype(np.float32)


def street(n: int, rate: int) -> np.ndarray:
    """Speech-band noise that swells and fades a few times a second, like passers-by."""
    t = np.arange(n) / rate
    band = lfilter([1, 0, -1], [1, -1.6, 0.8], np.random.default_rng(3).standard_normal(n))
    return (band / np.std(band) * (1 + 0.8 * np.sin(2 * np.pi * 3.3 * t) ** 2)).astype(np.float32)


def noisy_speech(rate: int = ANALYSIS_RATE, snr_db: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy): the synthetic speech with street noise and mains hum at `snr_db`."""
    clean, _ = synth_speech(SECONDS, rate)
    noise = street(clean.size, rate) + 0.5 * hum(clean.size, rate)
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return clean, (clean + gain * noise).astype(np.float32)


def pause_mask(n_frames: int) -> np.ndarray:
    """Frames at least 80 ms away from every syllable of synth_speech."""
    times = (np.arange(n_frames) + 0.5) / FPS
    mask = np.ones(n_frames, dtype=bool)
    for start, end in speech_syllables(SECONDS):
        mask &= (times < start - 0.08) | (times > end + 0.08)
    return mask


def snr(clean: np.ndarray, signal: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(clean**2) / np.sum((signal - clean) ** 2)))


def test_denoising_raises_the_snr_and_keeps_the_length() -> None:
    clean, noisy = noisy_speech()
    cleaned = denoise(noisy, ANALYSIS_RATE)
    assert cleaned.shape == noisy.shape and cleaned.dtype == np.float32
    assert snr(clean, cleaned) > snr(clean, noisy) + 3.0


def test_a_recording_too_short_to_estimate_noise_from_is_left_as_it_is() -> None:
    short = np.full(1000, 0.1, dtype=np.float32)
    assert np.array_equal(denoise(short, ANALYSIS_RATE), short)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("denoise")
    _, noisy = noisy_speech()
    return {
        "speech": write_wav(folder / "noisy.wav", noisy, ANALYSIS_RATE),
        "video": make_talking_video(folder / "face.mp4", seconds=2.0, size=(160, 160)),
    }


def test_the_mouth_rests_in_pauses_when_its_targets_read_the_cleaned_speech(
    files: dict[str, Path], tmp_path: Path
) -> None:
    generator = Generator(Settings(data_dir=tmp_path / "data"))
    n = int(SECONDS * FPS)
    pauses = pause_mask(n)
    moved = {}
    for cleaned in (False, True):
        features, _ = generator.audio_features(files["speech"], cleaned=cleaned)
        aperture = mouth_targets(features.envelope, FPS, n).aperture
        moved[cleaned] = float(aperture[pauses].mean())
    assert moved[False] > 0.05  # the noise alone opens the mouth in pauses
    assert moved[True] < moved[False] / 2


def test_all_cleans_the_output_sound_track_too(files: dict[str, Path], tmp_path: Path) -> None:
    generator = Generator(Settings(data_dir=tmp_path / "data"))
    pause_levels = {}
    for mode in ("mouth", "all"):
        output = tmp_path / f"{mode}.mp4"
        generator.generate(files["speech"], files["video"], output, GenerateOptions(denoise=mode, check=False))
        sound = decode_mono(output, 48_000)
        per_frame = 48_000 // int(FPS)
        frames = sound[: sound.size // per_frame * per_frame].reshape(-1, per_frame)
        quiet = pause_mask(len(frames))
        pause_levels[mode] = float(np.sqrt(np.mean(frames[quiet] ** 2)))
    # "mouth" keeps the original sound (noise in the pauses); "all" hands out the cleaned one.
    assert pause_levels["all"] < pause_levels["mouth"] / 2
