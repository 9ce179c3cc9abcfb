"""Wiring of one generation: media -> features -> engine -> encode -> quality report.

`Generator` holds what is worth keeping between jobs (settings, feature caches), so a batch, or a
worker that runs many jobs, computes each audio's features and each template's face track once.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from koubo.config import Settings, load_settings
from koubo.diskspace import ensure_room_to_write
from koubo.engines.base import RenderInput, get_engine
from koubo.errors import ErrorCode, KouboError, no_face, too_long
from koubo.face.tracker import FaceTrack, FinderPool, track_faces
from koubo.features import AudioFeatures, compute_audio_features
from koubo.features.cache import FeatureCache, content_hash
from koubo.features.denoise import Denoise, denoise
from koubo.features.mouth import mouth_targets
from koubo.media.ahead import ReadAhead, StageClock, ahead
from koubo.media.audio import ANALYSIS_RATE, decode_mono, load_audio, write_wav
from koubo.media.held import HeldFrames, held
from koubo.media.probe import FrameBudget, probe
from koubo.media.video import Mp4Writer, TemplateStream, loop_indices, open_template, output_frame_count
from koubo.naming import output_name
from koubo.options import GenerateOptions, ResolvedOptions, batch_pairs, resolve
from koubo.quality import QualityReport, RenderedCheck, edit_counts
from koubo.stages import Stage

# Bump when the face tracker or feature extraction changes what they compute.
AUDIO_CACHE = "audio-v2"  # v2: timed phones and formants
FACE_CACHE = "face-v3"  # v3: the mesh crop brought down by halving + bilinear

Progress = Callable[[Stage, float], None]  # (stage, fraction of that stage done)
# The encoder's busy time, reported among the timings; it is no progress stage of its own (the
# frames are encoded as they are rendered).
ENCODE = "encode"
# Frames each stage (decode, render) may run ahead of the next: enough to ride out one slow frame.
FRAMES_AHEAD = 4
# A cleaned sound track is mono speech: this rate keeps all of it.
SOUNDTRACK_RATE = 48_000


@dataclass
class GenerateResult:
    output: Path
    duration: float
    frames: int
    fps: float
    engine: str
    # Seconds each stage was busy; decoding, rendering, encoding and the check overlap in threads,
    # so together they may exceed wall_seconds.
    timings: dict[str, float] = field(default_factory=dict)
    report: QualityReport | None = None
    cached: dict[str, bool] = field(default_factory=dict)  # which inputs came from the cache
    wall_seconds: float = 0.0  # the whole generation, start to finish


@dataclass(frozen=True)
class _Inputs:
    """What one generation reads: the speech's features (and the sound track to encode), and the
    template with its face track."""

    features: AudioFeatures
    soundtrack: Path
    template: TemplateStream
    frames: TemplateStream | HeldFrames  # the template's frames, kept when they fit
    track: FaceTrack
    cached: dict[str, bool]  # which came from the feature cache


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds


class Generator:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.cache = FeatureCache(
            self.settings.cache_dir,
            memory_entries=self.settings.cache_memory_entries,
            memory_bytes=self.settings.cache_memory_bytes,
        )
        # MediaPipe's graphs, loaded once for every job of this Generator (a warm generation process).
        self.finders = FinderPool()

    # --- features, cached by content ---------------------------------------------------------------

    def audio_features(
        self, path: Path, display_name: str | None = None, cleaned: bool = False
    ) -> tuple[AudioFeatures, bool]:
        """Features of the speech in `path` (denoised first when `cleaned`), and whether they came
        from the cache."""
        content = content_hash(path)
        key = f"{content}-denoised" if cleaned else content
        limit = self.settings.max_audio_seconds
        computed = []

        def compute() -> AudioFeatures:
            computed.append(True)
            audio = load_audio(path, max_duration=limit, display_name=display_name)  # probes by content
            samples = denoise(audio.samples, ANALYSIS_RATE) if cleaned else audio.samples
            return compute_audio_features(samples, content)

        features = self.cache.get_or_compute(AUDIO_CACHE, key, compute)
        if features.duration > limit:  # cached under a more generous limit
            raise too_long(display_name or path.name, features.duration, limit)
        return features, not computed

    def face_track(
        self,
        path: Path,
        video: TemplateStream | HeldFrames,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[FaceTrack, bool]:
        key = f"{content_hash(path)}-{self.settings.face_select}-{self.settings.max_faces}"
        computed = []

        def compute() -> FaceTrack:
            computed.append(True)
            return track_faces(
                video,
                fps=float(video.fps),
                select=self.settings.face_select,
                max_faces=self.settings.max_faces,
                progress=progress,
                should_stop=should_stop,
                finders=self.finders,
            )

        return self.cache.get_or_compute(FACE_CACHE, key, compute), not computed

    def _read_inputs(
        self,
        audio: Path,
        video: Path,
        names: tuple[str | None, str | None],
        cleaning: Denoise,
        work_dir: Path,
        report: Progress,
        clock: _Stopwatch,
        should_stop: Callable[[], bool] | None,
    ) -> _Inputs:
        """The speech's features, and the template opened and its face tracked, side by side: phone
        recognition is one core's work, in a thread of its own; MediaPipe's tracking mostly the
        other's. Errors come as they would one after the other: the speech's first."""
        s = self.settings
        # Probed first, so a bad recording fails the job before the template is looked at.
        heard = probe(audio, expect="audio", max_duration=s.max_audio_seconds, display_name=names[0])
        helper = ThreadPoolExecutor(1, thread_name_prefix="features")
        listening = helper.submit(self._timed_features, clock, audio, names[0], cleaning)

        def stopping() -> bool:  # a failed feature extraction stops the tracking too
            failed = listening.done() and listening.exception() is not None
            return failed or (should_stop is not None and should_stop())

        try:
            soundtrack = audio
            if cleaning is Denoise.all:
                with clock.stage(Stage.features):
                    cleaned = denoise(decode_mono(audio, SOUNDTRACK_RATE), SOUNDTRACK_RATE)
                    soundtrack = write_wav(work_dir / "speech-denoised.wav", cleaned, SOUNDTRACK_RATE)
            with clock.stage(Stage.decode):
                # Only probed and its first frame decoded: frames are decoded as tracking and
                # rendering read them, and kept only when they all fit under template_memory_bytes
                # (a 10-minute 1080p template is ~90 GB). The stage is announced once the probe has
                # admitted the template, and an output as long as the speech, under the budget.
                template = open_template(
                    video,
                    work_dir=work_dir,
                    max_duration=s.max_video_seconds,
                    display_name=names[1],
                    should_stop=stopping,
                    budget=FrameBudget.of(s),
                    output_seconds=heard.duration,
                )
                report(Stage.decode, 1.0)
            frames = held(template, s.template_memory_bytes)
            with clock.stage(Stage.face):
                track, face_cached = self.face_track(
                    video, frames, progress=lambda f: report(Stage.face, f), should_stop=stopping
                )
        except BaseException:
            # A cancel does not wait for the speech.
            if not (should_stop is not None and should_stop()) and listening.exception() is not None:
                raise listening.exception() from None
            raise
        finally:
            helper.shutdown(wait=False)  # done by now, unless the template failed first
        features, audio_cached = listening.result()
        cached = {"audio": audio_cached, "face": face_cached}
        return _Inputs(features, soundtrack, template, frames, track, cached)

    def _timed_features(
        self, clock: _Stopwatch, audio: Path, name: str | None, cleaning: Denoise
    ) -> tuple[AudioFeatures, bool]:
        with clock.stage(Stage.features):
            return self.audio_features(audio, name, cleaned=cleaning is not Denoise.off)

    # --- one output ---------------------------------------------------------------------------------

    def generate(
        self,
        audio: str | Path,
        video: str | Path,
        output: str | Path,
        options: ResolvedOptions | GenerateOptions | None = None,
        progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
        names: tuple[str | None, str | None] = (None, None),
    ) -> GenerateResult:
        """Render `video`'s person saying `audio` into `output` (MP4), and measure the result.

        `names` are the files' display names (an upload's original name) for error messages.
        """
        options = resolve(options, self.settings)  # a job's are resolved already; a caller's, here
        s = self.settings
        audio, video, output = Path(audio), Path(video), Path(output)
        clock = _Stopwatch()
        started = time.perf_counter()
        engine = get_engine(options.engine, s)
        output.parent.mkdir(parents=True, exist_ok=True)

        def report(stage: Stage, fraction: float) -> None:
            # Every progress step checks the disk the job writes to: a long output (or a template's
            # borrowed mouths) must not fill it up for the database, the log and every other job.
            ensure_room_to_write(output.parent, s.job_min_free_bytes)
            if progress is not None:
                progress(stage, fraction)

        cleaning = Denoise(options.denoise)
        report(Stage.features, 0.0)
        work_dir = Path(tempfile.mkdtemp(prefix=".koubo-", dir=output.parent))
        written = False
        try:
            inputs = self._read_inputs(audio, video, names, cleaning, work_dir, report, clock, should_stop)
            features, template, track = inputs.features, inputs.template, inputs.track
            if not track.present.any():
                raise no_face(names[1] or video.name)
            fps = float(template.fps)
            n_out = output_frame_count(features.duration, template.fps)
            job = RenderInput(
                frames=inputs.frames,
                fps=fps,
                track=track,
                audio=features,
                targets=mouth_targets(
                    features.envelope,
                    fps,
                    n_out,
                    expressiveness=options.expressiveness,
                    phones=features.phones,
                    formants=features.formants,
                ),
                source_index=loop_indices(len(template), n_out),
            )
            # The check follows the face in the frames as they are rendered, in a thread of its own.
            size = (template.height, template.width)
            checker = RenderedCheck(n_out, fps, size, should_stop, self.finders, s.max_faces) if options.check else None
            try:
                self._render(
                    job, engine, inputs.soundtrack, output, template, options, report, clock, should_stop, checker
                )
            except BaseException:
                if checker is not None:
                    checker.abort()
                raise
            written = True
            result = GenerateResult(
                output=output,
                duration=features.duration,
                frames=n_out,
                fps=fps,
                engine=engine.name,
                cached=inputs.cached,
            )
            if checker is not None:
                report(Stage.check, 0.0)
                measured = checker.finish(output)
                clock.add(Stage.check, checker.seconds)
                synced, skipped = edit_counts(track, job.source_index)
                result.report = dataclasses.replace(measured, synced_frames=synced, skipped_frames=skipped)
        except BaseException:
            # A cancelled or failed quality check must not leave a finished-looking file behind.
            if written:
                output.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        result.timings = clock.timings
        result.wall_seconds = time.perf_counter() - started
        if progress is not None:  # the video is written: no disk check may fail it now
            progress(Stage.done, 1.0)
        return result

    def _render(
        self,
        job: RenderInput,
        engine,
        audio: Path,
        output: Path,
        template: TemplateStream,
        options: ResolvedOptions,
        report: Progress,
        clock: _Stopwatch,
        should_stop: Callable[[], bool] | None,
        checker: RenderedCheck | None,
    ) -> None:
        """Decode, render and encode in three threads (bounded queues between them): the time
        approaches the slowest stage's, not the sum."""
        s = self.settings
        decoding, rendering = StageClock(), StageClock()
        job = dataclasses.replace(job, frames=ReadAhead(job.frames, depth=FRAMES_AHEAD, clock=decoding))
        with Mp4Writer(
            output,
            width=template.width,
            height=template.height,
            fps=template.fps,
            audio_path=audio,
            duration=job.audio.duration,
            crf=options.crf,
            preset=options.preset,
            colour=template.colour,
            encoder=s.video_encoder,
        ) as writer:
            rendered = ahead(engine.render(job, should_stop=should_stop), FRAMES_AHEAD, Stage.render, rendering)
            step = max(1, job.n_out // 100)
            try:
                for i, frame in enumerate(rendered):
                    start = time.perf_counter()
                    writer.write(frame, keyframe=checker is not None and i in checker.samples)
                    clock.add(ENCODE, time.perf_counter() - start)
                    if checker is not None:
                        checker.add(frame)
                    if i % step == 0:
                        report(Stage.render, i / job.n_out)
            finally:
                rendered.close()
            start = time.perf_counter()
            writer.close()
            clock.add(ENCODE, time.perf_counter() - start)
        clock.add(Stage.decode, decoding.busy)
        clock.add(Stage.render, max(0.0, rendering.busy - decoding.waited))

    # --- many outputs -------------------------------------------------------------------------------

    def batch(
        self,
        audios: Sequence[str | Path],
        videos: Sequence[str | Path],
        out_dir: str | Path,
        options: ResolvedOptions | GenerateOptions | None = None,
        progress: Callable[[int, str, float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[GenerateResult | KouboError]:
        """One audio × many videos, or many audios × one video (koubo.options.batch_pairs).

        An item that fails on its input records its error and the batch goes on; the shared side's
        features are computed once because the caches are keyed by content.
        """
        out_dir = Path(out_dir)
        pairs = batch_pairs([Path(a) for a in audios], [Path(v) for v in videos])
        options = resolve(options, self.settings)
        results: list[GenerateResult | KouboError] = []
        for index, (a, v) in enumerate(pairs):
            target = out_dir / output_name(a.name, v.name, index if len(pairs) > 1 else None)
            item_progress = (lambda stage, f, i=index: progress(i, stage, f)) if progress else None
            try:
                results.append(self.generate(a, v, target, options, item_progress, should_stop))
            except KouboError as error:
                if error.code == ErrorCode.CANCELLED:
                    raise
                results.append(error)
        return results


def generate(
    audio: str | Path,
    video: str | Path,
    output: str | Path,
    options: ResolvedOptions | GenerateOptions | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> GenerateResult:
    return Generator().generate(audio, video, output, options, progress, should_stop)
