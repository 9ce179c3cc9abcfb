"""The Wav2Lip generator in PyTorch, and the loading of a published checkpoint into it.

Module names, order and shapes follow the published network (Prajwal et al., 2020) exactly, so the
checkpoints people already hold (`wav2lip.pth`, `wav2lip_gan.pth`) load without any key mapping:
a 96×96 face (6 channels: the frame with its lower half blanked, then a reference frame) is encoded
by seven blocks, an 80×16 mel window by one, and a decoder with skip connections draws the face.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from koubo.engines.checkpoint import checkpoint_invalid, checkpoint_mismatch

FACE_SIZE = 96
MEL_STEPS = 16
N_MELS = 80


class ConvBlock(nn.Module):
    """Conv + batch norm + ReLU; a residual block adds its input before the ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int, residual=False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        return self.act(out + x if self.residual else out)


class UpBlock(nn.Module):
    """Transposed conv + batch norm + ReLU: doubles the resolution (or grows 1×1 to 3×3)."""

    def __init__(self, cin: int, cout: int, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, 3, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _down(cin: int, cout: int, residuals: int) -> nn.Sequential:
    """A stride-2 block followed by `residuals` residual blocks at the new resolution."""
    layers = [ConvBlock(cin, cout, 3, 2, 1)]
    layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(residuals)]
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, residuals: int) -> nn.Sequential:
    layers: list[nn.Module] = [UpBlock(cin, cout, 2, 1, 1)]
    layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(residuals)]
    return nn.Sequential(*layers)


def _residuals(channels: int, n: int) -> list[nn.Module]:
    return [ConvBlock(channels, channels, 3, 1, 1, residual=True) for _ in range(n)]


class Wav2LipNet(nn.Module):
    """forward(mel (B, 1, 80, 16), face (B, 6, 96, 96)) -> (B, 3, 96, 96) in [0, 1], BGR like its input."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),  # 96
                _down(16, 32, 2),  # 48
                _down(32, 64, 3),  # 24
                _down(64, 128, 2),  # 12
                _down(128, 256, 2),  # 6
                _down(256, 512, 1),  # 3
                nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, 32, 3, 1, 1),
            *_residuals(32, 2),
            ConvBlock(32, 64, 3, (3, 1), 1),
            *_residuals(64, 2),
            ConvBlock(64, 128, 3, 3, 1),
            *_residuals(128, 2),
            ConvBlock(128, 256, 3, (3, 2), 1),
            *_residuals(256, 1),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )
        # Each decoder block's output is concatenated with the encoder features of the same size,
        # hence input channels = previous output + skip channels.
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),  # 1
                nn.Sequential(UpBlock(1024, 512, 1, 0), *_residuals(512, 1)),  # 3
                _up(1024, 512, 2),  # 6
                _up(768, 384, 2),  # 12
                _up(512, 256, 2),  # 24
                _up(320, 128, 2),  # 48
                _up(160, 64, 2),  # 96
            ]
        )
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        skips = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mel)
        for block, skip in zip(self.face_decoder_blocks, reversed(skips)):
            x = torch.cat((block(x), skip), dim=1)
        return self.output_block(x)


# --- checkpoints ---------------------------------------------------------------------------------

# Batch-norm step counters: unused at inference, and absent from checkpoints of very old PyTorch.
_OPTIONAL_SUFFIX = "num_batches_tracked"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The generator weights in a checkpoint file, `module.` prefixes (DataParallel) removed.

    Only tensors and plain containers are unpickled (weights_only): a file holding anything else is
    refused rather than executed.
    """
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise checkpoint_invalid(path, f"it is not a PyTorch checkpoint of weights ({reason[:200]})") from None
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not state:
        raise checkpoint_invalid(path, f"it holds {type(raw).__name__}, not a dictionary with a state_dict")
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise checkpoint_invalid(path, f"its state_dict holds non-tensor entries such as {not_tensors[0]!r}")
    return {str(key).removeprefix("module."): value for key, value in state.items()}


def check_state_dict(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Refuse weights that do not fit the generator, naming the first keys or shapes that differ."""
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise checkpoint_mismatch(path, missing, unexpected)
    for key, value in state.items():
        want = tuple(expected[key].shape)
        if tuple(value.shape) != want:
            raise checkpoint_mismatch(path, [], [], shape=(key, tuple(value.shape), want))


def load_generator(path: Path) -> Wav2LipNet:
    """A Wav2LipNet in eval mode on the CPU with the weights of the checkpoint at `path`."""
    state = read_state_dict(path)
    net = Wav2LipNet()
    check_state_dict(path, state, net.state_dict())
    net.load_state_dict(state, strict=False)  # strict would also demand the optional counters
    return net.eval()
