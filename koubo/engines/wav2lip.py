"""The Wav2Lip engine: a user-supplied Wav2Lip checkpoint draws the mouth, koubo does the rest.

What the published model expects, it gets: 96×96 BGR face crops in [0, 1] with the lower half
blanked, stacked with an unmasked reference crop, and the 16-column mel window starting at
int(i * 80 / fps). What the original inference script did poorly is done our way: face boxes come
from our MediaPipe track (no extra detector), padded towards the chin and smoothed in time; the
generated mouth is blended in with the classic engine's feathered lower-face mask and colour
matching (no visible rectangle); frames without a face pass through untouched; the batch size
follows the free memory; the GPU runs in fp16; an ONNX export runs instead when it is faster.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d

from koubo.config import Settings, load_settings
from koubo.engines import resolve_device
from koubo.engines.base import RenderInput
from koubo.engines.blend import (
    blend_patch,
    edit_strength,
    feathered_alpha,
    lower_face_hull,
    match_colour,
    roi_around,
)
from koubo.engines.checkpoint import checkpoint_path, file_sha256, require_checkpoint, torch_missing
from koubo.engines.wav2lip_onnx import default_export_path, matching_export
from koubo.errors import Cancelled, EngineError, ErrorCode
from koubo.face import geometry as geo
from koubo.face.tracker import FaceTrack, shot_runs
from koubo.features.mel import mel_windows

log = logging.getLogger(__name__)

FACE_SIZE = 96  # the published generator's input and output side
MEL_STEPS = 16
# The original script pads S3FD boxes by 10 px below the chin at its usual resolution, so the
# whole jaw is inside even with the mouth wide open; relative to the face it is about this much.
CHIN_PAD = 0.08
BOX_SMOOTH_FRAMES = 5  # the original's temporal window over boxes
MIN_BOX = 16  # pixels; a face smaller than this (or cut by the border) is left as it is
# Activation memory of one sample through the generator at 96×96 (fp32, skip features kept),
# with headroom: the basis for a batch size that fits.
SAMPLE_BYTES = 24 * 2**20
MAX_BATCH = {"cpu": 32, "cuda": 128}
MEMORY_SHARE = 0.25  # of what is free: frames, the encoder and other jobs need the rest
MEASURE_BATCH = 8


class Runner(Protocol):
    kind: str
    device: str
    memory_errors: tuple[type[BaseException], ...]

    def __call__(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        """mel (B, 1, 80, 16), face (B, 6, 96, 96) float32 -> (B, 3, 96, 96) float32 in [0, 1]."""
        ...


class TorchRunner:
    """The PyTorch generator on one device; fp16 on CUDA, where it halves memory and time."""

    kind = "torch"

    def __init__(self, net, device: str) -> None:
        import torch

        self._torch = torch
        self.device = device
        self.dtype = torch.float16 if device == "cuda" else torch.float32
        self.net = net.to(device=device, dtype=self.dtype).eval()
        self.memory_errors = (torch.OutOfMemoryError, MemoryError)

    def __call__(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        torch = self._torch
        try:
            with torch.inference_mode():
                m = torch.from_numpy(np.ascontiguousarray(mel)).to(self.device, self.dtype)
                f = torch.from_numpy(np.ascontiguousarray(face)).to(self.device, self.dtype)
                return self.net(m, f).float().cpu().numpy()
        except torch.OutOfMemoryError:
            # The failed batch's blocks stay reserved by the caching allocator unless handed back.
            torch.cuda.empty_cache()
            raise


def _free_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 2 * 2**30


def initial_batch_size(device: str) -> int:
    by_memory = int(_free_bytes(device) * MEMORY_SHARE // SAMPLE_BYTES)
    return max(1, min(MAX_BATCH.get(device, MAX_BATCH["cpu"]), by_memory))


def _throughput(runner: Runner) -> float:
    """Samples per second on one batch after a warm-up run."""
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((MEASURE_BATCH, 1, 80, MEL_STEPS), dtype=np.float32)
    face = rng.random((MEASURE_BATCH, 6, FACE_SIZE, FACE_SIZE), dtype=np.float32)
    runner(mel[:1], face[:1])
    start = time.perf_counter()
    runner(mel, face)
    return MEASURE_BATCH / max(time.perf_counter() - start, 1e-9)


@lru_cache(maxsize=1)
def _cached_runner(path: str, device: str, _versions: tuple[int, ...]) -> Runner:
    """One loaded model per process: a worker's next job reuses it. `_versions` (mtimes and sizes of
    the checkpoint and its export) is in the key, so a replaced checkpoint or a new export is read again."""
    from koubo.engines.wav2lip_net import load_generator

    checkpoint = Path(path)
    torch_runner = TorchRunner(load_generator(checkpoint), device)
    onnx_runner = matching_export(checkpoint, file_sha256(checkpoint), device)
    if onnx_runner is None:
        return torch_runner
    torch_rate, onnx_rate = _throughput(torch_runner), _throughput(onnx_runner)
    log.info("wav2lip on %s: torch %.1f, onnxruntime %.1f samples/s", device, torch_rate, onnx_rate)
    return onnx_runner if onnx_rate > torch_rate else torch_runner


def load_runner(settings: Settings) -> Runner:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise torch_missing() from None
    path = require_checkpoint(checkpoint_path(settings)).resolve()
    versions = [(s.st_mtime_ns, s.st_size) for f in (path, default_export_path(path)) if (s := _stat(f))]
    return _cached_runner(str(path), resolve_device(settings.device), tuple(v for pair in versions for v in pair))


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


# --- face crops ----------------------------------------------------------------------------------


def face_boxes(track: FaceTrack) -> np.ndarray:
    """(N, 4) int x0, y0, x1, y1 per template frame: the landmarks' box, padded below the chin,
    widened to a square, smoothed over a few frames and clipped to the frame; zeros without a face."""
    boxes = np.zeros((len(track), 4), dtype=np.float64)
    usable = track.usable
    if not usable.any():
        return boxes.astype(np.int64)
    pts = track.landmarks[usable]
    x0, y0 = pts[..., 0].min(1), pts[..., 1].min(1)
    x1, y1 = pts[..., 0].max(1), pts[..., 1].max(1)
    y1 = y1 + CHIN_PAD * (y1 - y0)
    centre, half = 0.5 * (x0 + x1), 0.5 * np.maximum(x1 - x0, y1 - y0)
    boxes[usable] = np.column_stack([centre - half, y0, centre + half, y1])
    for start, end in shot_runs(usable, track.cuts):
        boxes[start:end] = uniform_filter1d(boxes[start:end], BOX_SMOOTH_FRAMES, axis=0, mode="nearest")
    boxes = np.round(boxes)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, track.width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, track.height)
    return boxes.astype(np.int64)


def usable(box: np.ndarray) -> bool:
    return bool(box[2] - box[0] >= MIN_BOX and box[3] - box[1] >= MIN_BOX)


def model_face_input(frames: list[np.ndarray], boxes: list[np.ndarray]) -> np.ndarray:
    """(B, 6, 96, 96) float32: each RGB frame's box as a BGR crop, lower half blanked, then unmasked."""
    crops = (
        np.stack(
            [
                cv2.resize(np.ascontiguousarray(f[y0:y1, x0:x1, ::-1]), (FACE_SIZE, FACE_SIZE))
                for f, (x0, y0, x1, y1) in zip(frames, boxes)
            ]
        ).astype(np.float32)
        / 255.0
    )
    masked = crops.copy()
    masked[:, FACE_SIZE // 2 :] = 0.0
    return np.concatenate([masked, crops], axis=3).transpose(0, 3, 1, 2)


def paste_face(
    frame: np.ndarray, landmarks: np.ndarray, box: np.ndarray, generated: np.ndarray, strength: float = 1.0
) -> np.ndarray:
    """Blend the generator's face (3, 96, 96 BGR in [0, 1]) into `frame` over the lower face only."""
    x0, y0, x1, y1 = (int(v) for v in box)
    face = cv2.resize(
        generated.transpose(1, 2, 0)[..., ::-1] * 255.0, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC
    )
    hull = lower_face_hull(landmarks)
    scale = float(geo.face_scale(landmarks))
    roi = roi_around(hull, 0.02 * scale, frame.shape[:2])
    rx0, ry0, rx1, ry1 = roi
    if rx1 - rx0 < 8 or ry1 - ry0 < 8:
        return frame
    base = frame[ry0:ry1, rx0:rx1].astype(np.float32)
    # Where the mask reaches past the box (a box clipped by the frame's edge) the frame stays itself.
    patch = base.copy()
    ix0, iy0, ix1, iy1 = max(rx0, x0), max(ry0, y0), min(rx1, x1), min(ry1, y1)
    if ix1 > ix0 and iy1 > iy0:
        patch[iy0 - ry0 : iy1 - ry0, ix0 - rx0 : ix1 - rx0] = face[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    alpha = feathered_alpha([hull], roi, 0.06 * scale)
    return blend_patch(frame, match_colour(patch, base, alpha), alpha, roi, strength)


# --- the engine ----------------------------------------------------------------------------------


class Wav2LipEngine:
    name = "wav2lip"

    def __init__(self, settings: Settings, runner: Runner | None = None) -> None:
        self.runner = runner or load_runner(settings)
        self.batch_size = initial_batch_size(self.runner.device)

    def render(self, job: RenderInput, should_stop: Callable[[], bool] | None = None) -> Iterator[np.ndarray]:
        track = job.track
        boxes = face_boxes(track)
        strength = edit_strength(track.usable[job.source_index], job.fps)
        frames = job.frames.in_order(job.source_index, should_stop)
        start = 0
        try:
            while start < job.n_out:
                if should_stop is not None and should_stop():
                    raise Cancelled()
                stop = min(job.n_out, start + self.batch_size)
                sources = job.source_index[start:stop]
                batch = [next(frames) for _ in range(stop - start)]
                edited = [k for k, s in enumerate(sources) if strength[start + k] > 0 and usable(boxes[s])]
                generated = self._generate(job, boxes, sources, batch, edited, start, stop)
                by_position = dict(zip(edited, generated))
                for k, s in enumerate(sources):
                    frame = batch[k]
                    if k in by_position:
                        frame = paste_face(
                            frame, track.landmarks[s], boxes[s], by_position[k], float(strength[start + k])
                        )
                    yield frame
                start = stop
        finally:
            frames.close()

    def _generate(
        self,
        job: RenderInput,
        boxes: np.ndarray,
        sources: np.ndarray,
        batch: list[np.ndarray],
        edited: list[int],
        start: int,
        stop: int,
    ) -> np.ndarray:
        """The generator's faces for output frames start..stop-1 (`batch`) at the positions `edited`."""
        if not edited:
            return np.zeros((0, 3, FACE_SIZE, FACE_SIZE), np.float32)
        chosen = sources[edited]
        face = model_face_input([batch[k] for k in edited], [boxes[s] for s in chosen])
        mel = mel_windows(job.audio.mel, job.fps, stop, MEL_STEPS, first=start)[edited][:, None]
        return self._predict(mel, face)

    def _predict(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        """Run in batches of the current size, halving it for good when the device runs out of memory."""
        out, i = [], 0
        while i < len(face):
            size = self.batch_size
            try:
                out.append(self.runner(mel[i : i + size], face[i : i + size]))
            except self.runner.memory_errors:
                if size == 1:
                    raise EngineError(
                        ErrorCode.OUT_OF_MEMORY,
                        f"The wav2lip engine ran out of {self.runner.device} memory even for one frame.",
                        f"wav2lip 引擎在 {self.runner.device} 上内存不足，连单帧都无法处理。",
                    ) from None
                self.batch_size = size // 2
                log.warning("wav2lip: out of memory at batch %d, retrying with %d", size, self.batch_size)
                continue
            i += size
        return np.concatenate(out)


def make_engine(settings: Settings | None = None) -> Wav2LipEngine:
    """The registry's entry (koubo.engines.ENGINE_MODULES); loads the weights (EngineError if it cannot)."""
    return Wav2LipEngine(settings or load_settings())
