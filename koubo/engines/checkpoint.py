"""User-supplied model weights: where koubo looks for them, how they are identified, why one is refused.

Nothing here needs PyTorch, so a missing checkpoint or a missing PyTorch is reported the same clear
way on an installation without the `wav2lip` extra.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from koubo.config import Settings
from koubo.errors import EngineError, ErrorCode

# Shown when a name is listed, so a message about a 400-key mismatch stays readable.
_NAMED_KEYS = 3


def checkpoint_path(settings: Settings) -> Path:
    """The configured Wav2Lip checkpoint: a file name inside models_dir, or an absolute path."""
    given = Path(settings.wav2lip_checkpoint).expanduser()
    return given if given.is_absolute() else settings.models_path / given


def require_checkpoint(path: Path) -> Path:
    if not path.is_file():
        raise EngineError(
            ErrorCode.CHECKPOINT_MISSING,
            f"The Wav2Lip checkpoint was not found at {path}. koubo never downloads it (its licence forbids "
            "commercial use): put your own copy of wav2lip_gan.pth or wav2lip.pth there, or set "
            "KOUBO_WAV2LIP_CHECKPOINT to its path.",
            f"未在 {path} 找到 Wav2Lip 模型文件。koubo 不会自动下载它（其许可证禁止商业用途）："
            "请将您自己的 wav2lip_gan.pth 或 wav2lip.pth 放到该位置，或通过 KOUBO_WAV2LIP_CHECKPOINT 指定其路径。",
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def torch_missing() -> EngineError:
    return EngineError(
        ErrorCode.ENGINE_UNAVAILABLE,
        "The wav2lip engine needs PyTorch, which is not installed: run  pip install koubo[wav2lip]",
        "wav2lip 引擎需要 PyTorch，当前未安装：请运行  pip install koubo[wav2lip]",
    )


def checkpoint_invalid(path: Path, reason: str) -> EngineError:
    return EngineError(
        ErrorCode.CHECKPOINT_INVALID,
        f"{path} cannot be used as a Wav2Lip checkpoint: {reason}.",
        f"{path} 不能用作 Wav2Lip 模型文件：{reason}。",
    )


def _some(keys: list[str]) -> str:
    more = f" and {len(keys) - _NAMED_KEYS} more" if len(keys) > _NAMED_KEYS else ""
    return ", ".join(keys[:_NAMED_KEYS]) + more


def checkpoint_mismatch(
    path: Path,
    missing: list[str],
    unexpected: list[str],
    shape: tuple[str, tuple[int, ...], tuple[int, ...]] | None = None,
) -> EngineError:
    """The weights do not belong to the 96×96 Wav2Lip generator (SyncNet, the discriminator, an HD variant)."""
    en, zh = [], []
    if missing:
        en.append(f"{len(missing)} weights of the Wav2Lip generator are missing ({_some(missing)})")
        zh.append(f"缺少 Wav2Lip 生成器的 {len(missing)} 个权重（{_some(missing)}）")
    if unexpected:
        en.append(f"{len(unexpected)} weights are not part of the Wav2Lip generator ({_some(unexpected)})")
        zh.append(f"有 {len(unexpected)} 个权重不属于 Wav2Lip 生成器（{_some(unexpected)}）")
    if shape is not None:
        key, got, want = shape
        en.append(f"weight {key} has shape {list(got)} in the file but {list(want)} in the Wav2Lip generator")
        zh.append(f"权重 {key} 在文件中的形状为 {list(got)}，而 Wav2Lip 生成器需要 {list(want)}")
    return EngineError(
        ErrorCode.CHECKPOINT_INVALID,
        f"{path} is not a 96×96 Wav2Lip generator checkpoint: {'; '.join(en)}.",
        f"{path} 不是 96×96 的 Wav2Lip 生成器模型文件：{'；'.join(zh)}。",
    )
