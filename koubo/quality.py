"""Lip-sync quality of a finished video, measured on the encoded file itself.

Independent of the engine's own data: landmarks are re-detected on the decoded output frames, and
the mouth aperture is compared with the loudness of the file's own audio track. The sync offset is
the lag (in frames) of the best correlation; the confidence is that correlation. What the engine
was allowed to do is counted from the template's track: how many output frames were lip-synced,
and why the others were passed through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from koubo.face import geometry
from koubo.face.tracker import TRACK_MAX_SIDE, FaceTrack, track_faces
from koubo.face.trust import Skip
from koubo.features.mouth import analyse_speech, frame_loudness
from koubo.media.audio import load_audio
from koubo.media.probe import probe
from koubo.media.video import open_template

MAX_LAG = 10
# Loudness below this many dB under the recording's peak counts as silence: the mouth's position
# in a pause says nothing about sync, and the noise floor's wobble would only add noise.
LOUDNESS_RANGE_DB = 45.0
# The sync picture's curves (see SyncTrace) keep at most this many points: enough for a small chart.
TRACE_POINTS = 120


@dataclass(frozen=True)
class SyncTrace:
    """What the sync was measured on, thinned for a picture: the output's mouth opening and its
    loudness over time, and the level under which the sound counts as silence."""

    seconds: list[float]
    aperture: list[float | None]  # None: no face in that frame
    loudness_db: list[float]
    silence_db: float  # loudness below this is silence (LOUDNESS_RANGE_DB under the peak)

    @classmethod
    def thin(cls, aperture: np.ndarray, present: np.ndarray, loudness: np.ndarray, fps: float) -> SyncTrace:
        step = max(1, -(-len(aperture) // TRACE_POINTS))
        picked = np.arange(0, len(aperture), step)
        return cls(
            seconds=[round(float(index) / fps, 2) for index in picked],
            aperture=[round(float(aperture[i]), 3) if present[i] else None for i in picked],
            loudness_db=[round(float(loudness[i]), 1) for i in picked],
            silence_db=round(float(np.max(loudness)) - LOUDNESS_RANGE_DB, 2),
        )


@dataclass(frozen=True)
class QualityReport:
    sync_offset: int | None  # frames; positive: the mouth moves after the sound
    sync_confidence: float  # correlation at that offset, -1..1
    face_coverage: float  # share of frames with a detected face
    video_duration: float
    audio_duration: float
    frames: int
    fps: float
    synced_frames: int | None = None  # output frames the engine edited; None: not known (a file alone)
    skipped_frames: dict[str, int] = field(default_factory=dict)  # passed through, by reason
    trace: SyncTrace | None = None  # for the UI's sync picture; None without an audio track

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        offset = "n/a" if self.sync_offset is None else f"{self.sync_offset:+d} frames"
        return (
            f"sync offset {offset}, confidence {self.sync_confidence:.2f}, "
            f"face in {100 * self.face_coverage:.0f}% of frames, "
            f"video {self.video_duration:.2f} s, audio {self.audio_duration:.2f} s, "
            f"{self.frames} frames at {self.fps:.2f} fps" + self._describe_edits()
        )

    def _describe_edits(self) -> str:
        if self.synced_frames is None:
            return ""
        reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in self.skipped_frames.items())
        return f"; {self.synced_frames} frames lip-synced" + (f", passed through: {reasons}" if reasons else "")


def edit_counts(track: FaceTrack, source_index: np.ndarray) -> tuple[int, dict[str, int]]:
    """Output frames whose template frame could be edited, and the others counted by Skip reason."""
    usable = track.usable[source_index]
    reasons = track.skip[source_index][~usable]
    counts = {Skip(code).label: int((reasons == code).sum()) for code in sorted(set(reasons.tolist()))}
    return int(usable.sum()), counts


def sync_offset(aperture: np.ndarray, loudness: np.ndarray, valid: np.ndarray) -> tuple[int | None, float]:
    """Lag in frames (−MAX_LAG..MAX_LAG) maximising corr(aperture[t + lag], loudness[t])."""
    floor = float(np.max(loudness)) - LOUDNESS_RANGE_DB
    loud = np.maximum(loudness, floor)
    best_lag, best = None, -1.0
    n = len(aperture)
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        a_idx = np.arange(max(0, lag), min(n, n + lag))
        l_idx = a_idx - lag
        ok = valid[a_idx]
        if ok.sum() < 10:
            continue
        a, b = aperture[a_idx][ok], loud[l_idx][ok]
        if a.std() < 1e-9 or b.std() < 1e-9:
            continue
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best:
            best_lag, best = lag, r
    return best_lag, (best if best_lag is not None else 0.0)


def mouth_series(landmarks: np.ndarray, present: np.ndarray) -> np.ndarray:
    aperture = geometry.mouth_aperture(landmarks)
    return np.where(present, np.nan_to_num(aperture), 0.0)


def check_video(
    path: str | Path,
    *,
    work_dir: Path,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> QualityReport:
    """Measure sync and face coverage of any video file with an audio track."""
    info = probe(path, expect="video")
    video = open_template(path, work_dir=work_dir, should_stop=should_stop, max_side=TRACK_MAX_SIDE)
    fps = float(video.fps)
    track = track_faces(video, fps=fps, progress=progress, should_stop=should_stop)
    if info.audio is None:
        return QualityReport(None, 0.0, track.coverage, info.duration, 0.0, len(video), fps)
    audio = load_audio(path)
    loudness = frame_loudness(analyse_speech(audio.samples), fps, len(video))
    aperture = mouth_series(track.landmarks, track.present)
    lag, confidence = sync_offset(aperture, loudness, track.present)
    return QualityReport(
        sync_offset=lag,
        sync_confidence=confidence,
        face_coverage=track.coverage,
        video_duration=len(video) / fps,
        audio_duration=audio.duration,
        frames=len(video),
        fps=fps,
        trace=SyncTrace.thin(aperture, track.present, loudness, fps),
    )
