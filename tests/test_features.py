"""Audio features: Wav2Lip's mel front end, the speech envelope and the mouth targets made from it.

The speech-like signals are synthesised here: a glottal pulse train through three formant
resonators, shaped into syllables at known times, so every expectation has a known answer.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scipy.signal import butter, lfilter, sosfilt

from koubo.features import compute_audio_features
from koubo.features.formants import track_formants
from koubo.features.mel import (
    MEL_FRAMES_PER_SECOND,
    log_mel,
    mel_band_edges,
    mel_filterbank,
    mel_windows,
)
from koubo.features.mouth import (
    ENVELOPE_RATE,
    SpeechEnvelope,
    analyse_speech,
    frame_loudness,
    mouth_targets,
)

SR = 16_000

# --- signal synthesis -------------------------------------------------------------------------

FORMANTS = {  # F1, F2, F3 in Hz
    "a": (750.0, 1200.0, 2500.0),
    "o": (450.0, 850.0, 2500.0),
    "u": (300.0, 800.0, 2300.0),  # rounded: low F2
    "e": (400.0, 2000.0, 2600.0),
    "i": (280.0, 2300.0, 3000.0),  # spread: high F2
}


def resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    radius = np.exp(-np.pi * bandwidth / SR)
    theta = 2 * np.pi * freq / SR
    gain = (1 - radius) * np.sqrt(1 - 2 * radius * np.cos(2 * theta) + radius**2)
    return lfilter([gain], [1, -2 * radius * np.cos(theta), radius**2], x)


def fade(n: int, attack_s: float, release_s: float) -> np.ndarray:
    shape = np.ones(n)
    a, r = int(attack_s * SR), int(release_s * SR)
    shape[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    shape[n - r :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(r) / r)
    return shape


def vowel(seconds: float, name: str, f0: float = 120.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    pulses = np.diff(np.floor(np.cumsum(pitch / SR)), prepend=0.0)
    # Glottal roll-off (-12 dB/octave), then lip radiation (+6 dB/octave).
    source = lfilter([1, -1], [1], lfilter([1], [1, -0.95], lfilter([1], [1, -0.95], pulses)))
    out = source
    for freq, bandwidth in zip(FORMANTS[name], (80.0, 100.0, 150.0)):
        out = resonator(out, freq, bandwidth)
    out *= fade(len(out), 0.03, 0.05)
    return 0.1 * out / np.sqrt(np.mean(out**2))


def burst(seconds: float, rng: np.random.Generator) -> np.ndarray:
    noise = sosfilt(butter(4, 2000, "hp", fs=SR, output="sos"), rng.standard_normal(int(seconds * SR)))
    return 0.03 * noise * fade(len(noise), 0.002, 0.005)


def mix(events: list[tuple[float, np.ndarray]], total_s: float, noise_db: float = -75.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = rng.standard_normal(int(total_s * SR)) * 10 ** (noise_db / 20)
    for start_s, sound in events:
        i = int(start_s * SR)
        out[i : i + len(sound)] += sound
    return out.astype(np.float32)


SYLLABLE_S = 0.2
SILENCE = (1.4, 2.5)  # 1.1 s without speech
CLOSURE = (2.7, 2.76)  # /a/ ends, 60 ms of closure, then the burst of a /p/ and another /a/
BURST_S = 0.015
SYLLABLES = [  # (start s, vowel)
    (0.3, "a"),
    (0.6, "u"),
    (0.9, "i"),
    (1.2, "o"),
    (SILENCE[1], "a"),
    (CLOSURE[1] + BURST_S, "a"),
    (3.1, "e"),
    (3.35, "u"),
]
TOTAL_S = 3.6


@lru_cache(maxsize=1)
def speech_like() -> np.ndarray:
    events = [(start, vowel(SYLLABLE_S, name)) for start, name in SYLLABLES]
    events.append((CLOSURE[1], burst(BURST_S, np.random.default_rng(1))))
    return mix(events, TOTAL_S)


def nucleus_starts(*names: str) -> list[float]:
    return [start for start, name in SYLLABLES if name in names]


@lru_cache(maxsize=1)
def speech_envelope() -> SpeechEnvelope:
    return analyse_speech(speech_like())


def frame_centres(fps: float, n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / fps


def n_frames(fps: float) -> int:
    return int(round(TOTAL_S * fps))


def lagged_correlation(a: np.ndarray, b: np.ndarray, lag: int) -> float:
    """Pearson correlation of a[t] with b[t + lag]."""
    n = len(a)
    return float(np.corrcoef(a[max(0, -lag) : n - max(0, lag)], b[max(0, lag) : n + min(0, lag)])[0, 1])


# --- mel --------------------------------------------------------------------------------------


def slaney_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz < 1000, 3 * hz / 200, 15 + 27 * np.log(np.maximum(hz, 1e-9) / 1000) / np.log(6.4))


def test_log_mel_has_80_bands_and_one_column_per_hop_plus_one() -> None:
    mel = log_mel(np.zeros(SR, dtype=np.float32))
    assert mel.shape == (80, 81)
    assert mel.dtype == np.float32
    assert log_mel(np.zeros(SR + 350, dtype=np.float32)).shape == (80, 1 + (SR + 350) // 200)


def test_a_1khz_sine_peaks_in_the_band_centred_nearest_1khz() -> None:
    t = np.arange(SR) / SR
    mel = log_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    centres = mel_band_edges()[1:-1]
    assert int(np.argmax(mel[:, 5:-5].mean(axis=1))) == int(np.argmin(np.abs(centres - 1000)))


def test_filterbank_rows_are_area_normalised_triangles_on_the_slaney_scale() -> None:
    bank = mel_filterbank()
    edges = mel_band_edges()
    assert bank.shape == (80, 401)
    # Slaney scale: linear below 1 kHz, logarithmic above; edges evenly spaced on it.
    steps = np.diff(slaney_mel(edges))
    assert np.allclose(steps, steps[0], rtol=1e-9)
    assert edges[0] == pytest.approx(55.0) and edges[-1] == pytest.approx(7600.0)
    assert slaney_mel(np.array([500.0, 1000.0, 6400.0])) == pytest.approx([7.5, 15.0, 42.0])
    hz = np.linspace(0, SR / 2, 401)
    bin_hz = hz[1]
    for row, (lower, centre, upper) in zip(bank, zip(edges, edges[1:], edges[2:])):
        support = hz[row > 0]
        assert support.min() > lower and support.max() < upper
        assert hz[np.argmax(row)] == pytest.approx(centre, abs=bin_hz)
        rising = (hz > lower) & (hz <= centre)
        falling = (hz >= centre) & (hz < upper)
        for side in (rising, falling):
            if side.sum() >= 3:  # linear on each flank
                fit = np.polyfit(hz[side], row[side], 1)
                assert np.allclose(np.polyval(fit, hz[side]), row[side], atol=1e-6)
        if upper - lower > 10 * bin_hz:  # wide enough for the sampled area to approximate the true one
            assert row.sum() * bin_hz == pytest.approx(1.0, rel=0.02)
        assert row.max() <= 2.0 / (upper - lower) + 1e-6


def test_log_mel_values_stay_within_plus_minus_4_and_silence_is_minus_4() -> None:
    noise = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    loud = log_mel(noise)
    assert loud.min() >= -4.0 and loud.max() <= 4.0
    assert np.all(log_mel(np.zeros(SR // 2, dtype=np.float32)) == -4.0)


def slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel < 15, 200 * mel / 3, 1000 * np.exp((mel - 15) * np.log(6.4) / 27))


def reference_log_mel(samples: np.ndarray) -> np.ndarray:
    """Wav2Lip's recipe written out from its definitions, in float64, sharing no code with koubo's:
    pre-emphasis, a centred STFT (reflect-padded, periodic Hann of 800, hop 200) as an explicit DFT,
    librosa's Slaney filterbank (ramps between mel-spaced edges, each band divided by half its
    width), then decibels against 20 dB mapped from [-100, 0] dB onto [-4, 4]."""
    x = np.asarray(samples, dtype=np.float64)
    emphasised = x.copy()
    emphasised[1:] -= 0.97 * x[:-1]
    n_fft, hop = 800, 200
    padded = np.pad(emphasised, n_fft // 2, mode="reflect")
    n_columns = 1 + len(x) // hop
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    frames = np.stack([padded[t * hop : t * hop + n_fft] * window for t in range(n_columns)])
    k = np.arange(n_fft // 2 + 1)[:, None]
    real = np.cos(2 * np.pi * k * n / n_fft) @ frames.T
    imaginary = np.sin(2 * np.pi * k * n / n_fft) @ frames.T
    magnitude = np.hypot(real, imaginary)  # (401, n_columns)

    edges = slaney_hz(np.linspace(slaney_mel(55.0), slaney_mel(7600.0), 82))
    bins = np.linspace(0, SR / 2, n_fft // 2 + 1)
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    bank = np.zeros((80, len(bins)))
    for band in range(80):
        rising = -ramps[band] / widths[band]
        falling = ramps[band + 2] / widths[band + 1]
        bank[band] = np.maximum(0, np.minimum(rising, falling)) * 2.0 / (edges[band + 2] - edges[band])

    db = 20 * np.log10(np.maximum(1e-5, bank @ magnitude)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_log_mel_matches_the_recipe_computed_independently_on_a_sine() -> None:
    # Two tones (one in the linear part of the mel scale, one in the logarithmic part), a length
    # that is not a whole number of hops, and a fade so that the quiet start is clipped at -4.
    t = np.arange(8123) / SR
    fade = np.minimum(1.0, t / 0.2)
    signal = (fade * (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t))).astype(np.float32)
    ours = log_mel(signal)
    reference = reference_log_mel(signal)
    assert ours.shape == reference.shape == (80, 41)
    assert np.allclose(ours, reference, atol=2e-4), float(np.abs(ours - reference).max())
    # Not a trivial agreement: the spectrogram spans the range, loud at the tones, clipped elsewhere.
    assert reference.max() > 2.0 and reference.min() == -4.0
    centres = mel_band_edges()[1:-1]
    loudest = set(np.argsort(reference[:, 20:].mean(axis=1))[-2:].tolist())
    assert loudest == {int(np.argmin(np.abs(centres - hz))) for hz in (440, 3000)}


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_mel_windows_start_where_wav2lip_starts_them(fps: float) -> None:
    mel = np.random.default_rng(0).standard_normal((80, 81)).astype(np.float32)
    windows = mel_windows(mel, fps, n_frames=int(fps))
    assert windows.shape == (int(fps), 80, 16)
    assert windows.dtype == np.float32
    for i in range(int(fps)):
        start = int(i * MEL_FRAMES_PER_SECOND / fps)
        expected = mel[:, start : start + 16] if start + 16 <= 81 else mel[:, -16:]
        assert np.array_equal(windows[i], expected)
    if fps == 25.0:
        assert np.array_equal(windows[1], mel[:, 3:19])


def test_mel_windows_past_the_end_repeat_the_last_columns() -> None:
    mel = np.arange(80 * 10, dtype=np.float32).reshape(80, 10)
    windows = mel_windows(mel, 25.0, n_frames=3, steps=16)
    assert windows.shape == (3, 80, 16)
    assert np.array_equal(windows[2][:, :10], mel) and np.all(windows[2][:, 10:] == mel[:, -1:])


# --- speech envelope --------------------------------------------------------------------------


def test_envelope_has_100_frames_per_second_at_any_input_rate() -> None:
    env = speech_envelope()
    assert len(env.loudness) == int(TOTAL_S * ENVELOPE_RATE)
    assert env.duration == pytest.approx(TOTAL_S)
    for cue in (env.loudness, env.voicing, env.brightness, env.onset):
        assert cue.dtype == np.float32 and cue.shape == env.speech.shape
    times_44k = np.arange(int(TOTAL_S * 44_100)) / 44_100
    at_44k = np.interp(times_44k, np.arange(len(speech_like())) / SR, speech_like())
    resampled = analyse_speech(at_44k, 44_100)
    assert len(resampled.loudness) == len(env.loudness)
    assert np.corrcoef(resampled.loudness, env.loudness)[0, 1] > 0.99


def test_envelope_marks_vowels_voiced_and_speech_and_the_pause_silent() -> None:
    env = speech_envelope()
    t = (np.arange(len(env.loudness)) + 0.5) / ENVELOPE_RATE
    nuclei = np.zeros_like(env.speech)
    for start, _ in SYLLABLES:
        nuclei |= (t > start + 0.05) & (t < start + SYLLABLE_S - 0.05)
    assert env.voicing[nuclei].min() > 0.8
    assert env.speech[nuclei].all()
    pause = (t > SILENCE[0] + 0.1) & (t < SILENCE[1] - 0.1)
    assert not env.speech[pause].any()
    assert env.voicing[pause].max() < 0.5
    assert env.loudness[nuclei].min() > env.loudness[pause].max() + 30


def test_envelope_finds_the_plosive_release_after_its_closure() -> None:
    env = speech_envelope()
    t = (np.arange(len(env.loudness)) + 0.5) / ENVELOPE_RATE
    release = np.abs(t - CLOSURE[1]) < 0.03
    assert env.onset[release].max() > 0.8
    after_pause = np.abs(t - SILENCE[1]) < 0.05  # a start after a long silence is no plosive
    assert env.onset[after_pause].max() == 0.0


# --- mouth targets ----------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_mouth_stays_closed_through_the_pause(fps: float) -> None:
    n = n_frames(fps)
    targets = mouth_targets(speech_envelope(), fps, n)
    centres = frame_centres(fps, n)
    inside = (centres > SILENCE[0] + 2 / fps) & (centres < SILENCE[1] - 2 / fps)
    assert inside.sum() > 20
    assert targets.aperture[inside].max() < 0.05
    assert np.abs(targets.width[inside]).max() < 0.05
    assert not targets.speech[inside].any()
    assert targets.aperture[centres < SYLLABLES[0][0] - 2 / fps].max() < 0.05


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_mouth_opens_wide_at_syllable_nuclei(fps: float) -> None:
    n = n_frames(fps)
    targets = mouth_targets(speech_envelope(), fps, n)
    centres = frame_centres(fps, n)
    for start, _ in SYLLABLES:
        nucleus = np.abs(centres - (start + SYLLABLE_S / 2)) < 0.05
        assert targets.aperture[nucleus].min() > 0.4, start
        assert targets.speech[nucleus].all()


@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0])
def test_mouth_closes_during_the_stop_closure(fps: float) -> None:
    n = n_frames(fps)
    targets = mouth_targets(speech_envelope(), fps, n)
    centres = frame_centres(fps, n)
    closure = (centres > CLOSURE[0]) & (centres < CLOSURE[1])
    assert closure.any()
    assert targets.aperture[closure].min() < 0.2
    before = np.argmin(np.abs(centres - (CLOSURE[0] - 0.1)))
    assert targets.aperture[before] > 0.5  # the dip is a closure, not a quiet stretch


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_aperture_moves_in_step_with_loudness(fps: float) -> None:
    n = n_frames(fps)
    env = speech_envelope()
    aperture = mouth_targets(env, fps, n).aperture
    loudness = frame_loudness(env, fps, n)
    correlations = {lag: lagged_correlation(aperture, loudness, lag) for lag in range(-3, 4)}
    best = max(correlations, key=correlations.get)
    assert best == 0, correlations
    assert correlations[0] > 0.9


@pytest.mark.parametrize("fps", [15.0, 24.0, 25.0, 29.97, 30.0, 60.0])
def test_targets_have_one_entry_per_frame_at_common_frame_rates(fps: float) -> None:
    n = n_frames(fps)
    targets = mouth_targets(speech_envelope(), fps, n)
    loudness = frame_loudness(speech_envelope(), fps, n)
    assert targets.fps == fps
    for values in (targets.aperture, targets.width, targets.speech, loudness):
        assert values.shape == (n,)
    assert targets.aperture.dtype == np.float32 and targets.width.dtype == np.float32
    assert targets.speech.dtype == np.bool_
    assert 0.0 <= targets.aperture.min() and targets.aperture.max() <= 1.0
    assert -1.0 <= targets.width.min() and targets.width.max() <= 1.0
    centres = frame_centres(fps, n)
    pause = (centres > SILENCE[0] + 0.1) & (centres < SILENCE[1] - 0.1)
    nucleus = np.abs(centres - (SYLLABLES[0][0] + SYLLABLE_S / 2)) < 0.05
    assert targets.aperture[pause].max() < 0.05 and targets.aperture[nucleus].min() > 0.4


def test_frames_past_the_end_of_the_audio_are_at_rest_and_silent() -> None:
    env = speech_envelope()
    n = n_frames(25.0) + 25
    targets = mouth_targets(env, 25.0, n)
    assert np.all(targets.aperture[-20:] == 0) and not targets.speech[-20:].any()
    assert frame_loudness(env, 25.0, n)[-20:].max() <= -99.0


def test_expressiveness_scales_the_motion() -> None:
    env = speech_envelope()
    n = n_frames(25.0)
    still = mouth_targets(env, 25.0, n, expressiveness=0.0)
    normal = mouth_targets(env, 25.0, n, expressiveness=1.0)
    lively = mouth_targets(env, 25.0, n, expressiveness=2.0)
    assert np.all(still.aperture == 0) and np.all(still.width == 0)
    assert lively.aperture.mean() > 1.3 * normal.aperture.mean()
    assert lively.aperture.max() <= 1.0
    assert np.abs(lively.width).mean() > np.abs(normal.width).mean()
    with pytest.raises(ValueError):
        mouth_targets(env, 25.0, n, expressiveness=-0.5)


def test_rounded_vowels_get_narrower_lips_than_spread_vowels() -> None:
    n = n_frames(25.0)
    targets = mouth_targets(speech_envelope(), 25.0, n)
    centres = frame_centres(25.0, n)

    def mean_width(start: float) -> float:
        return float(targets.width[np.abs(centres - (start + SYLLABLE_S / 2)) < 0.05].mean())

    rounded = [mean_width(start) for start in nucleus_starts("u", "o")]
    spread = [mean_width(start) for start in nucleus_starts("i", "e")]
    assert max(rounded) < -0.3
    assert min(spread) > 0.3


def test_aperture_is_relative_to_the_recordings_own_level() -> None:
    n = n_frames(25.0)
    loud = mouth_targets(speech_envelope(), 25.0, n)
    quiet = mouth_targets(analyse_speech(speech_like() * 0.1), 25.0, n)
    assert np.abs(loud.aperture - quiet.aperture).max() < 0.05


@pytest.mark.parametrize("level_db", [-60.0, -40.0])
def test_low_noise_alone_keeps_the_mouth_closed(level_db: float) -> None:
    noise = np.random.default_rng(2).standard_normal(3 * SR) * 10 ** (level_db / 20)
    env = analyse_speech(noise.astype(np.float32))
    targets = mouth_targets(env, 25.0, 75)
    assert env.speech.mean() < 0.1
    assert np.mean(targets.aperture > 0.1) < 0.1


def test_empty_audio_gives_empty_envelope_and_closed_mouth() -> None:
    env = analyse_speech(np.zeros(0, dtype=np.float32))
    assert len(env.loudness) == 0 and env.duration == 0.0
    targets = mouth_targets(env, 25.0, 10)
    assert np.all(targets.aperture == 0) and np.all(targets.width == 0) and not targets.speech.any()


def test_frame_loudness_averages_power_over_each_frames_span() -> None:
    loudness = np.array([-20.0, -20.0, -100.0, -100.0], dtype=np.float32)
    env = SpeechEnvelope(loudness, loudness * 0, loudness * 0, loudness * 0, np.ones(4, dtype=bool))
    # At 25 fps a frame spans 4 envelope frames: half at -20 dB, half silent -> -23 dB.
    assert frame_loudness(env, 25.0, 1)[0] == pytest.approx(-20 - 10 * np.log10(2), abs=1e-3)
    assert frame_loudness(env, 50.0, 2) == pytest.approx([-20.0, -100.0], abs=1e-3)


# --- formants --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMANTS))
def test_formants_of_a_vowel_are_its_resonances(name: str) -> None:
    found = track_formants(vowel(0.3, name), 30)
    f1, f2 = float(np.nanmedian(found.f1[5:25])), float(np.nanmedian(found.f2[5:25]))
    assert f1 == pytest.approx(FORMANTS[name][0], rel=0.12)
    assert f2 == pytest.approx(FORMANTS[name][1], rel=0.05)


def test_silence_has_no_formants() -> None:
    found = track_formants(np.zeros(SR // 2, dtype=np.float32), 50)
    assert found.f1.shape == found.f2.shape == (50,)
    assert np.isnan(found.f1).all() and np.isnan(found.f2).all()


# --- audio features ---------------------------------------------------------------------------


def test_compute_audio_features_bundles_mel_and_envelope() -> None:
    samples = speech_like()
    features = compute_audio_features(samples, "ab" * 32)
    assert features.audio_hash == "ab" * 32
    assert features.duration == pytest.approx(TOTAL_S)
    assert features.mel.shape == (80, 1 + len(samples) // 200)
    assert np.array_equal(features.envelope.loudness, speech_envelope().loudness)
