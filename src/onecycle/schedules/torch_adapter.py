"""Applying a schedule to a torch optimizer: `apply_schedule`, the stateless form our own
training loop calls every iteration; `OneCycleScheduler`, a schedule as a torch LR scheduler for
anyone's PyTorch loop; `total_steps(epochs, loader)`, the iterations it spans; and the
param-group momentum helpers (beta1 for Adam, else `momentum`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence, Sized
from typing import Any

import torch

from onecycle.schedules.base import Schedule


def _checked_scales(optimizer: torch.optim.Optimizer, group_scales: Sequence[float] | None) -> list[float]:
    groups = len(optimizer.param_groups)
    scales = [1.0] * groups if group_scales is None else list(group_scales)
    if len(scales) != groups:
        raise ValueError(f"group_scales has {len(scales)} entries but the optimizer has {groups} param groups")
    for i, scale in enumerate(scales):
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"group_scales[{i}] must be a finite number >= 0, got {scale!r}")
    # Times each group's own `lr_mult` (Caffe's per-parameter multiplier, onecycle.training.optim), else 1:
    # a scale given on top never drops the prototxt's multipliers.
    return [float(scale) * group.get("lr_mult", 1.0) for scale, group in zip(scales, optimizer.param_groups)]


def check_momentum_groups(optimizer: torch.optim.Optimizer, what: str) -> None:
    """Raise ValueError (saying `what` sets momentum) if a param group has no momentum to set."""
    for i, group in enumerate(optimizer.param_groups):
        if "betas" not in group and "momentum" not in group:
            raise ValueError(f"{what} sets momentum, but param group {i} of "
                             f"{type(optimizer).__name__} has neither 'momentum' nor 'betas'")


def set_momentum(group: dict[str, Any], value: float) -> None:
    """Set a param group's momentum: beta1 for Adam-family optimizers (as torch's
    OneCycleLR/CyclicLR do), `momentum` for SGD, Nesterov, RMSprop."""
    if "betas" in group:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group["momentum"] = value


def group_momentum(group: dict[str, Any]) -> float | None:
    """The momentum a param group's optimizer uses: beta1 for Adam-family optimizers, else
    `momentum`; None if it has neither."""
    return group["betas"][0] if "betas" in group else group.get("momentum")


def total_steps(epochs: int, loader: Sized) -> int:
    """The iterations of a training of `epochs` passes over `loader`: epochs * len(loader), the
    `steps` of make_schedule and OneCycleLR's total_steps (its epochs x steps_per_epoch). A
    loader is anything with a len(): a DataLoader (its batches per epoch, drop_last counted), a
    list of batches. A generator has none: count its batches and multiply."""
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    try:
        per_epoch = len(loader)
    except TypeError:  # also a DataLoader over an IterableDataset without __len__
        raise TypeError(f"loader must have a len() (a DataLoader, a list of batches), got "
                        f"{type(loader).__name__}: pass epochs * batches_per_epoch to make_schedule") from None
    if per_epoch < 1:
        raise ValueError(f"loader has no batch (len {per_epoch}): an epoch needs at least one")
    return int(epochs) * per_epoch


def _checked_schedule(schedule: Any) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    hint = (f": build one with make_schedule({schedule!r}, steps, ...)"
            if isinstance(schedule, str) else ": build one with make_schedule(policy, steps, ...)")
    raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__} {schedule!r}{hint}")


def _checked_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return optimizer


def apply_schedule(optimizer: torch.optim.Optimizer, schedule: Schedule, it: int,
                   group_scales: Sequence[float] | None = None) -> None:
    """Set every param group's lr (times its scale) and momentum to the values of iteration `it`.

    A group's scale is group_scales[g] (default 1) times its `lr_mult` entry (1 when it has
    none), so the groups of onecycle.training.optim.parameter_groups keep Caffe's per-parameter rates."""
    schedule = _checked_schedule(schedule)
    scales = _checked_scales(_checked_optimizer(optimizer), group_scales)
    lr, momentum = schedule.lr(it), schedule.momentum(it)
    if momentum is not None:
        check_momentum_groups(optimizer, f"schedule {schedule.name}")
    for group, scale in zip(optimizer.param_groups, scales, strict=True):
        group["lr"] = lr * scale
        if momentum is not None:
            set_momentum(group, momentum)


class OneCycleScheduler(torch.optim.lr_scheduler.LRScheduler):
    """A `Schedule` as a torch LR scheduler, used where `torch.optim.lr_scheduler.OneCycleLR`
    goes: construction applies iteration 0, each `step()` the next iteration. Group g gets
    lr = schedule.lr(it) * group_scales[g] * its `lr_mult` (each 1 by default), as in
    `apply_schedule`.

    OneCycleLR's contract, kept exactly: with total_steps = schedule.steps, the standard loop
    (`optimizer.step(); scheduler.step()` for every batch of every epoch, steps = epochs *
    len(loader)) makes `steps` step() calls; the last one, after the last optimizer step, is
    accepted, and one more raises ValueError. That trailing step sets OneCycleLR's last phase
    one iteration past its end: with anneal_strategy="cos" the cosine is symmetric about its
    minimum, so the LR climbs back to iteration steps-2's value; with "linear" it falls below
    the minimum LR, and below zero when the phase spans fewer than start/min - 1 iterations
    (start/min, its start LR over the minimum, is 2.5e5 by default with two phases and 1e4 with
    three). No optimizer step uses that value; here the trailing step holds the last
    iteration's lr and momentum instead.

    `state_dict()` holds the progress only (plain numbers, so `torch.load(weights_only=True)`
    reads it); the schedule and group_scales are configuration, given again to the constructor.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule,
                 group_scales: Sequence[float] | None = None, last_epoch: int = -1) -> None:
        self.schedule = _checked_schedule(schedule)
        self.group_scales = _checked_scales(_checked_optimizer(optimizer), group_scales)
        if schedule.momentum(0) is not None:
            check_momentum_groups(optimizer, f"schedule {schedule.name}")
        super().__init__(optimizer, last_epoch)

    def step(self, epoch: int | None = None) -> None:
        if epoch is not None:
            raise ValueError("OneCycleScheduler.step() takes no epoch (deprecated in torch); "
                             "use apply_schedule(optimizer, schedule, it) to jump to an iteration")
        next_it = self.last_epoch + 1
        if next_it > self.schedule.steps:
            raise ValueError(f"OneCycleScheduler: tried to step {next_it} times; the schedule has "
                             f"{self.schedule.steps} steps ({self.schedule.name} was built for "
                             f"iterations 0 .. {self.schedule.steps - 1}, plus the standard loop's "
                             "trailing step() after the last one)")
        super().step()

    def get_lr(self) -> list[float]:
        # The trailing step (last_epoch == steps) holds the last iteration's values.
        it = min(self.last_epoch, self.schedule.steps - 1)
        momentum = self.schedule.momentum(it)
        if momentum is not None:  # side effect, as in torch's OneCycleLR.get_lr
            for group in self.optimizer.param_groups:
                set_momentum(group, momentum)
        lr = self.schedule.lr(it)
        return [lr * scale for scale in self.group_scales]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        del state["schedule"], state["group_scales"]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["last_epoch"] > self.schedule.steps:
            raise ValueError(f"OneCycleScheduler: the saved state is at step {state_dict['last_epoch']}, "
                             f"past this schedule's {self.schedule.steps} steps")
        super().load_state_dict(state_dict)
