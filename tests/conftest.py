"""Session-wide media fixtures: generated once per test run, in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media_fixtures import face_image, make_speech, make_talking_video

SPEECH_SECONDS = 3.0
VIDEO_SECONDS = 2.0
VIDEO_FPS = 25


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def face_rgb() -> np.ndarray:
    return face_image()


@pytest.fixture(scope="session")
def talking_video(media_dir: Path) -> Path:
    """2 s, 256x256, 25 fps H.264 of the moving face, no audio."""
    return make_talking_video(media_dir / "talking.mp4", seconds=VIDEO_SECONDS, fps=VIDEO_FPS)


@pytest.fixture(scope="session")
def talking_video_with_audio(media_dir: Path) -> Path:
    """As talking_video, plus an AAC track of the synthetic speech."""
    return make_talking_video(media_dir / "talking-audio.mp4", seconds=VIDEO_SECONDS, fps=VIDEO_FPS, with_audio=True)


@pytest.fixture(scope="session")
def speech_wav(media_dir: Path) -> Path:
    """3 s of synthetic speech, 16 kHz mono 16-bit WAV (see media_fixtures.speech_syllables)."""
    return make_speech(media_dir / "speech.wav", seconds=SPEECH_SECONDS)


@pytest.fixture(scope="session")
def speech_wav_48k_stereo(media_dir: Path) -> Path:
    return make_speech(media_dir / "speech-48k-stereo.wav", seconds=SPEECH_SECONDS, rate=48000, channels=2)


@pytest.fixture
def finders_made(monkeypatch) -> list[int]:
    """The max_faces of every FaceFinder made while the test runs (each loads MediaPipe's graphs)."""
    from koubo.face import tracker

    made: list[int] = []
    real = tracker.FaceFinder

    def counting(max_faces: int = 4) -> tracker.FaceFinder:
        made.append(max_faces)
        return real(max_faces)

    monkeypatch.setattr(tracker, "FaceFinder", counting)
    return made
