"""The Wav2Lip generator as ONNX: export from a checkpoint, and execution through onnxruntime.

An export records the sha256 of the checkpoint it came from, so an .onnx left over from another
checkpoint (the user swapped wav2lip.pth for wav2lip_gan.pth) is never used in its place.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from koubo.engines.checkpoint import file_sha256

SHA_KEY = "koubo.checkpoint_sha256"
OPSET = 17


def default_export_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".onnx")


def export_onnx(checkpoint: Path, output: Path | None = None) -> Path:
    """Write the generator of `checkpoint` as ONNX (dynamic batch) to `output`, atomically."""
    import onnx
    import torch

    from koubo.engines.wav2lip_net import FACE_SIZE, MEL_STEPS, N_MELS, load_generator

    net = load_generator(checkpoint)
    output = output or default_export_path(checkpoint)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.part")
    example = (torch.zeros(1, 1, N_MELS, MEL_STEPS), torch.zeros(1, 6, FACE_SIZE, FACE_SIZE))
    try:
        # The TorchScript exporter: the network is plain convolutions, and it needs no onnxscript.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                net,
                example,
                str(temporary),
                dynamo=False,
                input_names=["mel", "face"],
                output_names=["generated"],
                dynamic_axes={"mel": {0: "batch"}, "face": {0: "batch"}, "generated": {0: "batch"}},
                opset_version=OPSET,
            )
        model = onnx.load(str(temporary))
        entry = model.metadata_props.add()
        entry.key, entry.value = SHA_KEY, file_sha256(checkpoint)
        onnx.save(model, str(temporary))
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)
    return output


class OnnxRunner:
    """Runs an exported generator; same inputs and outputs as the PyTorch one."""

    kind = "onnxruntime"

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        wanted = ["CUDAExecutionProvider"] if device == "cuda" else []
        providers = [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initializers are noise to a user
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.memory_errors: tuple[type[BaseException], ...] = (MemoryError,)

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(SHA_KEY)

    def __call__(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        feeds = {"mel": np.ascontiguousarray(mel, np.float32), "face": np.ascontiguousarray(face, np.float32)}
        return self.session.run(None, feeds)[0]


def matching_export(checkpoint: Path, sha256: str, device: str) -> OnnxRunner | None:
    """A runner for the export next to `checkpoint` if there is one and it came from these weights."""
    path = default_export_path(checkpoint)
    if not path.is_file():
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    try:
        runner = OnnxRunner(path, device)
    except Exception:  # noqa: BLE001 - a damaged or foreign .onnx is simply not used
        return None
    return runner if runner.checkpoint_sha256 == sha256 else None
