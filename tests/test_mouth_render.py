"""What the classic engine's mouths look like, measured on encoded output of generated faces.

Targets are written by hand (no audio analysis in the way), the engine renders them, the frames
go through H.264, and MediaPipe measures the mouth on what a viewer would see.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from koubo.engines.base import RenderInput
from koubo.engines.classic import WARP_FULL_APERTURE, ClassicEngine, warp_mouth, warp_opening
from koubo.engines.synth_mouth import MouthColours, paint_mouth
from koubo.face import geometry as geo
from koubo.face.tracker import FaceTrack, track_faces
from koubo.features import compute_audio_features
from koubo.features.mouth import MouthTargets
from koubo.media.video import Mp4Writer
from koubo.samples import synth_speech, talking_frame, write_sample_speech

FPS = 25.0
SIZE = (320, 320)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mouth-render")


@pytest.fixture(scope="module")
def speech(work) -> Path:
    return write_sample_speech(work / "speech.wav", seconds=3.0)


@pytest.fixture(scope="module")
def features():
    samples, _ = synth_speech(1.0)
    return compute_audio_features(samples, "synth")


@pytest.fixture(scope="module")
def still_face():
    """A face that never opens its mouth: the engine must take the warp path."""
    frames = np.stack([talking_frame(i / FPS, SIZE) for i in range(40)])
    return frames, track_faces(frames, fps=FPS)


@pytest.fixture(scope="module")
def talking_face(still_face):
    """A face that talks: its mouth opens and closes in a few different rhythms, so retrieval has
    real (rendered) open mouths to borrow and must cut between them."""
    frames, track = still_face
    n = 80
    opening = 0.5 + 0.5 * np.sin(np.arange(n) / 2.3) * np.cos(np.arange(n) / 7.1)
    rest = np.nan_to_num(geo.mouth_aperture(track.landmarks))
    talking = np.stack(
        [
            warp_mouth(frames[i % 40], track.landmarks[i % 40], aperture=a, width=0.0, own_aperture=rest[i % 40])
            for i, a in enumerate(opening)
        ]
    )
    return talking, track_faces(talking, fps=FPS)


def targets(n: int, aperture, *, width=0.0, rounding=None, closure=None) -> MouthTargets:
    def channel(value):
        return None if value is None else np.broadcast_to(np.asarray(value, np.float32), (n,)).copy()

    return MouthTargets(
        FPS,
        channel(aperture),
        channel(width),
        np.ones(n, bool),
        rounding=channel(rounding),
        closure=channel(closure),
    )


def render_encoded(frames, track, features, wanted: MouthTargets, speech: Path, path: Path) -> np.ndarray:
    """Render `wanted` over the template, encode it as H.264, and decode what was written."""
    n = len(wanted.aperture)
    job = RenderInput(
        frames=frames,
        fps=FPS,
        track=track,
        audio=features,
        targets=wanted,
        source_index=np.arange(n) % len(frames),
    )
    h, w = frames.shape[1:3]
    with Mp4Writer(path, width=w, height=h, fps=Fraction(int(FPS)), audio_path=speech, duration=n / FPS) as out:
        for frame in ClassicEngine().render(job):
            out.write(frame)
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])[:n]


def measured(frames: np.ndarray) -> FaceTrack:
    track = track_faces(frames, fps=FPS)
    assert track.present.all()
    return track


def test_a_bilabial_closes_the_rendered_lips(still_face, features, speech, work):
    frames, track = still_face
    n = 30
    closure = np.zeros(n)
    closure[10:20] = 1.0  # /m/ in the middle of an open vowel: lips pressed together
    out = render_encoded(frames, track, features, targets(n, 0.8, closure=closure), speech, work / "bilabial.mp4")
    aperture = geo.mouth_aperture(measured(out).landmarks)
    rest = float(np.median(geo.mouth_aperture(track.landmarks)))
    # The tracker smooths in time: judge the middle of each stretch.
    closed = float(aperture[13:17].max())
    # This face rests with parted lips (a smile): pressed together, they are closer than at rest.
    assert closed < rest - 0.01
    assert min(np.median(aperture[:7]), np.median(aperture[23:])) > closed + 0.03


def test_a_rounded_target_narrows_the_rendered_mouth(still_face, features, speech, work):
    frames, track = still_face
    n = 12

    def width_of(name: str, **shape) -> float:
        out = render_encoded(frames, track, features, targets(n, 0.5, **shape), speech, work / f"{name}.mp4")
        return float(np.median(geo.mouth_width(measured(out).landmarks)[3:]))

    rounded = width_of("rounded", rounding=1.0)  # /u/: rounding without a width cue
    neutral = width_of("neutral")
    spread = width_of("spread", width=1.0)  # /i/
    assert rounded < neutral - 0.02
    assert spread > neutral + 0.02


def lip_edge_counts(frames: np.ndarray, track: FaceTrack) -> np.ndarray:
    """Strong horizontal edges down the middle of the mouth, per frame.

    A luminance profile is taken down the central third of the mouth, from the nose to the chin;
    an edge is a local maximum of its vertical gradient above a fixed contrast. One mouth gives
    its own few (lip rims, teeth); two mouths dissolved into each other give more.
    """
    counts = []
    for frame, lm in zip(frames, track.landmarks):
        left, right = lm[geo.MOUTH_LEFT, :2], lm[geo.MOUTH_RIGHT, :2]
        centre_x = 0.5 * (left[0] + right[0])
        third = abs(right[0] - left[0]) / 6
        top, bottom = lm[2, 1], lm[152, 1]  # under the nose, the chin
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        column = grey[int(top) : int(bottom), int(centre_x - third) : int(centre_x + third)].mean(1)
        gradient = np.abs(np.diff(cv2.GaussianBlur(column[:, None], (1, 0), 1.0).ravel()))
        peaks = (gradient[1:-1] > gradient[:-2]) & (gradient[1:-1] >= gradient[2:]) & (gradient[1:-1] > 6.0)
        counts.append(int(peaks.sum()))
    return np.array(counts)


def test_consecutive_frames_never_show_two_sets_of_lips(talking_face, features, speech, work):
    frames, track = talking_face
    n = 60
    # Jumps in the wanted opening force the plan to cut between different source mouths.
    wanted = np.where((np.arange(n) // 5) % 2 == 0, 0.9, 0.15) * (0.8 + 0.2 * np.cos(np.arange(n)))
    out = render_encoded(frames, track, features, targets(n, wanted), speech, work / "cuts.mp4")
    single = lip_edge_counts(frames, track)
    rendered = lip_edge_counts(out, measured(out))
    assert rendered.max() <= single.max()


def painted_wide_mouth(scale: float = 108.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A wide-open painted mouth (gap 0.25 face units, as the warp path's widest) on flat skin:
    the picture, the opening's mask and the middle column's brightness from lip to lip."""
    cx, cy, half = 100.0, 60.0, 0.37 * scale
    x = np.linspace(-half, half, 21)
    upper = np.column_stack([cx + x, cy - 0.03 * scale * (1 - (x / half) ** 2)])
    lower = np.column_stack([cx + x, cy + 0.22 * scale * np.clip(1 - (x / half) ** 2, 0, 1) ** 0.85])
    lips, skin = np.array([190.0, 120.0, 120.0]), np.array([200.0, 160.0, 145.0])
    region = np.empty((140, 200, 3), np.float32)
    region[:] = skin
    down, across = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    colours = MouthColours(lips, skin)
    out = paint_mouth(region, upper, lower, across, down, teeth=1.0, spread=0.0, scale=scale, colours=colours)
    mask = np.zeros(out.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.vstack([upper, lower[::-1]])).astype(np.int32)], 1)
    top, bottom = int(np.ceil(upper[10, 1])), int(np.floor(lower[10, 1]))
    return out / lips.mean(), mask > 0, out[top:bottom, int(cx)].mean(-1) / lips.mean()


def test_a_wide_painted_mouth_shows_a_lit_tongue_not_a_hole():
    picture, inside, column = painted_wide_mouth()
    # Not a hole: the inside as a whole is a dim mouth (teeth, tongue, throat), about half the
    # lips' brightness; the earlier black throat measured 0.35.
    assert np.median(picture.mean(-1)[inside]) > 0.42
    lower_half = column[len(column) // 2 :]
    tongue = float(lower_half.max())
    # A tongue lit on its top (~0.7 of the lips), darker at the back of the mouth above it and in
    # the lower lip's shadow below it, so the lip's inner edge stays a dark edge for the tracker.
    assert tongue > 0.6
    back = float(column[int(0.3 * len(column)) : int(0.55 * len(column))].min())
    assert back < 0.5 * tongue
    assert column[-2:].max() < 0.75 * tongue
    assert int(np.argmax(lower_half)) < len(lower_half) - 3


def test_the_widest_target_opens_no_wider_than_real_speakers():
    # The real talking videos measure 0.15-0.25 face units at their 99th percentile.
    widths = [warp_opening(a) * WARP_FULL_APERTURE for a in np.linspace(0.0, 1.0, 101)]
    assert max(widths) <= 0.25
    assert np.all(np.diff(widths) > 0)
    assert warp_opening(0.5) == 0.5  # below the knee the opening follows the target as before


# --- from real speech: espeak-ng audio through the whole generator, measured on its output -------


@pytest.fixture(scope="module")
def generator(work):
    from koubo.config import Settings
    from koubo.pipeline import Generator

    return Generator(Settings(data_dir=work / "data"))


def spoken_render(generator, template: Path, text: str, voice: str, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """The template saying `text` (espeak-ng), decoded from the encoded output, and which of its
    frames are well inside the speech (0.15 s in from where it starts and ends)."""
    from koubo.features.mouth import mouth_targets
    from koubo.media.audio import load_audio

    from media_fixtures import espeak_speech

    name = f"{voice}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"
    speech = espeak_speech(work / f"{name}.wav", text, voice)
    if speech is None:
        pytest.skip("espeak-ng is not installed (./koubo.sh test installs it as root)")
    result = generator.generate(speech, template, work / f"{name}.mp4")
    with av.open(str(result.output)) as container:
        out = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    features = compute_audio_features(load_audio(speech).samples, "espeak")
    speaking = mouth_targets(features.envelope, FPS, len(out)).speech
    inside = np.zeros(len(out), bool)
    frames = np.flatnonzero(speaking)
    trim = round(0.15 * FPS)
    inside[frames[0] + trim : frames[-1] - trim + 1] = True
    return out, inside


@pytest.fixture(scope="module")
def still_template(still_face, work) -> Path:
    from media_fixtures import write_frames

    return write_frames(work / "still.mp4", still_face[0])


@pytest.fixture(scope="module")
def talking_template(talking_face, work) -> Path:
    from media_fixtures import write_frames

    return write_frames(work / "talking.mp4", talking_face[0])


@pytest.mark.parametrize("voice,bilabial,other", [("en", "a " + "ma " * 10, "a " + "ha " * 10)])
def test_a_bilabial_in_the_audio_closes_the_rendered_lips(
    generator, still_template, still_face, voice, bilabial, other, work
):
    rest = float(np.median(geo.mouth_aperture(still_face[1].landmarks)))
    with_m, inside_m = spoken_render(generator, still_template, bilabial, voice, work)
    with_h, inside_h = spoken_render(generator, still_template, other, voice, work)
    aperture_m = geo.mouth_aperture(measured(with_m).landmarks)[inside_m]
    aperture_h = geo.mouth_aperture(measured(with_h).landmarks)[inside_h]
    # This face rests with parted lips (a smile, ~0.11); lips pressed shut measure ~0.03-0.05.
    # Every /m/ presses them; /h/ between the same vowels never does.
    shut = rest - 0.04
    assert np.count_nonzero(aperture_m < shut) >= 5
    assert np.count_nonzero(aperture_h < shut) == 0


@pytest.mark.parametrize("voice,rounded,spread", [("en", "who " * 10, "he " * 10)])
def test_a_rounded_vowel_in_the_audio_narrows_the_rendered_mouth(
    generator, still_template, voice, rounded, spread, work
):
    u, inside_u = spoken_render(generator, still_template, rounded, voice, work)
    i, inside_i = spoken_render(generator, still_template, spread, voice, work)
    width_u = geo.mouth_width(measured(u).landmarks)[inside_u]
    width_i = geo.mouth_width(measured(i).landmarks)[inside_i]
    # Measured: ~0.67 face-scale units for "who", ~0.72 for "he".
    assert np.median(width_u) < np.median(width_i) - 0.03


def test_real_speech_never_shows_two_sets_of_lips(generator, talking_template, talking_face, work):
    frames, track = talking_face
    text = "Hello everyone. Today we talk about the weather."
    out, _ = spoken_render(generator, talking_template, text, "en", work)
    single = lip_edge_counts(frames, track)
    rendered = lip_edge_counts(out, measured(out))
    assert rendered.max() <= single.max()
