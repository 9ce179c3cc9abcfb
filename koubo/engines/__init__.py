"""Lip-sync engines. The names live here, free of heavy imports, so the command line can list them."""

# Every engine koubo knows; the CLI, the job parameters and the web UI offer these.
ENGINES = ("classic", "wav2lip")


def cuda_available() -> bool:
    """Whether PyTorch is installed and sees a CUDA GPU; imported only when asked."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
