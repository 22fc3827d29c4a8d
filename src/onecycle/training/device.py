"""Where a run computes and how: the torch device a config names (train.device) and its kernel
mode (train.mode, deterministic or fast). Shared by the training run and the range-test job."""

from __future__ import annotations

import torch

from onecycle.experiments.config import ConfigError


def set_mode(mode: str, device: torch.device) -> None:
    """Deterministic or fast kernels (TrainConfig.mode)."""
    deterministic = mode == "deterministic"
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but CUDA is not available on this machine")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)
