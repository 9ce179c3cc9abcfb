"""Mouth shapes from phones: real speech made by espeak-ng at test time, English and Mandarin.

Each case contrasts two recordings that differ in one sound only (/m/ against /h/, /u/ against
/i/), so the assertion is about that sound, whatever else the recogniser makes of the voice.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from koubo.features import AudioFeatures, compute_audio_features
from koubo.features.mouth import MouthTargets, mouth_targets
from koubo.features.phones import PHONE_RATE, PhoneTrack, recognise_phones
from koubo.features.visemes import CHANNELS, coarticulate
from koubo.media.audio import load_audio

from media_fixtures import espeak_speech

FPS = 25.0
CLOSED_APERTURE = 0.1


@lru_cache(maxsize=None)
def spoken(voice: str, text: str, folder: str) -> AudioFeatures:
    path = espeak_speech(Path(folder) / f"{voice}-{hashlib.sha1(text.encode()).hexdigest()[:12]}.wav", text, voice)
    if path is None:
        pytest.skip("espeak-ng is not installed (./koubo.sh test installs it as root)")
    samples = load_audio(path).samples
    # A second of silence on each side: the lips must rest there.
    pad = np.zeros(16_000, dtype=np.float32)
    return compute_audio_features(np.concatenate([pad, samples, pad]), "espeak")


def targets_of(features: AudioFeatures) -> MouthTargets:
    n = int(features.duration * FPS)
    return mouth_targets(features.envelope, FPS, n, phones=features.phones, formants=features.formants)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("espeak"))


def closed_frames_inside_speech(targets: MouthTargets) -> int:
    """Frames with the lips pressed shut in speech, 0.1 s in from where the speech starts and ends
    (where the lips part from and return to rest)."""
    spoken_frames = np.flatnonzero(targets.speech)
    trim = round(0.1 * FPS)
    inside = np.zeros(len(targets.aperture), dtype=bool)
    inside[spoken_frames[0] + trim : spoken_frames[-1] - trim + 1] = True
    return int(np.count_nonzero(inside & (targets.aperture < CLOSED_APERTURE) & (targets.closure > 0.5)))


@pytest.mark.parametrize(
    "voice,bilabial,other",
    [("en", "a ma ma ma ma", "a ha ha ha ha"), ("cmn", "妈妈妈妈妈", "哈哈哈哈哈")],
)
def test_a_bilabial_closes_the_predicted_lips(voice: str, bilabial: str, other: str, folder: str) -> None:
    with_m = targets_of(spoken(voice, bilabial, folder))
    with_h = targets_of(spoken(voice, other, folder))
    assert closed_frames_inside_speech(with_m) >= 3
    assert closed_frames_inside_speech(with_h) == 0


@pytest.mark.parametrize(
    "voice,rounded,spread",
    [("en", "who who who who", "he he he he"), ("cmn", "呜呜呜呜", "一一一一")],
)
def test_a_rounded_vowel_rounds_and_narrows_the_lips_more_than_a_spread_one(
    voice: str, rounded: str, spread: str, folder: str
) -> None:
    u = targets_of(spoken(voice, rounded, folder))
    i = targets_of(spoken(voice, spread, folder))
    assert u.rounding[u.speech].mean() > i.rounding[i.speech].mean() + 0.2
    assert u.width[u.speech].mean() < i.width[i.speech].mean() - 0.2


def test_the_lips_rest_in_silence(folder: str) -> None:
    features = spoken("en", "Today we talk about the weather.", folder)
    targets = targets_of(features)
    t = (np.arange(len(targets.aperture)) + 0.5) / FPS
    silent = (t < 0.85) | (t > features.duration - 0.85)
    assert not targets.speech[silent].any()
    for name in ("aperture", "width", "rounding", "closure", "teeth", "labiodental"):
        assert np.abs(getattr(targets, name)[silent]).max() < 0.02, name
    assert targets.aperture[targets.speech].max() > 0.5


def test_targets_are_deterministic(folder: str) -> None:
    path = espeak_speech(Path(folder) / "again.wav", "Hello everyone, today we talk about the weather.", "en")
    if path is None:
        pytest.skip("espeak-ng is not installed (./koubo.sh test installs it as root)")
    samples = load_audio(path).samples
    first, second = (compute_audio_features(samples.copy(), "x") for _ in range(2))
    assert first.phones.labels == second.phones.labels
    a, b = targets_of(first), targets_of(second)
    for name in ("aperture", "width", "rounding", "closure", "teeth", "labiodental", "speech"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


# --- coarticulation, on phones given directly --------------------------------------------------


def track(*phones: tuple[str, float]) -> PhoneTrack:
    """Phones with their lengths in seconds, back to back from time 0."""
    ends = np.cumsum([round(seconds * PHONE_RATE) for _, seconds in phones]).astype(np.int32)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int32)
    return PhoneTrack(tuple(label for label, _ in phones), starts, ends)


def channel(shape: np.ndarray, name: str) -> np.ndarray:
    return shape[:, CHANNELS.index(name)]


def test_lips_round_before_the_rounded_vowel_is_heard() -> None:
    phones = track(("SIL", 0.3), ("AA", 0.2), ("T", 0.08), ("UW", 0.2), ("SIL", 0.3))
    shape = coarticulate(phones, int(phones.ends[-1]))
    rounding = channel(shape, "rounding")
    t_start, vowel_start = int(phones.starts[2]), int(phones.starts[3])
    assert rounding[t_start:vowel_start].mean() > 0.3  # the /t/ already has rounded lips
    assert rounding[vowel_start - 12 : vowel_start].min() < rounding[vowel_start - 1]  # rising into /u/
    assert rounding[int(phones.starts[1]) : int(phones.starts[1]) + 5].max() < 0.1  # /a/ well before is not


def test_a_short_m_between_open_vowels_still_closes_the_lips() -> None:
    phones = track(("AA", 0.2), ("M", 0.04), ("AA", 0.2))
    shape = coarticulate(phones, int(phones.ends[-1]))
    m = slice(int(phones.starts[1]), int(phones.ends[1]))
    assert channel(shape, "closure")[m].max() > 0.8
    assert channel(shape, "aperture")[m].min() < 0.2
    # and the lips are closing ahead of it, not only during it
    assert channel(shape, "aperture")[int(phones.starts[1]) - 3] < channel(shape, "aperture")[5]


def test_f_and_v_put_the_lip_on_the_teeth() -> None:
    phones = track(("AA", 0.2), ("F", 0.08), ("AA", 0.2))
    shape = coarticulate(phones, int(phones.ends[-1]))
    f = slice(int(phones.starts[1]), int(phones.ends[1]))
    assert channel(shape, "labiodental")[f].max() > 0.8
    assert channel(shape, "labiodental")[:5].max() < 0.1


def test_no_speech_gives_no_phones_and_a_resting_mouth() -> None:
    samples = np.random.default_rng(0).standard_normal(32_000).astype(np.float32) * 1e-4
    features = compute_audio_features(samples, "quiet")
    assert not features.envelope.speech.any()
    assert len(features.phones) == 0
    assert len(recognise_phones(samples, np.ones(200, dtype=bool))) > 0  # the recogniser did run on it
    targets = targets_of(features)
    for name in ("aperture", "width", "rounding", "closure", "teeth", "labiodental"):
        assert np.all(getattr(targets, name) == 0), name
