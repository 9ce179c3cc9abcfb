"""What one job may decode, render and write (issue 10, item 4): a pixel budget checked from the
probe before any frame is decoded, and the free space checked while a job writes."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from koubo.config import Settings
from koubo.errors import KouboError
from koubo.jobs.service import JobService
from koubo.pipeline import GenerateOptions, Generator

from media_fixtures import make_speech, make_talking_video

CLIP_SIZE = (640, 360)
CLIP_FRAMES = 100  # at 1 fps: the shape of the 29 KB 4K file, at a size quick to encode


def black_clip(path: Path, size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES) -> Path:
    """A tiny H.264 file of black frames at 1 fps: a few KB that decode to many pixels."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(1))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        black = av.VideoFrame.from_ndarray(np.zeros((size[1], size[0], 3), np.uint8), format="rgb24")
        for index in range(frames):
            black.pts = index
            out.mux(stream.encode(black))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("job-limits")


@pytest.fixture(scope="module")
def clip(work: Path) -> Path:
    return black_clip(work / "black.mp4")


@pytest.fixture(scope="module")
def speech(work: Path) -> Path:
    return make_speech(work / "speech.wav", seconds=2.0)


@pytest.fixture(scope="module")
def face(work: Path) -> Path:
    return make_talking_video(work / "face.mp4", seconds=1.0, size=(128, 128))


def upload(service: JobService, source: Path) -> KouboError:
    staged = service.upload_tmp_dir / source.name
    shutil.copyfile(source, staged)
    with pytest.raises(KouboError) as caught:
        service.add_asset(staged, source.name, "video")
    assert not staged.exists()
    return caught.value


def assert_bilingual(error: KouboError, code: str) -> None:
    assert error.code == code
    assert error.en and any("\u4e00" <= ch <= "\u9fff" for ch in error.zh)


def test_an_upload_over_the_pixel_budget_is_refused(tmp_path: Path, clip: Path) -> None:
    pixels = CLIP_SIZE[0] * CLIP_SIZE[1] * CLIP_FRAMES
    assert clip.stat().st_size < pixels * 3 / 1000  # a thousandth of what it decodes to
    service = JobService(Settings(data_dir=tmp_path, max_job_pixels=pixels // 2))
    try:
        assert_bilingual(upload(service, clip), "too_many_pixels")
        assert not list(service.uploads_dir.rglob("*.mp4"))
    finally:
        service.close()


def test_an_upload_with_frames_over_the_size_limit_is_refused(tmp_path: Path, clip: Path) -> None:
    service = JobService(Settings(data_dir=tmp_path, max_video_width=CLIP_SIZE[0] - 2))
    try:
        error = upload(service, clip)
        assert_bilingual(error, "frame_too_large")
        assert f"{CLIP_SIZE[0]}x{CLIP_SIZE[1]}" in error.en and f"{CLIP_SIZE[0]}x{CLIP_SIZE[1]}" in error.zh
    finally:
        service.close()


def test_a_job_whose_output_would_exceed_the_budget_fails_before_decoding(
    tmp_path: Path, speech: Path, face: Path
) -> None:
    # The template (25 frames of 128x128) fits; 2 s of output at 25 fps (50 frames) does not.
    generator = Generator(Settings(data_dir=tmp_path / "data", max_job_pixels=128 * 128 * 40))
    stages: list[str] = []
    with pytest.raises(KouboError) as caught:
        generator.generate(speech, face, tmp_path / "out" / "x.mp4", progress=lambda stage, f: stages.append(stage))
    assert_bilingual(caught.value, "too_many_pixels")
    assert "decode" not in stages
    assert not [p for p in (tmp_path / "out").iterdir()]


def test_a_job_stops_cleanly_when_the_disk_runs_low_while_it_writes(
    tmp_path: Path, speech: Path, face: Path
) -> None:
    generator = Generator(Settings(data_dir=tmp_path / "data", job_min_free_bytes=2**60))
    with pytest.raises(KouboError) as caught:
        generator.generate(speech, face, tmp_path / "out" / "x.mp4", GenerateOptions(check=False))
    assert_bilingual(caught.value, "disk_full")
    assert "stopped" in caught.value.en
    assert not [p for p in (tmp_path / "out").iterdir()]


def test_the_default_budget_still_renders_an_ordinary_job(tmp_path: Path, speech: Path, face: Path) -> None:
    result = Generator(Settings(data_dir=tmp_path / "data")).generate(
        speech, face, tmp_path / "out" / "x.mp4", GenerateOptions(check=False)
    )
    assert result.output.stat().st_size > 0 and result.frames == 50
