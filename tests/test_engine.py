"""The classic engine and the face tracker on frames made in memory."""

from __future__ import annotations

import numpy as np
import pytest

from koubo.engines.base import RenderInput, get_engine
from koubo.engines.classic import ClassicEngine, mouth_bank, plan_retrieval
from koubo.errors import EngineError
from koubo.face import geometry
from koubo.face.tracker import FaceTrack, track_faces
from koubo.features import compute_audio_features
from koubo.features.mouth import MouthTargets, mouth_targets
from koubo.samples import synth_speech, talking_frame

FPS = 25.0


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.stack([talking_frame(i / FPS) for i in range(40)])


@pytest.fixture(scope="module")
def track(frames) -> FaceTrack:
    return track_faces(frames, fps=FPS)


@pytest.fixture(scope="module")
def features():
    samples, _ = synth_speech(1.6)
    return compute_audio_features(samples, "synth")


def job(frames, track, features, *, expressiveness=1.0, present=None, targets=None) -> RenderInput:
    n = len(frames)
    if present is not None:
        track = FaceTrack(track.landmarks, present, track.width, track.height)
    return RenderInput(
        frames=frames,
        fps=FPS,
        track=track,
        audio=features,
        targets=targets or mouth_targets(features.envelope, FPS, n, expressiveness=expressiveness),
        source_index=np.arange(n),
        expressiveness=expressiveness,
    )


def measured_aperture(frames: list[np.ndarray]) -> np.ndarray:
    t = track_faces(np.stack(frames), fps=FPS)
    return np.nan_to_num(geometry.mouth_aperture(t.landmarks))


def test_tracker_follows_the_moving_face_smoothly(frames, track):
    assert track.present.all()
    nose = track.landmarks[:, 1]
    # The fixture moves the head by a few pixels along sines; the smoothed track must not jitter
    # more than a pixel from frame to frame beyond that motion.
    accel = np.abs(np.diff(nose, n=2, axis=0)).max()
    assert accel < 1.0


def test_frames_without_a_face_pass_through_unchanged(frames, track, features):
    present = track.present.copy()
    present[10:20] = False
    out = list(ClassicEngine().render(job(frames, track, features, present=present)))
    for k in range(10, 20):
        assert np.array_equal(out[k], frames[k])
    assert any(not np.array_equal(out[k], frames[k]) for k in range(20, 40))


def test_expressiveness_scales_the_opening(frames, track, features):
    calm = list(ClassicEngine().render(job(frames, track, features, expressiveness=0.5)))
    lively = list(ClassicEngine().render(job(frames, track, features, expressiveness=1.5)))
    still = list(ClassicEngine().render(job(frames, track, features, expressiveness=0.0)))
    assert measured_aperture(lively).mean() > measured_aperture(calm).mean() + 0.02
    assert all(np.array_equal(a, b) for a, b in zip(still, frames))


def test_retrieval_follows_the_target_and_prefers_consecutive_frames(track, features):
    # A template whose mouth opens and closes: the bank, not the warp, serves it.
    n = 120
    aperture = 0.02 + 0.15 * (0.5 + 0.5 * np.sin(np.arange(n) / 4.0))
    landmarks = np.repeat(track.landmarks[:1], n, axis=0).copy()
    gap = aperture * geometry.face_scale(landmarks[0])
    for p, q in geometry.INNER_GAP_PAIRS:
        landmarks[:, q, 1] = landmarks[:, p, 1] + gap
    bank = mouth_bank(landmarks, np.ones(n, bool))
    assert bank.can_retrieve

    n_out = 60
    wanted = 0.5 + 0.5 * np.sin(np.arange(n_out) / 3.0)
    targets = MouthTargets(FPS, wanted.astype(np.float32), np.zeros(n_out, np.float32), np.ones(n_out, bool))
    frames = np.zeros((n, 4, 4, 3), np.uint8)
    render = RenderInput(
        frames=frames,
        fps=FPS,
        track=FaceTrack(landmarks, np.ones(n, bool), 4, 4),
        audio=features,
        targets=targets,
        source_index=np.arange(n_out),
    )
    plan = plan_retrieval(render, bank)
    chosen = bank.aperture[plan]
    target = bank.rest + wanted * (bank.open - bank.rest)
    assert np.corrcoef(chosen, target)[0, 1] > 0.9
    assert np.mean(np.diff(plan) == 1) > 0.5  # mostly runs of consecutive source frames


def test_two_faces_one_consistent_track():
    big = talking_frame(0.0, (256, 256))
    small = talking_frame(0.0, (176, 176))  # MediaPipe's detector misses faces much smaller here
    canvas = np.full((256, 640, 3), 90, np.uint8)
    canvas[:, :256] = big
    canvas[40:216, 288:464] = small  # centre x 376, 56 px from the canvas centre
    frames = np.stack([canvas] * 6)
    largest = track_faces(frames, fps=FPS, select="largest")
    assert largest.present.all()
    assert (largest.landmarks[:, 1, 0] < 256).all()  # the nose of the big face, every frame
    central = track_faces(frames, fps=FPS, select="central")
    assert (central.landmarks[:, 1, 0] > 256).all()  # the small face is nearer the centre


def test_unknown_engine_is_refused_with_its_name():
    with pytest.raises(EngineError) as caught:
        get_engine("nope")
    assert caught.value.code == "unknown_engine" and "nope" in caught.value.en and "nope" in caught.value.zh
