"""Wav2Lip generator throughput: PyTorch against onnxruntime, on the CPU, at batch 16.

    .venv/bin/python bench/wav2lip.py [--batch 16] [--repeats 5]

The generator has random weights (same network and cost as the published checkpoints), saved in the
published format, exported with the same code as `koubo export-wav2lip`, then both runners draw
the same batches. Reported: frames/s of the model alone (median of the repeats) and the largest
pixel difference between the two. Figures are printed last.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from koubo.engines.wav2lip import TorchRunner
from koubo.engines.wav2lip_net import FACE_SIZE, MEL_STEPS, N_MELS, Wav2LipNet, load_generator
from koubo.engines.wav2lip_onnx import OnnxRunner, export_onnx


def frames_per_second(runner, mel: np.ndarray, face: np.ndarray, repeats: int) -> float:
    runner(mel, face)  # warm-up: allocations, kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(mel, face)
        times.append(time.perf_counter() - start)
    return len(face) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mel = rng.uniform(-4, 4, (args.batch, 1, N_MELS, MEL_STEPS)).astype(np.float32)
    face = rng.random((args.batch, 6, FACE_SIZE, FACE_SIZE), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "wav2lip_gan.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in Wav2LipNet().state_dict().items()}}, checkpoint)
        torch_runner = TorchRunner(load_generator(checkpoint), "cpu")
        onnx_runner = OnnxRunner(export_onnx(checkpoint))
        difference = float(np.abs(torch_runner(mel, face) - onnx_runner(mel, face)).max()) * 255
        torch_fps = frames_per_second(torch_runner, mel, face, args.repeats)
        onnx_fps = frames_per_second(onnx_runner, mel, face, args.repeats)

    print(f"CPU, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"torch        {torch_fps:7.1f} frames/s")
    print(f"onnxruntime  {onnx_fps:7.1f} frames/s  ({onnx_fps / torch_fps:.2f}x torch)")
    print(f"largest difference between the two: {difference:.3f} of 255")


if __name__ == "__main__":
    main()
