"""The LR-only policies: CLR (arXiv 1506.01186; docs/paper_reference.md D1), Caffe's classic
fixed/step/multistep/inv/exp/poly, and cosine annealing (SGDR, arXiv 1608.03983); each holds
an optional momentum constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from onecycle.schedules.base import _ConstantMomentumSchedule


@dataclass(frozen=True, kw_only=True)
class CyclicalLR(_ConstantMomentumSchedule):
    """CLR (arXiv 1506.01186 §3.1; docs/paper_reference.md D1), `name` = triangular | triangular2 | exp_range:
        cycle = floor(1 + it / (2 stepsize));  x = |it / stepsize - 2 cycle + 1|
        lr = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale
    scale = 1 (triangular), 1 / 2**(cycle-1) (triangular2), gamma**it (exp_range).

    exp_range's `decay` says what gamma**it shrinks. "amplitude" is the formula above, as
    bckenstler's Keras CLR and torch's CyclicLR(mode="exp_range") compute it: the LR tends to
    base_lr. "bounds" is the CLR paper's wording (§3.1: "each boundary value declines by an
    exponential factor of gamma^iteration"): lr = gamma**it * (base_lr + (max_lr - base_lr) *
    max(0, 1 - x)), which oscillates around Caffe's exp policy from the same midpoint, as the
    paper's Fig 10 shows. Smith's Caffe code for exp_range is not published.
    """

    base_lr: float
    max_lr: float
    stepsize: int
    gamma: float | None  # exp_range only
    decay: str = "amplitude"  # exp_range only: "amplitude" | "bounds"

    def _lr(self, it: int) -> float:
        cycle = math.floor(1 + it / (2 * self.stepsize))
        x = abs(it / self.stepsize - 2 * cycle + 1)
        if self.name == "triangular":
            scale = 1.0
        elif self.name == "triangular2":
            scale = 1 / 2.0 ** (cycle - 1)
        else:
            scale = self.gamma**it
            if self.decay == "bounds":
                return (self.base_lr + (self.max_lr - self.base_lr) * max(0.0, 1 - x)) * scale
        return self.base_lr + (self.max_lr - self.base_lr) * max(0.0, 1 - x) * scale


# Caffe's classic policies: SGDSolver<Dtype>::GetLearningRate, BVLC/caffe
# src/caffe/solvers/sgd_solver.cpp (`iter` there is our 0-based `it`).


@dataclass(frozen=True, kw_only=True)
class CaffeFixed(_ConstantMomentumSchedule):
    base_lr: float

    def _lr(self, it: int) -> float:
        return self.base_lr


@dataclass(frozen=True, kw_only=True)
class CaffeStep(_ConstantMomentumSchedule):
    base_lr: float
    gamma: float
    stepsize: int

    def _lr(self, it: int) -> float:
        return self.base_lr * self.gamma ** (it // self.stepsize)


@dataclass(frozen=True, kw_only=True)
class CaffeMultiStep(_ConstantMomentumSchedule):
    """Caffe advances current_step_ (by one per iteration) while iter >= stepvalue[current_step_];
    with strictly increasing stepvalues that is the number of stepvalues <= it."""

    base_lr: float
    gamma: float
    stepvalue: tuple[int, ...]

    def _lr(self, it: int) -> float:
        return self.base_lr * self.gamma ** sum(1 for value in self.stepvalue if value <= it)


@dataclass(frozen=True, kw_only=True)
class CaffeInv(_ConstantMomentumSchedule):
    base_lr: float
    gamma: float
    power: float

    def _lr(self, it: int) -> float:
        return self.base_lr * (1 + self.gamma * it) ** (-self.power)


@dataclass(frozen=True, kw_only=True)
class CaffeExp(_ConstantMomentumSchedule):
    base_lr: float
    gamma: float

    def _lr(self, it: int) -> float:
        return self.base_lr * self.gamma**it


@dataclass(frozen=True, kw_only=True)
class CaffePoly(_ConstantMomentumSchedule):
    base_lr: float
    power: float
    max_iter: int

    def _lr(self, it: int) -> float:
        return self.base_lr * (1 - it / self.max_iter) ** self.power


@dataclass(frozen=True, kw_only=True)
class Cosine(_ConstantMomentumSchedule):
    """Cosine annealing without restarts (SGDR, arXiv 1608.03983), the closed form of torch's
    CosineAnnealingLR(T_max=steps): it reaches eta_min at it = steps, one past the end."""

    base_lr: float
    eta_min: float

    def _lr(self, it: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * it / self.steps)) / 2
