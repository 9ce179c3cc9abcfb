"""The `koubo` command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from koubo import errors
from koubo.media.probe import probe

from media_fixtures import make_speech, make_talking_video


def koubo(*args: object, data_dir: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KOUBO_DATA_DIR": str(data_dir), **variables}
    return subprocess.run(
        [sys.executable, "-m", "koubo.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    return work, make_speech(work / "语音.wav", seconds=2.5), make_talking_video(work / "t.mp4", seconds=1.0)


def test_generate_then_check_prints_the_report(inputs):
    work, speech, video = inputs
    out = work / "out.mp4"
    gen = koubo("generate", "-a", speech, "-v", video, "-o", out, "--json", data_dir=work / "data")
    assert gen.returncode == 0, gen.stderr
    result = json.loads(gen.stdout.strip().splitlines()[-1])
    assert result["output"] == str(out) and out.exists()
    assert abs(result["report"]["sync_offset"]) <= 1
    assert "inference_feedback_manager" not in gen.stderr and "XNNPACK" not in gen.stderr  # MediaPipe's notices

    check = koubo("check", out, "--json", data_dir=work / "data")
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["frames"] == result["frames"]
    assert report["face_coverage"] > 0.95
    assert abs(report["sync_offset"] - result["report"]["sync_offset"]) <= 1


def test_batch_writes_one_output_per_template_and_fails_only_the_bad_one(inputs):
    work, speech, video = inputs
    bad = work / "broken.mp4"
    bad.write_bytes(b"\x00" * 2048)
    out_dir = work / "batch"
    run = koubo("batch", "-a", speech, "-v", video, bad, "-o", out_dir, "--no-check", data_dir=work / "data")
    assert run.returncode == 1
    assert "broken.mp4" in run.stdout and "FAILED" in run.stdout
    outputs = sorted(out_dir.glob("*.mp4"))
    assert len(outputs) == 1 and probe(outputs[0], expect="video").video.width == 256


def test_demo_generates_from_built_in_samples(tmp_path):
    run = koubo("demo", "-o", tmp_path, "--no-check", data_dir=tmp_path / "data")
    assert run.returncode == 0, run.stderr
    info = probe(tmp_path / "demo.mp4", expect="video")
    assert info.audio is not None and info.video.width == 512


def test_a_path_that_is_no_file_is_refused_at_once_in_both_languages(inputs, tmp_path):
    work, speech, video = inputs
    folder, missing = tmp_path / "素材", tmp_path / "missing.wav"
    folder.mkdir()
    cases = [
        (["generate", "-a", folder, "-v", video, "-o", tmp_path / "a.mp4"], errors.not_a_file(str(folder))),
        (["generate", "-a", missing, "-v", video, "-o", tmp_path / "b.mp4"], errors.no_such_file(str(missing))),
        (
            ["generate", "-a", speech, "-v", video, "-o", folder],
            errors.output_is_folder(str(folder), str(folder / "koubo.mp4")),
        ),
        (["generate", "-a", speech, "-v", video, "-o", speech / "c.mp4"], errors.output_folder_is_file(str(speech))),
        (["batch", "-a", speech, "-v", video, "/dev/null", "-o", folder], errors.not_a_file("/dev/null")),
        (["batch", "-a", speech, "-v", video, "-o", speech], errors.output_folder_is_file(str(speech))),
        (["check", missing], errors.no_such_file(str(missing))),
    ]
    for args, error in cases:
        run = koubo(*args, data_dir=work / "data")
        assert (run.returncode, run.stderr) == (2, f"koubo: {error}\n"), args
    assert list(folder.iterdir()) == [] and not (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()


def test_a_setting_that_fails_its_check_is_said_in_both_languages_wherever_it_comes_from(tmp_path):
    broken = tmp_path / "koubo.toml"
    broken.write_text("max_concurrent = \n", encoding="utf-8")
    cases = [
        (
            koubo("worker", "--concurrency", "0", data_dir=tmp_path),
            'The setting "max_concurrent" must be at least 1. Settings come from the command line',
            "设置“max_concurrent”不能小于 1。设置来自命令行",
        ),
        (
            koubo("logs", data_dir=tmp_path, KOUBO_MAX_CONCURRENT="two"),
            'The setting "max_concurrent" must be a whole number.',
            "设置“max_concurrent”必须是整数。",
        ),
        (
            koubo("logs", data_dir=tmp_path, KOUBO_CONFIG=str(broken)),
            f"The settings file {broken} is not valid TOML: ",
            f"设置文件 {broken} 不是有效的 TOML：",
        ),
    ]
    for run, en, zh in cases:
        assert run.returncode == 2 and run.stderr.startswith("koubo: ") and run.stderr.count("\n") == 1, run.stderr
        assert en in run.stderr and zh in run.stderr


def test_native_notices_are_hidden_and_a_native_failure_shown_even_when_the_process_aborts():
    notice = b"W0000 00:00:1796314126.230010   14477 inference_feedback_manager.cc:114] Feedback manager requires"
    failure = b"F0000 00:00:1796314126.230011   14477 calculator_graph.cc:1] Check failed: a native failure"
    script = (
        "import os, sys\n"
        "from koubo.logs import native_notices_hidden\n"
        "with native_notices_hidden():\n"
        "    print('from Python', file=sys.stderr)\n"
        f"    os.write(2, {notice!r} + b'\\n')\n"
        f"    os.write(2, {failure!r} + b'\\n')\n"
        "    os.abort()\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert run.returncode < 0  # aborted
    assert sorted(run.stderr.splitlines()) == sorted([b"from Python", failure])
