"""Generation options live in one place: their ranges, their resolution against the settings, the
batch rule and the output name (koubo/options.py, koubo/naming.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from koubo.config import Settings
from koubo.errors import ErrorCode, KouboError
from koubo.features.mouth import SpeechEnvelope, mouth_targets
from koubo.naming import output_name
from koubo.options import (
    CRF_MAX,
    CRF_MIN,
    EXPRESSIVENESS_MAX,
    EXPRESSIVENESS_MIN,
    PRESETS,
    GenerateOptions,
    ResolvedOptions,
    batch_pairs,
    resolve,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, engine="classic", expressiveness=1.3, video_crf=23, video_preset="fast", denoise="mouth"
    )


# --- ranges -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "inside", "outside"),
    [
        (
            "expressiveness",
            [EXPRESSIVENESS_MIN, EXPRESSIVENESS_MAX],
            [EXPRESSIVENESS_MIN - 0.1, EXPRESSIVENESS_MAX + 0.1],
        ),
        ("crf", [CRF_MIN, CRF_MAX], [CRF_MIN - 1, CRF_MAX + 1]),
    ],
)
def test_the_requested_options_and_the_settings_enforce_the_same_range(tmp_path, field, inside, outside):
    setting = {"expressiveness": "expressiveness", "crf": "video_crf"}[field]
    for value in inside:
        assert getattr(GenerateOptions(**{field: value}), field) == value
        assert getattr(Settings(data_dir=tmp_path, **{setting: value}), setting) == value
    for value in outside:
        with pytest.raises(ValidationError):
            GenerateOptions(**{field: value})
        with pytest.raises(ValidationError):
            Settings(data_dir=tmp_path, **{setting: value})


def test_the_mouth_model_refuses_the_expressiveness_the_options_refuse():
    silence = np.zeros(10, dtype=np.float32)
    empty = SpeechEnvelope(silence, silence, silence, silence, silence.astype(bool))
    mouth_targets(empty, 25.0, 3, expressiveness=EXPRESSIVENESS_MAX)
    with pytest.raises(ValueError, match="expressiveness"):
        mouth_targets(empty, 25.0, 3, expressiveness=EXPRESSIVENESS_MAX + 0.1)


def test_presets_denoise_device_and_unknown_fields_are_checked():
    assert GenerateOptions(preset="slow").preset == "slow"
    for bad in ({"preset": "warp"}, {"denoise": "loud"}, {"device": "tpu"}, {"engine": ""}, {"colour": 1}):
        with pytest.raises(ValidationError):
            GenerateOptions(**bad)
    assert Settings.model_fields["video_preset"].annotation is not None
    assert "veryfast" in PRESETS and len(PRESETS) == 9


# --- resolve ------------------------------------------------------------------------------------------------


def test_resolve_fills_every_option_left_out_from_the_settings(settings):
    resolved = resolve(GenerateOptions(), settings)
    assert resolved == ResolvedOptions(
        engine="classic", expressiveness=1.3, crf=23, preset="fast", denoise="mouth", device=None, check=True
    )
    assert resolve(None, settings) == resolved


def test_resolve_keeps_what_was_asked_for_including_zero(settings):
    asked = GenerateOptions(expressiveness=0.0, crf=0, preset="slow", denoise="off", device="cuda", check=False)
    resolved = resolve(asked, settings)
    assert (resolved.expressiveness, resolved.crf, resolved.preset, resolved.denoise) == (0.0, 0, "slow", "off")
    assert resolved.device == "cuda" and resolved.check is False
    assert resolve(resolved, settings) is resolved  # the resolved form passes through


def test_stored_job_params_round_trip_and_old_jobs_still_load(settings):
    resolved = resolve(GenerateOptions(device="cpu"), settings)
    stored = resolved.job_params()
    assert stored == {
        "engine": "classic",
        "expressiveness": 1.3,
        "crf": 23,
        "preset": "fast",
        "denoise": "mouth",
        "device": "cpu",
    }
    assert ResolvedOptions.from_job_params(stored) == resolved
    assert "device" not in resolve(None, settings).job_params()
    # A job queued by a release before denoising (and devices) existed.
    old = {"engine": "classic", "expressiveness": 1.0, "crf": 18, "preset": "veryfast"}
    assert ResolvedOptions.from_job_params(old) == ResolvedOptions("classic", 1.0, 18, "veryfast", "off")


# --- the batch rule -----------------------------------------------------------------------------------------


def test_a_batch_is_one_audio_with_many_videos_or_many_audios_with_one_video():
    assert batch_pairs(["a"], ["v1", "v2"]) == [("a", "v1"), ("a", "v2")]
    assert batch_pairs(["a1", "a2"], ["v"]) == [("a1", "v"), ("a2", "v")]
    assert batch_pairs(["a"], ["v"]) == [("a", "v")]


@pytest.mark.parametrize(("audios", "videos"), [(["a1", "a2"], ["v1", "v2"]), ([], ["v"]), (["a"], [])])
def test_any_other_batch_is_refused_in_both_languages(audios, videos):
    with pytest.raises(KouboError) as refused:
        batch_pairs(audios, videos)
    assert refused.value.code == ErrorCode.INVALID_PARAMS
    assert "batch" in refused.value.en and "批量" in refused.value.zh


def test_the_pipeline_batch_follows_the_same_rule(tmp_path):
    from koubo.pipeline import Generator

    generator = Generator(Settings(data_dir=tmp_path))
    with pytest.raises(KouboError) as refused:
        generator.batch(["a.wav", "b.wav"], ["v.mp4", "w.mp4"], tmp_path / "out")
    assert refused.value.code == ErrorCode.INVALID_PARAMS
    assert not (tmp_path / "out").exists()


# --- the output name ----------------------------------------------------------------------------------------


def test_the_output_name_is_cleaned_and_numbered_within_a_batch():
    assert output_name("问候 hello.wav", "主播.mp4") == "主播__问候 hello.mp4"
    assert output_name("../../etc/passwd 语音.wav", "face.mp4") == "face__passwd 语音.mp4"
    assert output_name('a<b>:"c.wav', "take1..final.mp4", 1) == "002_take1.final__a_b___c.mp4"


def test_the_command_line_refuses_a_many_by_many_batch_in_both_languages(tmp_path, capsys):
    from koubo.cli import main

    code = main(["batch", "-a", "a.wav", "b.wav", "-v", "c.mp4", "d.mp4", "-o", str(tmp_path / "out")])
    said = capsys.readouterr().err
    assert code == 2 and "A batch is one audio with many videos" in said and "批量任务须为" in said
    assert not (tmp_path / "out").exists()


def test_the_command_line_checks_the_ranges_in_both_languages(tmp_path, capsys):
    from koubo.cli import main

    code = main(["generate", "-a", "a.wav", "-v", "v.mp4", "-o", str(tmp_path / "o.mp4"), "--crf", str(CRF_MAX + 1)])
    said = capsys.readouterr().err
    assert code == 2 and f'"crf" must be at most {CRF_MAX}' in said and f"不能大于 {CRF_MAX}" in said
