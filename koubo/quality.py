"""Lip-sync quality of a finished video, measured on the encoded file itself.

Independent of the engine's own data: landmarks are re-detected on the decoded output frames, and
the mouth aperture is compared with the loudness of the file's own audio track. The sync offset is
the lag (in frames) of the best correlation; the confidence is that correlation. What the engine
was allowed to do is counted from the template's track: how many output frames were lip-synced,
and why the others were passed through.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from koubo.errors import Cancelled
from koubo.face import geometry
from koubo.face.tracker import TRACK_MAX_SIDE, FaceTrack, FinderPool, track_faces
from koubo.face.trust import Skip
from koubo.features.mouth import analyse_speech, frame_loudness
from koubo.media.audio import load_audio
from koubo.media.probe import MediaInfo, probe
from koubo.media.video import open_template

MAX_LAG = 10
# The check during generation tracks the rendered frames brought down to this side (the face
# mesh runs on a crop of the face at its own size: a 1080x1920 frame's face stays large enough).
CHECK_MAX_SIDE = 960
# Frames of the encoded file decoded again and compared with the rendered ones.
CHECK_SAMPLES = 5
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
    # Mean absolute difference (0..255) of a few rendered frames and the same frames decoded from
    # the file (measured during generation); None when the frames were measured on the file itself.
    encoded_difference: float | None = None

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


def _report(
    track: FaceTrack, path: Path, info: MediaInfo, fps: float, encoded_difference: float | None = None
) -> QualityReport:
    """The report of a video at `path` (its own audio track) whose frames `track` followed."""
    n = len(track)
    if info.audio is None:
        return QualityReport(
            None, 0.0, track.coverage, info.duration, 0.0, n, fps, encoded_difference=encoded_difference
        )
    audio = load_audio(path)
    loudness = frame_loudness(analyse_speech(audio.samples), fps, n)
    aperture = mouth_series(track.landmarks, track.present)
    lag, confidence = sync_offset(aperture, loudness, track.present)
    return QualityReport(
        sync_offset=lag,
        sync_confidence=confidence,
        face_coverage=track.coverage,
        video_duration=n / fps,
        audio_duration=audio.duration,
        frames=n,
        fps=fps,
        trace=SyncTrace.thin(aperture, track.present, loudness, fps),
        encoded_difference=encoded_difference,
    )


class _QueuedFrames:
    """A tracker FrameSource fed one frame at a time by the renderer (read once, in order)."""

    def __init__(self, frames: queue.Queue, n: int, width: int, height: int) -> None:
        self._frames, self._n, self.width, self.height = frames, n, width, height
        self.waited = 0.0  # seconds the tracker waited for the renderer

    def __len__(self) -> int:
        return self._n

    def frames(self, start: int = 0, stop: int | None = None, should_stop=None):
        for _ in range(start, self._n if stop is None else stop):
            waiting = time.perf_counter()
            frame = self._frames.get()
            self.waited += time.perf_counter() - waiting
            if frame is None:  # the renderer stopped early
                raise Cancelled()
            yield frame


class RenderedCheck:
    """The quality check measured while the output is rendered, not by decoding it again.

    Each rendered frame, brought down to CHECK_MAX_SIDE, is tracked in a thread of its own as it
    comes (one pass, no trust judgement: the report needs landmarks and presence only). Of the
    encoded file, only what encoding can change is checked: its frame count and audio track, and
    a few sampled frames decoded and compared with the rendered ones (encoded_difference).
    """

    def __init__(
        self,
        n_frames: int,
        fps: float,
        size: tuple[int, int],
        should_stop: Callable[[], bool] | None = None,
        finders: FinderPool | None = None,
        max_faces: int = 4,
    ) -> None:
        height, width = size
        factor = min(1.0, CHECK_MAX_SIDE / max(height, width))
        self._size = (max(2, round(width * factor)), max(2, round(height * factor)))  # (w, h), as cv2 has it
        self.n, self.fps = n_frames, fps
        self.seconds = 0.0  # spent on the check, in any thread
        # Frames compared with the file: the writer makes them keyframes, so each decodes alone.
        self.samples = {int(k) for k in np.linspace(0, n_frames - 1, min(CHECK_SAMPLES, n_frames)).round()}
        self._kept: dict[int, np.ndarray] = {}
        self._added = 0
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._track: list[FaceTrack] = []
        self._error: list[BaseException] = []
        source = _QueuedFrames(self._queue, n_frames, *self._size)
        # The template's tracker is done when rendering starts: its loaded graphs serve the check.
        self._finders, self._max_faces = finders, max_faces
        self._thread = threading.Thread(target=self._follow, args=(source, should_stop), name="check", daemon=True)
        self._thread.start()

    def _follow(self, source: _QueuedFrames, should_stop: Callable[[], bool] | None) -> None:
        start = time.perf_counter()
        try:
            track = track_faces(
                source,
                fps=self.fps,
                max_faces=self._max_faces,
                should_stop=should_stop,
                workers=1,
                judge=False,
                finders=self._finders,
            )
            self._track.append(track)
        except BaseException as error:  # noqa: BLE001 (re-raised by finish())
            self._error.append(error)
        finally:
            self.seconds += time.perf_counter() - start - source.waited

    def add(self, frame: np.ndarray) -> None:
        """Hand over the next rendered frame (RGB, full size); blocks while the tracker is 8 behind."""
        start = time.perf_counter()
        width, height = self._size
        small = frame if frame.shape[:2] == (height, width) else cv2.resize(frame, self._size, cv2.INTER_AREA)
        if self._added in self.samples:
            self._kept[self._added] = small.copy()
        self._added += 1
        self.seconds += time.perf_counter() - start
        self._put(small)

    def _put(self, item: np.ndarray | None) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def abort(self) -> None:
        """Stop the tracker thread (rendering failed or was cancelled)."""
        self._put(None)
        self._thread.join()

    def finish(self, path: Path) -> QualityReport:
        """The report of the encoded file at `path`, all of whose frames were add()ed."""
        self._thread.join()
        if self._error:
            raise self._error[0]
        start = time.perf_counter()
        try:
            info = probe(path, expect="video")
            assert info.video is not None
            if info.video.frame_count != self.n:
                raise ValueError(f"{path.name}: {info.video.frame_count} frames encoded, {self.n} rendered")
            return _report(self._track[0], path, info, self.fps, self._encoded_difference(path))
        finally:
            self.seconds += time.perf_counter() - start

    def _encoded_difference(self, path: Path) -> float:
        """Mean absolute difference (0..255) between the sampled rendered frames and the same frames
        decoded from the file: what the encoder lost (CRF 18: about 1-2)."""
        stream = open_template(path, work_dir=path.parent)
        differences = []
        for k, rendered in sorted(self._kept.items()):
            decoded = next(stream.frames(k, k + 1))
            if decoded.shape != rendered.shape:  # brought down as the rendered frame was
                decoded = cv2.resize(decoded, self._size, interpolation=cv2.INTER_AREA)
            differences.append(float(np.abs(decoded.astype(np.int16) - rendered).mean()))
        return float(np.mean(differences)) if differences else 0.0


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
    # Presence and landmarks are all the report reads: no trust judgement (a second pass).
    track = track_faces(video, fps=float(video.fps), progress=progress, should_stop=should_stop, judge=False)
    return _report(track, Path(path), info, float(video.fps))
