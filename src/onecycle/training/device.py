"""Where a run computes and how: the torch device a config names (train.device) and its kernel
mode (train.mode, deterministic or fast). Shared by the training run and the range-test job."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from onecycle.experiments.config import ConfigError

# cuBLAS picks its reduction order per stream workspace; with one of these two workspace
# configurations it is fixed, and torch.use_deterministic_algorithms refuses cuBLAS without one
# (PyTorch's "Reproducibility" notes; NVIDIA's cuBLAS docs, "Results reproducibility").
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_CUBLAS_WORKSPACES = (":4096:8", ":16:8")


def set_mode(mode: str, device: torch.device) -> None:
    """Deterministic or fast kernels (TrainConfig.mode). Call it before the run computes anything
    on the device: cuBLAS reads its workspace setting when torch first uses it.

    deterministic: every op must have a deterministic implementation, or the run stops with
    torch's error naming the op (no warn_only: a warning in a log is a run that silently differs
    from its rerun); on CUDA, cuBLAS gets a deterministic workspace, and cuDNN neither autotunes
    nor uses TF32. fast: cuDNN autotuning and TF32 matrix products and convolutions."""
    deterministic = mode == "deterministic"
    if deterministic and device.type == "cuda":
        workspace = os.environ.setdefault(CUBLAS_WORKSPACE, DETERMINISTIC_CUBLAS_WORKSPACES[0])
        if workspace not in DETERMINISTIC_CUBLAS_WORKSPACES:
            raise ConfigError(f"train.mode 'deterministic': ${CUBLAS_WORKSPACE} = {workspace!r} makes cuBLAS "
                              f"non-deterministic; unset it or set it to {DETERMINISTIC_CUBLAS_WORKSPACES[0]!r}")
    torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic


@contextlib.contextmanager
def explain_mode_errors(mode: str) -> Iterator[None]:
    """Turn torch's error for an op without a deterministic implementation into a one-line
    ConfigError that says which op and what to do (the run stops either way)."""
    try:
        yield
    except RuntimeError as error:
        message = str(error)
        if mode != "deterministic" or "does not have a deterministic implementation" not in message:
            raise
        op = message.split(" does not have")[0].strip()
        raise ConfigError(f"train.mode 'deterministic': {op} has no deterministic implementation on this "
                          "device; train this run with train.mode 'fast'") from None


def fused_batch_norm(device: torch.device) -> bool:
    """Whether a run on `device` lets the batch-norm kernel keep Caffe's running statistics
    (onecycle.models.fused_batch_norm): on accelerators, where each op is a kernel launch. CPU
    runs keep the sums whose exact numbers the committed results hold."""
    return device.type != "cpu"


def resolve_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but CUDA is not available on this machine")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)
