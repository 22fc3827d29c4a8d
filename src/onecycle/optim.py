"""Optimizers as the papers ran them: SGD with momentum or Nesterov, PyTorch's or Caffe's rule.

The two update rules differ once the LR changes every iteration, which is the whole point of
a cyclical schedule (paper_tables.md D6):

    PyTorch:  b = m*b + (g + wd*w);          w -= lr * b
    Caffe:    v = m*v + lr*(g + wd*w);       w -= v

With a constant LR they are the same; with 1cycle, Caffe's buffer carries the LRs of past
iterations, PyTorch's does not. Smith's runs used Caffe, so replicating them exactly needs it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from onecycle.config import OptimConfig


class CaffeSGD(torch.optim.Optimizer):
    """Caffe's SGDSolver / NesterovSolver update (caffe/src/caffe/solvers/*.cpp).

    SGD:      v = m*v + lr*(g + wd*w);  w -= v
    Nesterov: v_prev = v; v = m*v + lr*(g + wd*w);  w -= (1 + m)*v - m*v_prev
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"CaffeSGD: invalid lr={lr}, momentum={momentum} or weight_decay={weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                step = p.grad.add(p, alpha=wd) if wd != 0 else p.grad.clone()
                step.mul_(lr)
                state = self.state[p]
                if "history" not in state:
                    # Caffe's history blobs start at zero.
                    state["history"] = torch.zeros_like(p)
                history = state["history"]
                if group["nesterov"]:
                    previous = history.clone()
                    history.mul_(m).add_(step)
                    p.sub_(history, alpha=1 + m).add_(previous, alpha=m)
                else:
                    history.mul_(m).add_(step)
                    p.sub_(history)
        return loss


def parameter_groups(model: nn.Module, weight_decay: float, weight_decay_on: str) -> list[dict]:
    if weight_decay_on == "all":
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    # "weights_only": conv and linear weights; biases and BN scales/shifts (1-D) go undecayed.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer for a run; the schedule then sets lr (and momentum) every iteration."""
    groups = parameter_groups(model, config.weight_decay, config.weight_decay_on)
    nesterov = config.algorithm == "nesterov"
    if config.update_rule == "caffe":
        return CaffeSGD(groups, lr=lr, momentum=config.momentum, nesterov=nesterov)
    if nesterov and config.momentum == 0:
        raise ValueError("optim.algorithm 'nesterov' needs optim.momentum > 0")
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=nesterov)
