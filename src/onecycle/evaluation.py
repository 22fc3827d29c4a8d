"""Scoring a model on a fixed set of batches, and moving batches to the model's device.

A library module: it imports torch only, so that the range test (onecycle.range_test) can use
it without the workflow's stack; the training loop (onecycle.training.run) uses the same `evaluate`.
"""

from __future__ import annotations

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


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             loss_fn: Callable = nn.functional.cross_entropy,
             reduce: Callable[[list[float]], list[float]] | None = None,
             device: torch.device | None = None) -> tuple[float, float]:
    """Mean loss and accuracy over every example `batches` yields (for training runs: the full
    test set); the model's train/eval mode is restored afterwards. `device`: move each batch
    there first (None: the batches are already on the model's device). `reduce` sums the
    (loss sum, correct, count) of data-parallel ranks that each scored a part of the set.

    The sums stay on the device until the last batch, and are read once: a read per batch would
    make the host wait for the device every batch. They are the host arithmetic's numbers: each
    batch's mean loss times its size in float64, added in order; the correct predictions in int64."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = None, None, 0
    for x, y in batches:
        if device is not None:
            x, y = move_to(x, device), move_to(y, device)
        logits = model(x)
        batch_loss = loss_fn(logits, y).double() * y.numel()
        batch_correct = (logits.argmax(1) == y).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        count += y.numel()
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
