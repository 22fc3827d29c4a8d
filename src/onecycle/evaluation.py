"""Scoring a model on a fixed set of batches, moving batches to the model's device, and when a
training run counts as diverged.

A library module: it imports torch only, so that the range test (onecycle.range_test) can use
it without the workflow's stack; the training loop (onecycle.training.run) uses the same `evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn


def move_to(value: Any, device: torch.device) -> Any:
    """`value` with every tensor in it on `device`: a tensor, or tuples, lists and mappings of
    them (as torch-lr-finder moves its batches); anything else is returned unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(move_to(v, device) for v in value)
    if isinstance(value, Mapping):
        return {key: move_to(v, device) for key, v in value.items()}
    return value


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (else first buffer); CPU for a model with
    neither. Inputs go there, as torch-lr-finder's `device` and Lightning put them."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def training_divergence(loss: float, first_loss: float | None, factor: float) -> str | None:
    """Why a training run's `loss` counts as diverged, or None: a non-finite loss, or one above
    `factor` x the run's first loss (the suite's runs: train.divergence_factor, default 10;
    onecycle.advice's trials the same)."""
    if not math.isfinite(loss):
        return f"loss is {loss}"
    if first_loss is not None and loss > factor * first_loss:
        return f"loss {loss:.4g} exceeds {factor:g} x the first loss {first_loss:.4g}"
    return None


def batch_pair(batch: Any, what: str) -> tuple[Any, Any]:
    """(inputs, targets) of one batch, or a one-line TypeError naming `what`: a triple such as
    (inputs, targets, weights) is refused rather than read in part (torch-lr-finder drops the
    extra items silently; docs/library.md, "Against the peers' own tests")."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = type(batch).__name__ + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise TypeError(f"{what} must yield (inputs, targets) pairs, got {got}")
    return batch[0], batch[1]


def class_targets(targets: Any) -> Any:
    """Class-index targets as the (N,) vector cross_entropy and the accuracy need: an integer
    column of shape (N, 1) (labels read from a table, e.g. a DataFrame's `df[["label"]]`) is
    read as (N,). Anything else is returned unchanged: float targets of shape (N, 1) are a
    regression's, and squeezing them would broadcast an MSE over N x N pairs."""
    if (isinstance(targets, torch.Tensor) and targets.dim() == 2 and targets.shape[1] == 1
            and not targets.is_floating_point() and not targets.is_complex()):
        return targets[:, 0]
    return targets


def _correct(logits: torch.Tensor, targets: Any, what: str) -> torch.Tensor:
    """How many argmax predictions equal the class-index targets, an int64 tensor on the logits'
    device (read by the caller once, not per batch); a one-line ValueError when the targets
    cannot be class indices of the batch (a shape other than (N,) or (N, 1))."""
    predictions = logits.argmax(1)
    if not isinstance(targets, torch.Tensor) or targets.shape != predictions.shape:
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"{what}: the accuracy compares outputs.argmax(1), shape {tuple(predictions.shape)}, "
                         f"with the targets, got {shape}: give class indices of shape (N,) or (N, 1)")
    return (predictions == targets).sum()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             loss_fn: Callable = nn.functional.cross_entropy,
             reduce: Callable[[list[float]], list[float]] | None = None,
             device: torch.device | None = None, what: str = "batches") -> tuple[float, float]:
    """Mean loss and accuracy over every example `batches` yields (for training runs: the full
    test set); the model's train/eval mode is restored afterwards. `device`: move each batch
    there first (None: the batches are already on the model's device). `reduce` sums the
    (loss sum, correct, count) of data-parallel ranks that each scored a part of the set.
    Targets are class indices (`class_targets`); `what` names the batches in errors.

    The sums stay on the device until the last batch, and are read once: a read per batch would
    make the host wait for the device every batch. They are the host arithmetic's numbers: each
    batch's mean loss times its size in float64, added in order; the correct predictions in int64."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = None, None, 0
    try:
        for batch in batches:
            x, y = batch_pair(batch, what)
            y = class_targets(y)
            if device is not None:
                x, y = move_to(x, device), move_to(y, device)
            logits = model(x)
            batch_loss = loss_fn(logits, y).double() * y.numel()
            batch_correct = _correct(logits, y, what)
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            correct = batch_correct if correct is None else correct + batch_correct
            count += y.numel()
    finally:  # a bad batch raises: the caller's model keeps its mode all the same
        model.train(was_training)
    totals = [0.0, 0, count]
    if count:
        loss_value, correct_value = torch.stack([loss_sum, correct.double()]).tolist()
        totals = [loss_value, int(correct_value), count]
    if reduce is not None:
        totals = reduce(totals)
    loss_total, correct_total, count = totals
    if count == 0:
        raise ValueError("evaluate: the batches held no example to score")
    return loss_total / count, correct_total / count
