"""The training step's code paths as they were before issue 28 made them lean, kept as references.

The lean paths (onecycle.training.optim.CaffeSGD's foreach ops, evaluation that reads the device
once, batch-norm test statistics computed once per evaluation) must compute today's numbers
with fewer ops: tests/test_lean_step.py compares them with these, and the ops benchmark
(tests/benchmarks/test_bench_op_counts.py) counts both. Each is the code that was replaced,
unchanged but for its name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from onecycle.evaluation import move_to
from onecycle.models.layers import CaffeBatchNorm2d


class PerParameterCaffeSGD(torch.optim.Optimizer):
    """CaffeSGD before issue 28: a Python loop over the parameters, 5 ops each (7 with Nesterov)."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                step = p.grad.add(p, alpha=wd) if wd != 0 else p.grad.clone()
                step.mul_(lr)
                state = self.state[p]
                if "history" not in state:
                    state["history"] = torch.zeros_like(p)
                history = state["history"]
                if group["nesterov"]:
                    previous = history.clone()
                    history.mul_(m).add_(step)
                    p.sub_(history, alpha=1 + m).add_(previous, alpha=m)
                else:
                    history.mul_(m).add_(step)
                    p.sub_(history)


@torch.no_grad()
def evaluate_syncing_every_batch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                                 loss_fn: Callable = nn.functional.cross_entropy,
                                 device: torch.device | None = None) -> tuple[float, float]:
    """onecycle.evaluation.evaluate before issue 28: two host reads (.item()) per batch."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in batches:
        if device is not None:
            x, y = move_to(x, device), move_to(y, device)
        logits = model(x)
        loss_sum += loss_fn(logits, y).item() * y.numel()
        correct += (logits.argmax(1) == y).sum().item()
        count += y.numel()
    model.train(was_training)
    return loss_sum / count, correct / count


class RecomputingCaffeBatchNorm2d(CaffeBatchNorm2d):
    """CaffeBatchNorm2d before issue 28 in evaluation: the test statistics from the sums anew at
    every forward pass (6 ops per layer and batch)."""

    def running_mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = torch.where(self.sum_weight == 0, 0.0, 1.0 / self.sum_weight)
        return self.mean_sum * scale, self.var_sum * scale


def with_recomputing_batch_norm(model: nn.Module) -> nn.Module:
    """`model` with each CaffeBatchNorm2d's class swapped for RecomputingCaffeBatchNorm2d (same
    parameters and buffers: only the test statistics' method changes)."""
    for module in model.modules():
        if type(module) is CaffeBatchNorm2d:
            module.__class__ = RecomputingCaffeBatchNorm2d
    return model
