"""Optimizers as the papers ran them: SGD with momentum or Nesterov, PyTorch's or Caffe's rule.

The two update rules differ once the LR changes every iteration, which is the whole point of
a cyclical schedule (docs/paper_reference.md D6):

    PyTorch:  b = m*b + (g + wd*w);          w -= lr * b
    Caffe:    v = m*v + lr*(g + wd*w);       w -= v

With a constant LR they are the same; with 1cycle, Caffe's buffer carries the LRs of past
iterations, PyTorch's does not. Smith's runs used Caffe, so replicating them exactly needs it.

Caffe also scales both per parameter by the prototxt's lr_mult and decay_mult: `parameter_groups`
builds those groups (`optim.multipliers: prototxt`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from onecycle.experiments.config import OptimConfig
from onecycle.models import CaffePort, ParamMultipliers, param_multipliers


class CaffeSGD(torch.optim.Optimizer):
    """Caffe's SGDSolver / NesterovSolver update (caffe/src/caffe/solvers/*.cpp).

    SGD:      v = m*v + lr*(g + wd*w);  w -= v
    Nesterov: v_prev = v; v = m*v + lr*(g + wd*w);  w -= (1 + m)*v - m*v_prev

    One `torch._foreach_*` op per step of the formula and parameter group, not one op per
    parameter: on a GPU each op is at least one kernel launch, and a per-parameter loop costs
    ResNet-56's 222 parameters 5 launches each per iteration (7 with Nesterov), more than the
    net's own forward and backward pass. The foreach ops carry out the per-parameter operations
    in the same order (on CPU they are the same kernels, one tensor at a time), so the weights
    are bit for bit those of the per-parameter loop (tests/test_lean_step.py).
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
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
        grads = [p.grad for p in params]
        # step = lr * (g + wd*w): g.add(w, alpha=wd).mul_(lr), or g * lr without decay.
        if wd != 0:
            steps = torch._foreach_add(grads, params, alpha=wd)
            torch._foreach_mul_(steps, lr)
        else:
            steps = torch._foreach_mul(grads, lr)
        history = self._history(params)
        if group["nesterov"]:
            previous = torch._foreach_mul(history, 1.0)  # a copy: x * 1 is x exactly
            torch._foreach_mul_(history, m)
            torch._foreach_add_(history, steps)
            torch._foreach_sub_(params, history, alpha=1 + m)
            torch._foreach_add_(params, previous, alpha=m)
        else:
            torch._foreach_mul_(history, m)
            torch._foreach_add_(history, steps)
            torch._foreach_sub_(params, history)

    def _history(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each parameter's history blob (the momentum buffer), created at zero as Caffe's are."""
        history = []
        for p in params:
            state = self.state[p]
            if "history" not in state:
                state["history"] = torch.zeros_like(p)
            history.append(state["history"])
        return history


def parameter_groups(model: nn.Module, weight_decay: float, weight_decay_on: str = "all",
                     multipliers: str = "none") -> list[dict]:
    """Param groups with Caffe's per-parameter learning-rate and weight-decay multipliers.

    Caffe's solver gives parameter p the rate lr * lr_mult(p) and the decay
    weight_decay * decay_mult(p) (sgd_solver.cpp: local_rate, local_decay). With
    `multipliers="prototxt"` the multipliers are the model's prototxt values
    (onecycle.models.param_multipliers; a model that is no Caffe port is refused); with "none"
    every parameter has 1 and 1. `weight_decay_on="weights_only"` then exempts
    biases and BN scales/shifts (1-D tensors) from decay, which Caffe only does through
    decay_mult 0 (docs/paper_reference.md D6).

    One group per distinct (lr_mult, decay), in the order parameters first appear. Each group
    carries its `lr_mult`: onecycle.schedules.apply_schedule sets the group's lr to
    schedule.lr(it) * lr_mult every iteration, as Caffe recomputes local_rate.
    """
    if multipliers not in ("none", "prototxt"):
        raise ValueError(f"multipliers must be 'none' or 'prototxt', got {multipliers!r}")
    if weight_decay_on not in ("all", "weights_only"):
        raise ValueError(f"weight_decay_on must be 'all' or 'weights_only', got {weight_decay_on!r}")
    if multipliers == "prototxt" and not isinstance(model, CaffePort):
        raise ValueError(f"optim.multipliers 'prototxt' needs a Caffe port; {type(model).__name__} "
                         "has no prototxt multipliers (use 'none')")
    table = param_multipliers(model) if multipliers == "prototxt" else {}
    groups: dict[tuple[float, float], dict] = {}
    for name, parameter in model.named_parameters():
        mult = table.get(name, ParamMultipliers())
        exempt = weight_decay_on == "weights_only" and parameter.ndim <= 1
        key = (mult.lr_mult, 0.0 if exempt else weight_decay * mult.decay_mult)
        group = groups.setdefault(key, {"params": [], "lr_mult": key[0], "weight_decay": key[1]})
        group["params"].append(parameter)
    return list(groups.values())


def build_optimizer(model: nn.Module, config: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer for a run; the schedule then sets each group's lr (schedule.lr(it) times the
    group's lr_mult) and momentum every iteration."""
    groups = parameter_groups(model, config.weight_decay, config.weight_decay_on, config.multipliers)
    nesterov = config.algorithm == "nesterov"
    if config.update_rule == "caffe":
        return CaffeSGD(groups, lr=lr, momentum=config.momentum, nesterov=nesterov)
    if nesterov and config.momentum == 0:
        raise ValueError("optim.algorithm 'nesterov' needs optim.momentum > 0")
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=nesterov)
