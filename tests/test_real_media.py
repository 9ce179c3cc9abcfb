"""Every real speaker × every real speech file in ../shared/media, when that folder exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from koubo.config import Settings
from koubo.media.probe import probe
from koubo.media.video import read_template
from koubo.pipeline import GenerateOptions, Generator

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
SPEAKERS = sorted(p.name for p in SHARED.glob("speaker_*.mp4")) if SHARED.exists() else []
SPEECHES = sorted(p.name for p in SHARED.glob("speech_*.wav")) if SHARED.exists() else []

pytestmark = [
    pytest.mark.real_media,
    pytest.mark.skipif(not SHARED.exists(), reason="../shared/media is not beside the checkout"),
]


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Generator:
    return Generator(Settings(data_dir=tmp_path_factory.mktemp("real-data")))


@pytest.mark.parametrize("speech", SPEECHES)
@pytest.mark.parametrize("speaker", SPEAKERS)
def test_real_speaker_says_real_speech(speaker, speech, generator, tmp_path):
    template, audio = SHARED / speaker, SHARED / speech
    result = generator.generate(audio, template, tmp_path / "out.mp4")

    out = probe(result.output, expect="video")
    src = probe(template, expect="video").video
    assert (out.video.width, out.video.height) == (src.width - src.width % 2, src.height - src.height % 2)
    assert abs(float(out.video.fps) - float(src.fps)) < 0.01
    assert abs(out.duration - probe(audio, expect="audio").duration) <= 1 / float(src.fps) + 1e-6

    report = result.report
    assert report.face_coverage > 0.9
    assert report.sync_offset is not None and abs(report.sync_offset) <= 1, report
    assert report.sync_confidence > 0.3, report


def test_a_kept_template_renders_what_the_streamed_one_does(tmp_path):
    """The variable-rate speaker, whose mouths are borrowed across frames: a job that keeps the
    template's frames in memory renders exactly the frames one that streams them does (each job
    tracks the face itself, so the kept one lends its mouths from memory)."""
    template, audio = SHARED / "speaker_vfr.mp4", SHARED / "speech_en_44k.wav"
    videos = []
    for limit in (0, 1 << 30):
        settings = Settings(data_dir=tmp_path / f"data-{limit}", template_memory_bytes=limit)
        out = Generator(settings).generate(audio, template, tmp_path / f"{limit}.mp4", GenerateOptions(check=False))
        videos.append(read_template(out.output, work_dir=tmp_path).frames)
    assert videos[0].shape == videos[1].shape
    differing = [k for k in range(len(videos[0])) if not np.array_equal(videos[0][k], videos[1][k])]
    assert not differing
