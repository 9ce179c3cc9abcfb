"""Lip-sync engines. The names live here, free of heavy imports, so the command line can list them."""

from __future__ import annotations

from koubo import errors

# Every engine koubo knows, by name, and the module that makes it (its `make_engine(settings)`);
# the module is imported only when the engine is asked for (koubo.engines.base.get_engine), so
# listing the names never loads PyTorch. The CLI, the job parameters and the web UI offer these.
ENGINE_MODULES = {
    "classic": "koubo.engines.classic",
    "wav2lip": "koubo.engines.wav2lip",
}
ENGINES = tuple(ENGINE_MODULES)


def cuda_available() -> bool:
    """Whether PyTorch is installed and sees a CUDA GPU; imported only when asked."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(setting: str) -> str:
    """ "cpu" or "cuda" for the `device` setting: "auto" is CUDA when PyTorch sees a GPU, else the CPU.

    "cuda" on a machine without one raises `no_cuda` rather than running on the CPU: a worker
    that offered CUDA would claim the jobs meant for a GPU and run them many times slower.
    """
    if setting == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if setting == "cuda":
        raise errors.KouboError(
            errors.ErrorCode.NO_CUDA,
            "device = cuda, but PyTorch sees no CUDA GPU on this machine.",
            "device = cuda，但 PyTorch 在这台机器上找不到 CUDA GPU。",
        )
    return "cpu"
