"""A training run's checkpoint: what it holds (CHECKPOINT_KEYS), how the run's state goes into
one and comes back out of it (training_state, restore_training_state: weights, optimizer and
the torch RNGs, CPU and CUDA, per rank when data-parallel), and the Checkpointer that saves it
atomically on a clock and loads it only for the very config it was written for."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onecycle import data as datasets
from onecycle import io
from onecycle.evaluation import model_device
from onecycle.experiments.config import ConfigError
from onecycle.experiments.identity import recorded_digest, set_aside
from onecycle.training import distributed

CHECKPOINT = "checkpoint.pt"
# What a checkpoint holds (Checkpointer.save, training_state). Only data-parallel: "rng_ranks";
# only on CUDA: "rng_cuda" (and "rng_cuda_ranks" data-parallel). Checkpoints of CPU runs keep
# the keys they always had, so they still load.
CHECKPOINT_KEYS = ("config_json", "model", "optimizer", "rng", "iteration", "history", "log_rows",
                   "first_loss", "elapsed", "epoch_loss_sum")


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: distributed.Context, *,
                   iteration: int, history: list[dict[str, Any]], log_rows: list[dict[str, Any]],
                   first_loss: float | None, elapsed: float, epoch_loss_sum: float) -> dict[str, Any]:
    """A checkpoint's state but its config (Checkpointer.save adds that). Every RNG a run draws
    from: the torch CPU generator (dropout on CPU) and, on CUDA, the generator of the run's
    device (dropout there); data-parallel, every rank's as well ("*_ranks")."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "rng": torch.get_rng_state(), "iteration": iteration, "history": history,
             "log_rows": log_rows, "first_loss": first_loss, "elapsed": elapsed,
             "epoch_loss_sum": epoch_loss_sum}
    rng_ranks = ctx.rng_states()  # a collective: every rank calls training_state() together
    if rng_ranks is not None:
        state["rng_ranks"] = rng_ranks
    device = model_device(model)
    if device.type == "cuda":
        state["rng_cuda"] = torch.cuda.get_rng_state(device)
        cuda_ranks = ctx.rng_states(state["rng_cuda"])
        if cuda_ranks is not None:
            state["rng_cuda_ranks"] = cuda_ranks
    return state


def restore_training_state(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                           ctx: distributed.Context, seed: int) -> None:
    """Weights, optimizer and this rank's RNGs back from a checkpoint's state; the run's
    progress (iteration, history...) the caller reads from `state` itself.

    A checkpoint without a CUDA generator state (written by the same config on a CPU machine)
    resumed on CUDA seeds that generator from (seed, rank, iteration): every rank, and every
    resume, then draws its own masks, as ranks do from the start (onecycle.training.run)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng_ranks"][ctx.rank] if ctx.enabled else state["rng"])
    device = model_device(model)
    if device.type != "cuda":
        return
    if ctx.enabled:
        cuda_state = state["rng_cuda_ranks"][ctx.rank] if "rng_cuda_ranks" in state else None
    else:
        cuda_state = state.get("rng_cuda")
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)
    else:
        with torch.cuda.device(device):
            torch.cuda.manual_seed(datasets.derived_seed("resume", seed, ctx.rank, state["iteration"]))


class Checkpointer:
    """Full training state, saved atomically; loaded with weights_only=True (no pickle code).
    A checkpoint of another config is refused, or with `set_aside_other` moved to a sibling
    folder (onecycle.experiments.identity.set_aside) by the process that may write the folder
    (`may_move`: rank 0 of a data-parallel run) and ignored by the others."""

    def __init__(self, out_dir: Path, config_json: str, every_s: float, *, set_aside_other: bool = False,
                 may_move: bool = True) -> None:
        self.path = out_dir / CHECKPOINT
        self.config_json = config_json
        self.every_s = every_s
        self.last_save = time.monotonic()
        self.set_aside_other, self.may_move = set_aside_other, may_move

    def due(self) -> bool:
        return time.monotonic() - self.last_save >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        # Through a Python file object, so that a full disk is OSError "No space left on device":
        # torch.save to a path reports it as "enforce fail at inline_container.cc", and even to
        # a file object its zip writer's close can hide the OSError behind such a RuntimeError.
        with io.atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            try:
                torch.save({"config_json": self.config_json, **state}, fh)
            except RuntimeError as error:
                if isinstance(error.__context__, OSError):
                    raise error.__context__ from None
                raise
        self.last_save = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        fix = "delete it to restart from scratch, or restore it"
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # truncated, empty, random bytes: zip, unpickling or EOF errors
            raise ConfigError(f"{self.path}: corrupt checkpoint (torch.load cannot read it); {fix}") from None
        if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
            raise ConfigError(f"{self.path}: not a training checkpoint of this suite; {fix}")
        if state.get("config_json") != self.config_json:
            if not self.set_aside_other:
                raise ConfigError(f"{self.path}: checkpoint was written for a different config; move it away "
                                  "(or pass --set-aside-stale) to start over")
            if self.may_move:
                recorded = json.loads(state["config_json"]) if isinstance(state["config_json"], str) else {}
                moved = set_aside(self.path.parent, recorded_digest("train", recorded), [CHECKPOINT])
                print(f"{self.path}: a checkpoint of another config; moved it to {moved}", flush=True)
            return None
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
