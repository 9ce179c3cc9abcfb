"""koubo.media: probing by content, decoding speech and templates, writing the MP4."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import koubo.media.video as video_module
from koubo.errors import Cancelled, MediaError
from koubo.media.audio import ANALYSIS_RATE, load_audio
from koubo.media.probe import probe
from koubo.media.video import Mp4Writer, loop_indices, nvenc_opens, output_frame_count, read_template

from media_fixtures import (
    as_streamed_wav,
    espeak_speech,
    face_image,
    make_mp3_with_cover_art,
    make_speech,
    make_talking_video,
    make_truncated_mp4,
    speech_syllables,
    synth_speech,
    talking_frame,
    vfr_timestamps,
    wav_format_tag,
    write_empty_file,
    write_random_bytes,
    write_text_file,
)

SHARED_MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
SECONDS = 3.0
DISPLAY_NAME = "客户上传 clip-07.mp4"
EXTENSIBLE = 0xFFFE

# name -> (make_speech arguments, file suffix, sample rate, channels)
AUDIO_FORMATS: dict[str, tuple[dict, str, int, int]] = {
    "wav-s16": ({}, "wav", 16000, 1),
    "wav-s24": ({"sample_format": "s24"}, "wav", 16000, 1),
    "wav-float": ({"sample_format": "flt"}, "wav", 16000, 1),
    "wav-48k-stereo": ({"rate": 48000, "channels": 2}, "wav", 48000, 2),
    "wav-quad-extensible": ({"rate": 48000, "channels": 4}, "wav", 48000, 4),
    "mp3": ({"container": "mp3", "rate": 44100}, "mp3", 44100, 1),
    "m4a-aac": ({"container": "ipod", "rate": 44100, "channels": 2}, "m4a", 44100, 2),
    "flac": ({"container": "flac"}, "flac", 16000, 1),
    "ogg-opus": ({"container": "ogg", "rate": 48000}, "opus", 48000, 1),
    "ogg-vorbis": ({"container": "ogg", "codec": "vorbis", "rate": 44100, "channels": 2}, "ogg", 44100, 2),
    "wma": ({"container": "asf", "rate": 44100, "channels": 2}, "wma", 44100, 2),
    "amr-nb": ({"container": "amr", "rate": 8000}, "amr", 8000, 1),
}
ENCODERS = {
    "mp3": "libmp3lame",
    "ogg-opus": "libopus",
    "ogg-vorbis": "vorbis",
    "wma": "wmav2",
    "amr-nb": "libopencore_amrnb",
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media-tests")


def envelope(samples: np.ndarray, rate: int = ANALYSIS_RATE, hop: float = 0.02) -> np.ndarray:
    """RMS per 20 ms: robust to codec delays of a few ms and to waveform changes."""
    step = round(hop * rate)
    usable = samples[: samples.size // step * step]
    return np.sqrt((usable.reshape(-1, step).astype(np.float64) ** 2).mean(axis=1))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.size, b.size)
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def envelope_match(samples: np.ndarray, truth: np.ndarray, max_shift: int = 4) -> float:
    """Best envelope correlation within +-80 ms: lossy codecs may add or drop a priming frame
    (FFmpeg's WMA pair loses ~46 ms at the start)."""
    a, b = envelope(samples), envelope(truth)
    return max(correlation(a[max(0, s) :], b[max(0, -s) :]) for s in range(-max_shift, max_shift + 1))


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        offset += size if size else len(data)
    return boxes


# --- fixtures keep their promises ---------------------------------------------------------------


def test_face_image_shows_exactly_one_large_face() -> None:
    face_mesh = pytest.importorskip("mediapipe").solutions.face_mesh
    image = face_image()
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4) as mesh:
        faces = mesh.process(image).multi_face_landmarks
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert faces is not None and len(faces) == 1
    xs = [p.x for p in faces[0].landmark]
    assert max(xs) - min(xs) > 0.35  # the face fills a good part of the frame


def test_synthetic_speech_is_silent_between_its_syllables_and_has_a_long_pause() -> None:
    samples, syllables = synth_speech(SECONDS, 16000)
    assert syllables == speech_syllables(SECONDS)
    voiced = np.zeros(samples.size, dtype=bool)
    for start, end in syllables:
        voiced[round(start * 16000) : round(end * 16000)] = True
        assert np.abs(samples[round(start * 16000) : round(end * 16000)]).max() > 0.1
    assert np.abs(samples[~voiced]).max() < 1e-3
    gaps = [b[0] - a[1] for a, b in zip(syllables, syllables[1:])]
    assert max(gaps) >= 0.8
    assert syllables[0][0] >= 0.3 and syllables[-1][1] <= SECONDS - 0.3
    assert all(0.15 <= end - start <= 0.3 for start, end in syllables)


def test_talking_video_moves_a_little_between_frames() -> None:
    first, second, later = (talking_frame(t).astype(int) for t in (0.0, 0.04, 0.6))
    assert 0.3 < np.abs(first - second).mean() < 15
    assert np.abs(first - later).mean() > np.abs(first - second).mean()


# --- accepted audio -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audio_file(work: Path, request: pytest.FixtureRequest) -> tuple[Path, int, int]:
    name = request.param
    arguments, suffix, rate, channels = AUDIO_FORMATS[name]
    encoder = ENCODERS.get(name)
    if encoder is not None and encoder not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {encoder} encoder to write {name}")
    return make_speech(work / f"speech-{name}.{suffix}", seconds=SECONDS, **arguments), rate, channels


@pytest.mark.parametrize("audio_file", list(AUDIO_FORMATS), indirect=True)
def test_probe_reports_rate_channels_and_duration_of_each_audio_format(audio_file) -> None:
    path, rate, channels = audio_file
    info = probe(path, expect="audio")
    assert info.audio is not None
    assert (info.audio.sample_rate, info.audio.channels) == (rate, channels)
    assert info.duration == pytest.approx(SECONDS, abs=0.05)


@pytest.mark.parametrize("audio_file", list(AUDIO_FORMATS), indirect=True)
def test_load_audio_gives_16k_mono_float_with_the_speech_envelope(audio_file) -> None:
    path, _, _ = audio_file
    audio = load_audio(path)
    truth, _ = synth_speech(SECONDS, ANALYSIS_RATE)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.duration == pytest.approx(SECONDS, abs=0.05)
    assert audio.duration == audio.samples.size / ANALYSIS_RATE
    assert np.abs(audio.samples).max() <= 1.0
    assert envelope_match(audio.samples, truth) > 0.9
    assert audio.path == path


@pytest.mark.parametrize("variant", ["wav-s24", "wav-float", "wav-quad-extensible"])
def test_high_resolution_and_extensible_wav_decode_like_the_16_bit_file(work: Path, variant: str) -> None:
    arguments, _, rate, channels = AUDIO_FORMATS[variant]
    path = make_speech(work / f"compare-{variant}.wav", seconds=SECONDS, **arguments)
    # Every channel carries the same voice, so any downmix matches a plain 16-bit mono file.
    reference = make_speech(work / f"compare-{variant}-s16.wav", seconds=SECONDS, rate=rate)
    assert wav_format_tag(reference) == 1
    if variant != "wav-float":
        assert wav_format_tag(path) == EXTENSIBLE  # FFmpeg's muxer writes >16 bits or >2 channels so
    assert correlation(load_audio(path).samples, load_audio(reference).samples) > 0.99


def test_a_video_with_a_soundtrack_is_accepted_as_audio(talking_video_with_audio: Path) -> None:
    info = probe(talking_video_with_audio, expect="audio")
    assert info.audio is not None and info.audio.codec == "aac"
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert load_audio(talking_video_with_audio).duration == pytest.approx(2.0, abs=0.05)


def test_espeak_speech_when_espeak_is_installed(work: Path) -> None:
    path = espeak_speech(work / "espeak.wav", "Hello there, this is a test.", "en")
    if path is None:
        pytest.skip("espeak-ng is not installed")
    assert load_audio(path).duration > 1.0


@pytest.mark.parametrize("riff_size", [0x7FFFF024, 0xFFFFFFFF, 0])
def test_a_short_wav_streamed_into_a_pipe_is_not_called_truncated(tmp_path: Path, riff_size: int) -> None:
    # A pipe writer cannot go back to fill in the sizes; espeak-ng --stdout leaves ~2 GiB there,
    # which read as a file missing nearly all of its bytes.
    path = as_streamed_wav(make_speech(tmp_path / "streamed.wav", seconds=1.3), riff_size=riff_size)
    info = probe(path, expect="audio")
    assert info.duration == pytest.approx(1.3, abs=0.02)
    assert load_audio(path).duration == pytest.approx(1.3, abs=0.02)


def test_a_wav_cut_short_is_still_truncated(tmp_path: Path) -> None:
    path = _cut(make_speech(tmp_path / "cut.wav", seconds=1.3), 0.7)
    with pytest.raises(MediaError) as raised:
        probe(path, expect="audio")
    assert raised.value.code == "truncated"


# --- refused inputs -----------------------------------------------------------------------------

BAD_INPUTS = {
    "text-named-mp4": (lambda d: write_text_file(d / "notes.mp4"), "video", "not_media"),
    "text-as-audio": (lambda d: write_text_file(d / "notes.wav"), "audio", "not_media"),
    "empty-file": (lambda d: write_empty_file(d / "empty.mp4"), "video", "empty"),
    "empty-audio": (lambda d: write_empty_file(d / "empty.wav"), "audio", "empty"),
    "random-bytes": (lambda d: write_random_bytes(d / "noise.mp3"), "audio", "not_media"),
    "png-image": (lambda d: _write_png(d / "photo.mp4"), "video", "not_media"),
    "cut-faststart-mp4": (lambda d: make_truncated_mp4(d / "cut-fs.mp4", faststart=True), "video", "truncated"),
    "cut-mp4-lost-index": (lambda d: make_truncated_mp4(d / "cut.mp4", faststart=False), "video", "truncated"),
    "cut-mp4-as-audio": (lambda d: make_truncated_mp4(d / "cut-a.mp4", faststart=True), "audio", "truncated"),
    "cut-wav": (lambda d: _cut(make_speech(d / "cut.wav", seconds=SECONDS), 0.5), "audio", "truncated"),
    "audio-as-video": (lambda d: make_speech(d / "speech.m4a", container="ipod", rate=44100), "video", "no_video"),
    "mp3-cover-art-as-video": (lambda d: make_mp3_with_cover_art(d / "song.mp3"), "video", "no_video"),
    "video-as-audio": (lambda d: make_talking_video(d / "silent.mp4", seconds=1.0, size=(64, 64)), "audio", "no_audio"),
}


def _write_png(path: Path) -> Path:
    import cv2

    ok, data = cv2.imencode(".png", face_image())
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("display_name", [DISPLAY_NAME, None])
def test_refused_input_raises_its_code_naming_the_file_in_both_languages(tmp_path, case, display_name) -> None:
    make, expect, code = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(MediaError) as raised:
        probe(path, expect=expect, display_name=display_name)
    error = raised.value
    assert error.code == code
    shown = display_name or path.name
    assert shown in error.en and shown in error.zh


@pytest.mark.parametrize("case", ["text-named-mp4", "audio-as-video", "cut-mp4-lost-index"])
def test_read_template_refuses_what_probe_refuses(tmp_path, case) -> None:
    make, _, code = BAD_INPUTS[case]
    with pytest.raises(MediaError) as raised:
        read_template(make(tmp_path), work_dir=tmp_path / "work", display_name=DISPLAY_NAME)
    assert raised.value.code == code


@pytest.mark.parametrize("case", ["text-as-audio", "video-as-audio", "cut-wav"])
def test_load_audio_refuses_what_probe_refuses(tmp_path, case) -> None:
    make, _, code = BAD_INPUTS[case]
    with pytest.raises(MediaError) as raised:
        load_audio(make(tmp_path), display_name=DISPLAY_NAME)
    assert raised.value.code == code


def test_too_long_audio_and_video_are_refused_with_the_limit(speech_wav: Path, talking_video: Path) -> None:
    for path, expect in ((speech_wav, "audio"), (talking_video, "video")):
        with pytest.raises(MediaError) as raised:
            probe(path, expect=expect, max_duration=1.5, display_name=DISPLAY_NAME)
        assert raised.value.code == "too_long"
        assert DISPLAY_NAME in raised.value.en and DISPLAY_NAME in raised.value.zh
        assert probe(path, expect=expect, max_duration=SECONDS + 0.5).duration <= SECONDS + 0.05
    with pytest.raises(MediaError) as raised:
        load_audio(speech_wav, max_duration=1.0)
    assert raised.value.code == "too_long"


# --- templates ----------------------------------------------------------------------------------


def test_template_has_probe_size_rate_and_frame_count(talking_video: Path, work: Path) -> None:
    info = probe(talking_video, expect="video")
    template = read_template(talking_video, work_dir=work)
    assert info.video is not None
    assert (info.video.codec, info.video.fps, info.video.frame_count) == ("h264", 25, 50)
    assert not info.video.variable_frame_rate and info.video.rotation == 0
    assert template.frames.shape == (50, 256, 256, 3) and template.frames.dtype == np.uint8
    assert (template.width, template.height, len(template), template.fps) == (256, 256, 50, 25)
    assert type(template.frames) is np.ndarray
    for k in (0, 17, 49):
        assert np.abs(template.frames[k].astype(int) - talking_frame(k / 25)).mean() < 4


@pytest.fixture(scope="module")
def portrait_upright(work: Path) -> np.ndarray:
    path = make_talking_video(work / "portrait.mp4", seconds=1.0, size=(192, 256))
    return read_template(path, work_dir=work).frames.astype(int)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_phone_video_comes_out_upright(work: Path, portrait_upright: np.ndarray, rotation: int) -> None:
    path = make_talking_video(work / f"rotated-{rotation}.mp4", seconds=1.0, size=(192, 256), rotation=rotation)
    with av.open(str(path)) as container:
        stored = container.streams.video[0]
        assert (stored.width, stored.height) == ((256, 192) if rotation != 180 else (192, 256))
    info = probe(path, expect="video")
    assert info.video is not None
    assert (info.video.rotation, info.video.width, info.video.height) == (rotation, 192, 256)
    frames = read_template(path, work_dir=work).frames.astype(int)
    assert frames.shape == portrait_upright.shape
    assert np.abs(frames - portrait_upright).mean() < 4
    assert np.abs(frames - portrait_upright[:, ::-1, ::-1]).mean() > 20  # upside down would differ


def test_variable_frame_rate_becomes_constant_picking_the_latest_frame(work: Path) -> None:
    path = make_talking_video(work / "vfr.mp4", seconds=2.0, vfr=True)
    times = np.array([float(t) for t in vfr_timestamps(2.0)])
    info = probe(path, expect="video")
    assert info.video is not None and info.video.variable_frame_rate
    assert float(info.video.fps) == pytest.approx(20, rel=0.01)  # 1/15 and 1/30 s gaps average 1/20
    assert info.video.frame_count == times.size
    template = read_template(path, work_dir=work)
    with av.open(str(path)) as container:
        source = [frame.to_ndarray(format="rgb24").astype(int) for frame in container.decode(video=0)]
    assert len(template) == info.video.frame_count
    for k, frame in enumerate(template.frames.astype(int)):
        expected = np.searchsorted(times, k / float(template.fps) + 1e-6, side="right") - 1
        assert np.abs(frame - source[expected]).mean() < 0.5, f"output frame {k}"


@pytest.mark.parametrize(("codec", "pix_fmt"), [("mpeg4", "yuv420p"), ("libx264", "yuv444p")])
def test_odd_sized_template_is_cropped_to_even(work: Path, codec: str, pix_fmt: str) -> None:
    path = make_talking_video(work / f"odd-{codec}.mp4", seconds=1.0, size=(255, 257), codec=codec, pix_fmt=pix_fmt)
    info = probe(path, expect="video")
    assert info.video is not None and (info.video.width, info.video.height) == (255, 257)
    assert info.video.codec == ("mpeg4" if codec == "mpeg4" else "h264")
    template = read_template(path, work_dir=work)
    assert template.frames.shape == (25, 256, 254, 3)
    assert np.abs(template.frames[5].astype(int) - talking_frame(0.2, (255, 257))[:256, :254]).mean() < 6


@pytest.mark.parametrize(
    ("codec", "container", "suffix"),
    [
        ("libvpx-vp9", "webm", "webm"),
        ("libx265", "mp4", "mp4"),
        ("mpeg4", "avi", "avi"),
        ("libx264", "matroska", "mkv"),
    ],
)
def test_other_codecs_and_containers_decode(work: Path, codec: str, container: str, suffix: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = work / f"other-{codec}.{suffix}"
    make_talking_video(path, seconds=1.0, size=(128, 128), codec=codec, container=container)
    template = read_template(path, work_dir=work)
    assert template.frames.shape == (25, 128, 128, 3) and template.fps == 25
    assert np.abs(template.frames[10].astype(int) - talking_frame(0.4, (128, 128))).mean() < 6


def test_large_template_goes_to_a_memory_map_in_work_dir(talking_video, tmp_path, monkeypatch) -> None:
    in_memory = read_template(talking_video, work_dir=tmp_path / "unused")
    monkeypatch.setattr(video_module, "MEMMAP_THRESHOLD_BYTES", 1024)
    mapped = read_template(talking_video, work_dir=tmp_path / "work")
    assert isinstance(mapped.frames, np.memmap)
    assert Path(mapped.frames.filename).parent == tmp_path / "work"
    assert np.array_equal(np.asarray(mapped.frames), in_memory.frames)
    assert not (tmp_path / "unused").exists()


def test_decoding_reports_progress_and_stops_when_asked(talking_video, tmp_path, monkeypatch) -> None:
    reported: list[float] = []
    read_template(talking_video, work_dir=tmp_path, progress=reported.append)
    assert reported[0] < 0.5 and reported[-1] == 1.0 and reported == sorted(reported)

    monkeypatch.setattr(video_module, "MEMMAP_THRESHOLD_BYTES", 1024)
    asked = iter(range(1000))
    with pytest.raises(Cancelled):
        read_template(talking_video, work_dir=tmp_path / "work", should_stop=lambda: next(asked) >= 5)
    assert list((tmp_path / "work").iterdir()) == []  # the memory map went with the cancelled read


# --- looping ------------------------------------------------------------------------------------


def test_loop_plays_forwards_then_backwards_without_jumping_to_the_start() -> None:
    indices = loop_indices(4, 13)
    assert indices.tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert np.abs(np.diff(loop_indices(50, 400))).max() == 1


def test_loop_of_a_longer_template_is_its_beginning_and_one_frame_repeats() -> None:
    assert loop_indices(10, 4).tolist() == [0, 1, 2, 3]
    assert loop_indices(1, 5).tolist() == [0] * 5
    assert loop_indices(2, 5).tolist() == [0, 1, 0, 1, 0]


def test_output_frame_count_rounds_and_is_at_least_one() -> None:
    assert output_frame_count(3.0, Fraction(25)) == 75
    assert output_frame_count(3.02, Fraction(30000, 1001)) == 91
    assert output_frame_count(0.001, Fraction(25)) == 1


# --- writing ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_frames(talking_video: Path, work: Path) -> np.ndarray:
    return read_template(talking_video, work_dir=work).frames


def write_clip(path: Path, frames: np.ndarray, audio: Path, duration: float, fps: Fraction = Fraction(25)) -> Path:
    height, width = frames.shape[1:3]
    with Mp4Writer(path, width=width, height=height, fps=fps, audio_path=audio, duration=duration) as writer:
        for k in loop_indices(len(frames), output_frame_count(duration, fps)):
            writer.write(frames[k])
    return path


def test_written_mp4_is_h264_high_yuv420p_with_aac_of_the_audio_duration(
    tmp_path, template_frames, speech_wav_48k_stereo
) -> None:
    out = write_clip(tmp_path / "out.mp4", template_frames, speech_wav_48k_stereo, SECONDS)
    info = probe(out, expect="video")
    assert info.video is not None and info.audio is not None
    assert (info.video.codec, info.video.width, info.video.height, info.video.fps) == ("h264", 256, 256, 25)
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 48000, 2)
    assert abs(info.duration - SECONDS) <= 1 / 25
    assert abs(probe(out, expect="audio").duration - SECONDS) <= 1 / 25
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.pix_fmt, stream.codec_context.profile) == ("yuv420p", "High")
        decoded = [frame.to_ndarray(format="rgb24").astype(int) for frame in container.decode(stream)]
    assert len(decoded) == 75
    for k, index in enumerate(loop_indices(len(template_frames), 75)):
        assert np.abs(decoded[k] - template_frames[index]).mean() < 4  # colours survive the YUV trip
    assert envelope_match(load_audio(out).samples, load_audio(speech_wav_48k_stereo).samples) > 0.95


def test_written_mp4_has_its_index_before_the_media_data(tmp_path, template_frames, speech_wav) -> None:
    boxes = top_level_boxes(write_clip(tmp_path / "fast.mp4", template_frames, speech_wav, 1.0))
    assert boxes[0] == "ftyp" and boxes.index("moov") < boxes.index("mdat")


@pytest.mark.parametrize(
    ("arguments", "rate", "channels"),
    [
        ({}, 16000, 1),
        ({"rate": 48000, "channels": 6}, 48000, 2),
        ({"rate": 8000}, 8000, 1),
        ({"rate": 44100, "channels": 2}, 44100, 2),
    ],
)
def test_soundtrack_keeps_rate_and_mono_or_stereo(tmp_path, template_frames, arguments, rate, channels) -> None:
    speech = make_speech(tmp_path / "speech.wav", seconds=1.0, **arguments)
    info = probe(write_clip(tmp_path / "out.mp4", template_frames, speech, 1.0), expect="audio")
    assert info.audio is not None and (info.audio.sample_rate, info.audio.channels) == (rate, channels)


def test_soundtrack_is_trimmed_to_the_requested_duration(tmp_path, template_frames, speech_wav) -> None:
    out = write_clip(tmp_path / "short.mp4", template_frames, speech_wav, 2.0)
    assert probe(out, expect="audio").duration == pytest.approx(2.0, abs=1 / 25)
    assert probe(out, expect="video").video.frame_count == 50


def test_ntsc_rate_is_kept_exactly(tmp_path, template_frames, speech_wav) -> None:
    out = write_clip(tmp_path / "ntsc.mp4", template_frames, speech_wav, 1.0, fps=Fraction(30000, 1001))
    info = probe(out, expect="video")
    assert info.video is not None and info.video.fps == Fraction(30000, 1001)
    assert abs(info.duration - 1.0) <= 1001 / 30000


def test_failed_write_leaves_neither_output_nor_temporary_file(tmp_path, template_frames, speech_wav) -> None:
    previous = tmp_path / "previous.mp4"
    previous.write_bytes(b"an older result")
    with pytest.raises(RuntimeError, match="engine failed"):
        with Mp4Writer(
            previous, width=256, height=256, fps=Fraction(25), audio_path=speech_wav, duration=1.0
        ) as writer:
            for frame in template_frames[:10]:
                writer.write(frame)
            raise RuntimeError("engine failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous.mp4"]
    assert previous.read_bytes() == b"an older result"


@pytest.mark.parametrize("encoder", ["auto", "nvenc"])
def test_an_encoder_that_does_not_open_falls_back_to_libx264_and_a_valid_file(
    tmp_path, template_frames, speech_wav, caplog, encoder
) -> None:
    if nvenc_opens(256, 256, Fraction(25)):
        pytest.skip("NVENC opens on this machine: nothing to fall back from")
    with caplog.at_level(logging.WARNING, logger="koubo.media.video"):
        with Mp4Writer(
            tmp_path / "out.mp4",
            width=256,
            height=256,
            fps=Fraction(25),
            audio_path=speech_wav,
            duration=1.0,
            encoder=encoder,
        ) as writer:
            for frame in template_frames[:25]:
                writer.write(frame)
    assert writer.encoder == "libx264"
    info = probe(tmp_path / "out.mp4", expect="video")
    assert info.video is not None and (info.video.codec, info.video.width) == ("h264", 256)
    assert info.video.frame_count == 25
    warned = [r.getMessage() for r in caplog.records if "nvenc" in r.getMessage()]
    # Forced: the fallback is said in the log; auto: silent.
    assert len(warned) == (1 if encoder == "nvenc" else 0), warned


def test_libx264_asked_for_never_tries_nvenc(tmp_path, template_frames, speech_wav, monkeypatch) -> None:
    def refuse(*args: object) -> bool:
        raise AssertionError("NVENC was tried")

    monkeypatch.setattr("koubo.media.video.nvenc_opens", refuse)
    with Mp4Writer(
        tmp_path / "out.mp4",
        width=256,
        height=256,
        fps=Fraction(25),
        audio_path=speech_wav,
        duration=1.0,
        encoder="libx264",
    ) as writer:
        writer.write(template_frames[0])
    assert writer.encoder == "libx264"


def test_close_publishes_only_the_final_name(tmp_path, template_frames, speech_wav) -> None:
    writer = Mp4Writer(
        tmp_path / "final.mp4", width=256, height=256, fps=Fraction(25), audio_path=speech_wav, duration=1.0
    )
    for frame in template_frames[:25]:
        writer.write(frame)
    hidden = [p.name for p in tmp_path.iterdir()]
    assert len(hidden) == 1 and hidden[0].startswith(".final.mp4.part-")
    assert writer.close() == tmp_path / "final.mp4"
    assert [p.name for p in tmp_path.iterdir()] == ["final.mp4"]


def test_writer_refuses_frames_of_the_wrong_shape(tmp_path, speech_wav) -> None:
    with pytest.raises(ValueError):
        with Mp4Writer(
            tmp_path / "x.mp4", width=64, height=64, fps=Fraction(25), audio_path=speech_wav, duration=1.0
        ) as writer:
            writer.write(np.zeros((64, 63, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


# --- real recordings ----------------------------------------------------------------------------

# What ../shared/media/SOURCES.md says of each file.
REAL_AUDIO = {
    "speech_en_44k.wav": (5.0, 44100, 2),
    "speech_zh_48k_stereo.wav": (8.0, 48000, 2),
    "speech_24bit_extensible.wav": (9.3, 48000, 2),
}
REAL_VIDEO = {
    "speaker_vfr.mp4": (6.1, "h264", 700, Fraction(1350, 61), True),
    "speaker_map.mp4": (5.0, "h264", 844, Fraction(25), False),
    "speaker_mpeg4.mp4": (8.0, "mpeg4", 512, Fraction(25), False),
}
needs_shared_media = pytest.mark.skipif(not SHARED_MEDIA.exists(), reason="../shared/media is not beside the checkout")


@pytest.mark.real_media
@needs_shared_media
@pytest.mark.parametrize("name", list(REAL_AUDIO))
def test_real_speech_files_probe_and_load(name: str) -> None:
    seconds, rate, channels = REAL_AUDIO[name]
    path = SHARED_MEDIA / name
    info = probe(path, expect="audio")
    assert info.audio is not None and (info.audio.sample_rate, info.audio.channels) == (rate, channels)
    assert info.duration == pytest.approx(seconds, abs=0.05)
    audio = load_audio(path)
    assert audio.duration == pytest.approx(info.duration, abs=0.01)
    if name == "speech_24bit_extensible.wav":
        assert wav_format_tag(path) == EXTENSIBLE and info.audio.codec == "pcm_s24le"


@pytest.mark.real_media
@needs_shared_media
@pytest.mark.parametrize("name", list(REAL_VIDEO))
def test_real_speaker_videos_probe_and_decode(name: str, work: Path) -> None:
    seconds, codec, size, fps, variable = REAL_VIDEO[name]
    path = SHARED_MEDIA / name
    info = probe(path, expect="video")
    assert info.video is not None
    assert info.duration == pytest.approx(seconds, abs=0.05)
    assert (info.video.codec, info.video.width, info.video.height) == (codec, size, size)
    assert info.video.variable_frame_rate == variable
    assert float(info.video.fps) == pytest.approx(float(fps), rel=0.002)
    template = read_template(path, work_dir=work)
    assert template.frames.shape == (info.video.frame_count, size, size, 3)
    assert template.frames.std() > 10  # real pictures, not a blank
    assert load_audio(path).duration == pytest.approx(seconds, abs=0.1)
