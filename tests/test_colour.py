"""Colour fidelity of the output at every frame size, and the template's colour description,
bit depth and frame rate carried to a widely playable H.264 (issue 12, items 1 and 5)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from av.video.reformatter import Colorspace
from colour_fixtures import colour_frames, decode_rgb, make_colour_clip, plain_encode, psnr

from koubo.config import Settings
from koubo.media.colour import Colour
from koubo.media.video import Mp4Writer, read_template
from koubo.pipeline import GenerateOptions, Generator

from media_fixtures import talking_frame

CRF, PRESET = 20, "veryfast"
MARGIN_DB = 0.5

# (width, height, frames): heights and widths 0 and 2 more than a multiple of 4, multiples of 16
# and not, 1:1, 4:3, 16:9, 9:16, 4:5; big sizes get few frames to keep the test quick.
SIZES = [
    (590, 590, 4),  # both sides 2 (mod 4)
    (592, 592, 4),  # both multiples of 16
    (592, 590, 4),
    (640, 480, 4),  # 4:3
    (962, 722, 3),  # 4:3-ish, 2 (mod 4) and (mod 16)
    (1080, 1350, 2),  # Instagram 4:5
    (1080, 1078, 2),
    (750, 1334, 2),  # 9:16 phone, 1334 = 2 (mod 4)
    (1920, 1080, 2),  # 16:9, 1080 = 8 (mod 16)
    (1080, 1920, 2),  # 9:16
    (3840, 2160, 1),
]


def write(path, frames, audio, *, fps=Fraction(25), colour: Colour | None = None):
    height, width = frames[0].shape[:2]
    # No colour: the writer's default, so the size grid also runs against writers without one.
    extra = {} if colour is None else {"colour": colour}
    size = {"width": width, "height": height, "fps": fps}
    with Mp4Writer(
        path, **size, audio_path=audio, duration=len(frames) / fps, crf=CRF, preset=PRESET, **extra
    ) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def video_stream_tags(path) -> tuple[str, str, int, int, int, int]:
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        return (
            context.pix_fmt,
            context.profile,
            context.colorspace,
            context.color_range,
            context.color_primaries,
            context.color_trc,
        )


@pytest.mark.parametrize(("width", "height", "count"), SIZES, ids=[f"{w}x{h}" for w, h, _ in SIZES])
def test_writer_matches_a_plain_libx264_encode_at_every_size(tmp_path, speech_wav, width, height, count) -> None:
    frames = colour_frames(width, height, count)
    ours = decode_rgb(write(tmp_path / "ours.mp4", frames, speech_wav))
    plain = decode_rgb(plain_encode(tmp_path / "plain.mp4", frames, fps=Fraction(25), crf=CRF, preset=PRESET))
    source = np.stack(frames)
    assert ours.shape == source.shape
    assert psnr(ours, source) >= psnr(plain, source) - MARGIN_DB
    # Misplaced chroma shows first along the top rows and in the saturated bars.
    assert psnr(ours[:, :16], source[:, :16]) >= psnr(plain[:, :16], source[:, :16]) - MARGIN_DB


def copy_through_koubo(tmp_path, clip, audio):
    template = read_template(clip, work_dir=tmp_path / "work")
    out = write(tmp_path / "out.mp4", list(template.frames), audio, fps=template.fps, colour=template.colour)
    return template, out


def test_bt709_template_gives_a_bt709_output_of_the_same_range(tmp_path, speech_wav) -> None:
    frames = colour_frames(640, 360, 4)
    clip = make_colour_clip(tmp_path / "hd.mp4", frames, colorspace=Colorspace.ITU709)
    _, out = copy_through_koubo(tmp_path, clip, speech_wav)
    # yuv420p, High, BT.709 matrix, limited range, BT.709 primaries and transfer.
    assert video_stream_tags(out) == ("yuv420p", "High", 1, 1, 1, 1)
    assert psnr(decode_rgb(out), decode_rgb(clip)) >= 38


def test_untagged_template_gives_an_untagged_output_with_its_own_samples(tmp_path, speech_wav) -> None:
    frames = colour_frames(640, 360, 4)
    clip = make_colour_clip(tmp_path / "plain.mp4", frames, tagged=False)
    _, out = copy_through_koubo(tmp_path, clip, speech_wav)
    _, _, matrix, _, primaries, transfer = video_stream_tags(out)
    # A player guesses the same for both (by size): a tag on one only would change the look.
    assert (matrix, primaries, transfer) == (2, 2, 2)
    assert psnr(decode_rgb(out), decode_rgb(clip)) >= 38


def test_reserved_colour_codes_in_a_header_are_not_passed_on(tmp_path, speech_wav) -> None:
    frame = av.VideoFrame(64, 64, "yuv420p")
    frame.colorspace, frame.color_primaries, frame.color_trc = 3, 3, 0  # reserved codes
    colour = Colour.of_frame(frame)
    assert (colour.matrix, colour.primaries, colour.transfer) == (1, 2, 2)
    out = write(tmp_path / "out.mp4", colour_frames(64, 64, 2), speech_wav, colour=colour)
    assert video_stream_tags(out)[2:] == (1, 1, 2, 2)


def luma_levels(path) -> tuple[int, int]:
    """Darkest and brightest Y' sample (1st and 99.9th percentile) of the first frame."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        luma = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, frame.planes[0].line_size)
        luma = luma[:, : frame.width]
        return int(np.percentile(luma, 0.1)), int(np.percentile(luma, 99.9))


def test_full_range_phone_clip_is_neither_washed_out_nor_crushed(tmp_path, speech_wav) -> None:
    frames = colour_frames(360, 640, 4)
    clip = make_colour_clip(tmp_path / "phone.mp4", frames, pix_fmt="yuvj420p", full_range=True)
    template, out = copy_through_koubo(tmp_path, clip, speech_wav)
    assert template.colour.full_range
    assert video_stream_tags(out)[3] == 2  # full (JPEG) range, as the phone wrote it
    assert luma_levels(out) == pytest.approx(luma_levels(clip), abs=3)  # ~0..255, not 16..235
    decoded, shown = decode_rgb(out), decode_rgb(clip)
    side = 360 // 8
    black, white = decoded[:, -side + 4 :, 4 : side - 4], decoded[:, -side + 4 :, -side + 4 : -4]
    assert black.mean() <= 3 and white.mean() >= 252
    assert np.abs(decoded.mean(axis=(0, 1, 2)) - shown.mean(axis=(0, 1, 2))).max() < 1.0
    assert psnr(decoded, shown) >= 38


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv422p", "yuv422p10le"])
def test_10bit_and_422_templates_give_8bit_420_high_profile(tmp_path, speech_wav, pix_fmt) -> None:
    frames = colour_frames(480, 270, 3)  # 270 = 2 (mod 4), as 1350 and 1078
    clip = make_colour_clip(tmp_path / "deep.mp4", frames, pix_fmt=pix_fmt, colorspace=Colorspace.ITU709)
    template, out = copy_through_koubo(tmp_path, clip, speech_wav)
    assert video_stream_tags(out) == ("yuv420p", "High", 1, 1, 1, 1)
    # What 4:2:0 costs a 4:2:2 picture, plain PyAV pays too.
    shown = decode_rgb(clip)
    plain = plain_encode(tmp_path / "plain.mp4", list(template.frames), fps=template.fps, crf=CRF, preset=PRESET)
    assert psnr(decode_rgb(out), shown) >= psnr(decode_rgb(plain), shown) - MARGIN_DB


@pytest.mark.parametrize(
    "fps", [Fraction(24000, 1001), Fraction(30000, 1001), Fraction(50), Fraction(60)], ids=str
)
def test_odd_frame_rates_are_kept_exactly(tmp_path, speech_wav, fps) -> None:
    count = 12
    clip = make_colour_clip(tmp_path / "rate.mp4", colour_frames(320, 240, count), fps=fps)
    template, out = copy_through_koubo(tmp_path, clip, speech_wav)
    assert template.fps == fps and len(template) == count
    with av.open(str(clip)) as container:
        source_time_base = container.streams.video[0].time_base
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        times = [frame.pts * stream.time_base for frame in container.decode(stream)]
        assert (stream.average_rate, stream.time_base) == (fps, source_time_base)
    assert len(times) == count
    assert set(np.diff(times)) == {1 / fps}  # every frame exactly one period after the last


def test_generated_video_keeps_a_bt709_full_range_templates_colour(tmp_path, speech_wav) -> None:
    # 256x270: 270 = 2 (mod 4), where chroma used to be misplaced.
    frames = [np.vstack([talking_frame(k / 25), np.full((14, 256, 3), 90, np.uint8)]) for k in range(50)]
    clip = make_colour_clip(tmp_path / "face.mp4", frames, colorspace=Colorspace.ITU709, full_range=True)
    out = tmp_path / "out.mp4"
    Generator(Settings(data_dir=tmp_path / "data")).generate(speech_wav, clip, out, GenerateOptions(check=False))
    # FFmpeg's H.264 decoder calls a full-range 8-bit 4:2:0 stream yuvj420p.
    assert video_stream_tags(out) == ("yuvj420p", "High", 1, 2, 1, 1)
    shown, ours = decode_rgb(clip), decode_rgb(out)
    # Away from the face (the bottom band and the top rows), the output is the template's picture.
    assert psnr(ours[:50, -14:], shown[:, -14:]) >= 38
    assert psnr(ours[:50, :24], shown[:, :24]) >= 34
