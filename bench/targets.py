"""Mouth targets against real mouths: each talking video's own speech predicts its own lips.

    .venv/bin/python bench/targets.py [--cache DIR]

A real talking video is a labelled example: MediaPipe's measure of the speaker's mouth on each
frame is the truth for the speech on its soundtrack. For every ../shared/media/speaker_*.mp4
the targets are predicted from its own audio by
  - acoustic: loudness and brightness alone (the predictor before phones; `phones=None`),
  - formants: F1 (LPC) as the opening and F2 as the width, each relative to the recording,
  - visemes:  the coarticulated phone shapes alone, gated by voice activity (no loudness),
  - phonetic: what koubo uses now: phones, loudness and (for rounding) F2 combined,
and compared with the measured mouth:
  r aperture   Pearson r of predicted and measured opening over all frames with a face
  r ap speech  the same over speech frames only (speakers also move their mouths in pauses)
  r width      Pearson r of predicted and measured lip width over speech frames
  lag          the lag (frames, -6..6) of the best aperture correlation over speech; + = real mouth later
  bilabial hit of the /m b p/ segments (named by the phone recogniser) during which the real lips
               close, the share where the predicted lips close too (aperture < 0.1)
  false close  share of clearly open real frames (above the speech median) predicted closed
  rounding     measured width (z-score over speech) where the prediction rounds (rounding >= 0.4)
               minus where it spreads (width >= 0.3): negative = rounded frames really are narrower
Cost is printed as CPU seconds per second of audio (x real time; CPU time, so that a busy machine
does not inflate it) and as a ratio to the acoustic analysis measured in the same run. Figures are printed last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from koubo.face import geometry
from koubo.face.tracker import FaceTrack, track_faces
from koubo.features.cache import FeatureCache, content_hash
from koubo.features.formants import Formants, track_formants
from koubo.features.mouth import ENVELOPE_RATE, MouthTargets, SpeechEnvelope, analyse_speech, mouth_targets
from koubo.features.phones import PhoneTrack, recognise_phones
from koubo.features.visemes import CHANNELS, coarticulate
from koubo.media.audio import load_audio
from koubo.media.video import read_template

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media"
BILABIALS = ("M", "B", "P")
PREDICTORS = ("acoustic", "formants", "visemes", "phonetic")
MAX_LAG = 6


def visemes_alone(phones: PhoneTrack, speech: np.ndarray, fps: float, n: int) -> MouthTargets:
    """The coarticulated phone shapes read at frame centres, silent frames at rest."""
    shape = dict(zip(CHANNELS, coarticulate(phones, len(speech)).T))
    centres = (np.arange(n) + 0.5) * (ENVELOPE_RATE / fps) - 0.5
    frames = np.arange(len(speech))

    def at(values: np.ndarray) -> np.ndarray:
        return np.interp(centres, frames, values * speech, right=0.0).astype(np.float32)

    lips = shape["spread"] - shape["rounding"]
    reference = float(np.median(lips[speech])) if speech.any() else 0.0
    return MouthTargets(
        fps=fps,
        aperture=at(shape["aperture"] * (1 - shape["closure"])),
        width=at(np.tanh(1.5 * (lips - reference))),
        speech=at(speech.astype(np.float32)) >= 0.5,
        rounding=at(shape["rounding"]),
        closure=at(shape["closure"]),
    )


def formants_alone(found: Formants, env: SpeechEnvelope, fps: float, n: int) -> MouthTargets:
    """Opening from F1 and width from F2, each as a z-score over the recording's voiced speech."""
    f1, f2 = found.f1, found.f2
    voiced = env.speech & (env.voicing > 0.5) & np.isfinite(f1) & np.isfinite(f2)
    centres = (np.arange(n) + 0.5) * (ENVELOPE_RATE / fps) - 0.5
    frames = np.arange(len(env.loudness))

    def z(values: np.ndarray) -> np.ndarray:
        if voiced.sum() < 3:
            return np.zeros(len(values))
        return np.where(voiced, (values - np.nanmean(values[voiced])) / max(np.nanstd(values[voiced]), 1e-6), 0.0)

    aperture = np.where(voiced, 1.0 / (1.0 + np.exp(-z(f1))), 0.0)
    aperture = np.interp(centres, frames, gaussian_filter1d(aperture, 2.0), right=0.0)
    width = np.interp(centres, frames, gaussian_filter1d(np.tanh(z(f2)), 3.0), right=0.0)
    return MouthTargets(
        fps=fps,
        aperture=aperture.astype(np.float32),
        width=width.astype(np.float32),
        speech=np.interp(centres, frames, env.speech.astype(float), right=0.0) >= 0.5,
    )


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def lagged(predicted: np.ndarray, measured: np.ndarray, present: np.ndarray, lag: int) -> float:
    """r of predicted[t] with measured[t + lag] where both frames have a face."""
    n = len(predicted)
    p = slice(max(0, -lag), n - max(0, lag))
    m = slice(max(0, lag), n + min(0, lag))
    keep = present[p] & present[m]
    return pearson(predicted[p][keep], measured[m][keep])


def bilabial_segments(phones: PhoneTrack, fps: float, n: int) -> list[tuple[int, int]]:
    """Video frame ranges [first, last) of the /m b p/ phones, one frame of slack each side."""
    out = []
    for label, start, end in zip(phones.labels, phones.starts.tolist(), phones.ends.tolist()):
        if label in BILABIALS:
            first = int(np.floor(start / ENVELOPE_RATE * fps)) - 1
            last = int(np.ceil(end / ENVELOPE_RATE * fps)) + 1
            out.append((max(0, first), min(n, last)))
    return [(a, b) for a, b in out if b > a]


def compare(
    targets: MouthTargets,
    aperture: np.ndarray,
    width: np.ndarray,
    present: np.ndarray,
    segments: list[tuple[int, int]],
) -> dict[str, float]:
    speech = targets.speech & present
    lags = {lag: lagged(targets.aperture, aperture, speech, lag) for lag in range(-MAX_LAG, MAX_LAG + 1)}
    rest = np.percentile(aperture[present], 5)
    wide = np.percentile(aperture[speech], 95) if speech.any() else rest + 1e-3
    real_closed = rest + 0.15 * (wide - rest)
    really_closing = [(a, b) for a, b in segments if np.nanmin(np.where(present[a:b], aperture[a:b], np.inf)) < real_closed]
    hits = sum(1 for a, b in really_closing if targets.aperture[a:b].min() < 0.1)
    open_real = speech & (aperture > np.median(aperture[speech]))
    z = (width - width[speech].mean()) / max(width[speech].std(), 1e-9)
    rounded = speech & (targets.rounding >= 0.4)
    spread = speech & (targets.width >= 0.3)
    return {
        "r aperture": pearson(targets.aperture[present], aperture[present]),
        "r ap speech": pearson(targets.aperture[speech], aperture[speech]),
        "r width": pearson(targets.width[speech], width[speech]),
        "lag": float(max(lags, key=lambda k: -np.inf if np.isnan(lags[k]) else lags[k])),
        "bilabial hit": hits / len(really_closing) if really_closing else float("nan"),
        "bilabials": float(len(really_closing)),
        "false close": float(np.mean(targets.aperture[open_real] < 0.1)) if open_real.any() else float("nan"),
        "rounding": float(z[rounded].mean() - z[spread].mean()) if rounded.any() and spread.any() else float("nan"),
        "rounded frames": float(rounded.sum()),
    }


def measured_track(video: Path, frames: np.ndarray, fps: float, cache: FeatureCache) -> FaceTrack:
    return cache.get_or_compute("bench-track-v1", content_hash(video), lambda: track_faces(frames, fps=fps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, help="keep face tracks here between runs")
    args = parser.parse_args()
    videos = sorted(SHARED.glob("speaker_*.mp4"))
    if not videos:
        sys.exit(f"no talking videos in {SHARED}")
    rows: dict[str, dict[str, dict[str, float]]] = {}
    cost = {"acoustic": 0.0, "phonetic": 0.0, "audio": 0.0}
    with tempfile.TemporaryDirectory() as work:
        cache = FeatureCache(args.cache or Path(work) / "cache")
        for video in videos:
            template = read_template(video, work_dir=Path(work))
            fps, n = float(template.fps), len(template)
            track = measured_track(video, template.frames, fps, cache)
            aperture = np.nan_to_num(geometry.mouth_aperture(track.landmarks))
            width = np.nan_to_num(geometry.mouth_width(track.landmarks))
            samples = load_audio(video).samples
            started = time.process_time()
            env = analyse_speech(samples)
            acoustic_s = time.process_time() - started
            phones = recognise_phones(samples, env.speech)
            formants = track_formants(samples, len(env.loudness))
            phonetic_s = time.process_time() - started
            cost["acoustic"] += acoustic_s
            cost["phonetic"] += phonetic_s
            cost["audio"] += len(samples) / 16_000
            predicted = {
                "acoustic": mouth_targets(env, fps, n),
                "formants": formants_alone(formants, env, fps, n),
                "visemes": visemes_alone(phones, env.speech, fps, n),
                "phonetic": mouth_targets(env, fps, n, phones=phones, formants=formants),
            }
            segments = bilabial_segments(phones, fps, n)
            rows[video.stem] = {
                name: compare(t, aperture, width, track.present, segments) for name, t in predicted.items()
            }
            print(f"{video.name}: {n} frames at {fps:.2f} fps, face on {track.coverage:.0%}, {len(phones)} phones")

    metrics = list(next(iter(next(iter(rows.values())).values())))
    print()
    for video, results in rows.items():
        print(f"{video:16s}" + "".join(f"{p:>10s}" for p in PREDICTORS))
        for metric in metrics:
            print(f"  {metric:14s}" + "".join(f"{results[p][metric]:10.3f}" for p in PREDICTORS))
    for p in ("acoustic", "phonetic"):
        print(f"cost {p:10s} {cost[p] / cost['audio']:.3f} x real time (CPU seconds of audio analysis per second of audio)")
    print(f"phonetic analysis / acoustic analysis: {cost['phonetic'] / max(cost['acoustic'], 1e-9):.1f}x ({cost['audio']:.1f} s of audio)")


if __name__ == "__main__":
    main()
