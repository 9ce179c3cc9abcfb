"""Colour fidelity of koubo's output on real templates, away from the mouth.

    PYTHONPATH=$PWD .venv/bin/python bench/colour.py [--seconds 3]

For each real template in ../shared/media, at its own size and made 590x590 and 592x592 (scaled
to cover, centre-cropped: 590 is 2 more than a multiple of 4), `koubo generate` lip-syncs a few
seconds of real speech; the output's pixels outside the lower face (every frame's lower-face
box, grown by half, united over the clip) are compared with the template's by PSNR, next to a
plain PyAV libx264 encode of the same template frames at the same CRF and preset. Goal: koubo
>= plain - 0.5 dB everywhere. Then the writer's RGB->YUV conversion time at 1080p against the
conversion koubo used before (cv2 BT.601 I420, wrong at heights 2 (mod 4)) and swscale's, and
the whole writer's speed against a plain PyAV encode.
Figures are printed last. Run it with PYTHONPATH pointing at another checkout to measure that one.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from koubo.config import Settings
from koubo.face import geometry as geo
from koubo.media.video import Mp4Writer, loop_indices, read_template
from koubo.pipeline import GenerateOptions, Generator

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
TEMPLATES = ("speaker_map.mp4", "speaker_mpeg4.mp4", "speaker_vfr.mp4", "template_silent_halfbody.mp4")
SPEECH = "speech_en_44k.wav"
SIZES = (None, (590, 590), (592, 592))  # None: the template's own size


def cover(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale `frame` to cover width x height, then crop the centre."""
    h, w = frame.shape[:2]
    scale = max(width / w, height / h)
    big = cv2.resize(frame, (max(width, round(w * scale)), max(height, round(h * scale))), interpolation=cv2.INTER_AREA)
    y0, x0 = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return big[y0 : y0 + height, x0 : x0 + width]


def encode(path: Path, frames, fps: Fraction, crf: int, preset: str) -> Path:
    """Plain PyAV: RGB frames handed to libx264, converted by PyAV itself."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": preset})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for index, rgb in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            picture.pts = index
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def trimmed_speech(path: Path, seconds: float, out: Path) -> Path:
    with av.open(str(path)) as source, av.open(str(out), "w", format="wav") as sink:
        stream = sink.add_stream("pcm_s16le", rate=source.streams.audio[0].rate)
        stream.layout = source.streams.audio[0].layout.name
        for frame in source.decode(audio=0):
            if frame.time >= seconds:
                break
            frame.pts = None
            sink.mux(stream.encode(frame))
        sink.mux(stream.encode(None))
    return out


def outside_lower_face(landmarks: np.ndarray, present: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """True away from every frame's lower face (its box grown by half on each side)."""
    keep = np.ones(shape, dtype=bool)
    for points in landmarks[present][:, geo.LOWER_FACE, :2]:
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        dx, dy = (x1 - x0) / 2, (y1 - y0) / 2
        keep[max(0, int(y0 - dy)) : int(y1 + dy) + 1, max(0, int(x0 - dx)) : int(x1 + dx) + 1] = False
    return keep


def psnr_where(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    diff = (a.astype(np.float32) - b.astype(np.float32))[:, mask]
    return 10 * np.log10(255**2 / max(float(np.mean(diff**2)), 1e-10))


def measure(work: Path, name: str, template: Path, speech: Path, settings: Settings) -> str:
    generator = Generator(settings)
    out = work / f"out-{name}.mp4"
    generator.generate(speech, template, out, GenerateOptions(check=False))
    video = read_template(template, work_dir=work)
    track, _ = generator.face_track(template, video)  # from the cache generate() filled
    shown = np.asarray(video.frames)  # constant rate, as koubo renders from (speaker_vfr.mp4 is not)
    ours = decode(out)
    source = shown[loop_indices(len(shown), len(ours))]
    plain = decode(encode(work / f"plain-{name}.mp4", source, video.fps, settings.video_crf, settings.video_preset))
    mask = outside_lower_face(track.landmarks, track.present, shown.shape[1:3])
    koubo_db, plain_db = psnr_where(ours, source, mask), psnr_where(plain, source, mask)
    verdict = "ok" if koubo_db >= plain_db - 0.5 else "BELOW GOAL"
    return (
        f"  {name:<42} {video.width:>4}x{video.height:<4} plain {plain_db:6.2f} dB  koubo {koubo_db:6.2f} dB"
        f"  ({koubo_db - plain_db:+.2f})  {verdict}"
    )


def conversion_speed(width: int = 1920, height: int = 1080, rounds: int = 15) -> list[str]:
    """Median ms per frame of each RGB->yuv420p conversion, taken in turns (a busy machine slows all alike)."""
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)

    def old() -> av.VideoFrame:
        return av.VideoFrame.from_numpy_buffer(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")

    def swscale() -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")

    candidates = {"cv2 I420 (before; wrong at 2 mod 4)": old, "swscale (plain PyAV)": swscale}
    try:
        from koubo.media.colour import Colour, yuv420p_frame
    except ImportError:  # a checkout before koubo.media.colour
        pass
    else:
        candidates["koubo yuv420p_frame"] = lambda: yuv420p_frame(rgb, Colour(matrix=1))
    times: dict[str, list[float]] = {label: [] for label in candidates}
    for _ in range(rounds):
        for label, convert in candidates.items():
            start = time.perf_counter()
            for _ in range(5):
                convert()
            times[label].append((time.perf_counter() - start) / 5 * 1000)
    median = {label: float(np.median(ms)) for label, ms in times.items()}
    base = median["cv2 I420 (before; wrong at 2 mod 4)"]
    return [f"  {label:<42} {ms:6.2f} ms/frame  ({ms / base:.1f}x the cv2 I420 time)" for label, ms in median.items()]


def writer_speed(work: Path, speech: Path, width: int = 1920, height: int = 1080, count: int = 25) -> str:
    """Mp4Writer against a plain PyAV encode of the same frames (same CRF/preset), in turns."""
    settings = Settings(data_dir=work / "data")
    rng = np.random.default_rng(1)
    still = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2)
    frames = [np.roll(still, 4 * k, axis=1) for k in range(count)]
    ours, plain = [], []
    for turn in range(2):
        start = time.perf_counter()
        size = {"width": width, "height": height, "fps": Fraction(25)}
        encoding = {"crf": settings.video_crf, "preset": settings.video_preset}
        out = work / f"writer{turn}.mp4"
        with Mp4Writer(out, **size, audio_path=speech, duration=count / 25, **encoding) as writer:
            for frame in frames:
                writer.write(frame)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        encode(work / f"plain{turn}.mp4", frames, Fraction(25), settings.video_crf, settings.video_preset)
        plain.append(time.perf_counter() - start)
    return (
        f"  Mp4Writer {count / min(ours):5.1f} fps, plain PyAV {count / min(plain):5.1f} fps at {width}x{height}"
        f" -> Mp4Writer takes {min(ours) / min(plain):.2f}x the plain encode's time"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="speech per output")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--speed-only", action="store_true", help="skip the real templates")
    args = parser.parse_args()
    if not (SHARED / SPEECH).exists():
        sys.exit(f"bench/colour.py needs the real media in {SHARED}")
    work = Path(tempfile.mkdtemp(prefix="koubo-colour-"))
    lines = [f"PSNR outside the lower face vs the template (CRF/preset = koubo's defaults), {args.seconds:g} s each:"]
    try:
        speech = trimmed_speech(SHARED / SPEECH, args.seconds, work / "speech.wav")
        settings = Settings(data_dir=work / "data")
        for file in () if args.speed_only else TEMPLATES:
            if not (SHARED / file).exists():
                continue
            for size in SIZES:
                if size is None:
                    name, template = file, SHARED / file
                else:
                    name = f"{file} as {size[0]}x{size[1]}"
                    frames = read_template(SHARED / file, work_dir=work).frames
                    template = work / f"{Path(file).stem}-{size[0]}x{size[1]}.mp4"
                    encode(template, [cover(f, *size) for f in frames], Fraction(25), 10, "veryfast")
                    del frames
                lines.append(measure(work, name, template, speech, settings))
                print(lines[-1], flush=True)
        lines.append("RGB -> yuv420p conversion at 1920x1080 (BT.709 for koubo's):")
        lines.extend(conversion_speed())
        lines.append("encoding (video and audio) at koubo's default CRF/preset:")
        lines.append(writer_speed(work, speech))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nkoubo bench/colour.py, koubo from {Path(sys.modules['koubo'].__file__).parent}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
