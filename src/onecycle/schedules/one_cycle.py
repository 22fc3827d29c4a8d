"""The 1cycle policies: Smith's as his Caffe code executed it and as the papers describe it, with
his Caffe fork's cyclical momentum (docs/paper_reference.md D3, D4), fastai's `fit_one_cycle`
and PyTorch's `OneCycleLR`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from onecycle.schedules.base import Schedule


# ---------------------------------------------------------------------------------------------
# Smith's 1cycle (docs/paper_reference.md D3) and Caffe's cyclical momentum (D4)


@dataclass(frozen=True, kw_only=True)
class CaffeCyclicalMomentum:
    """Momentum of Smith's Caffe fork (Part 1 Appendix A.2; docs/paper_reference.md D4).

    With m = `momentum`, c = `min_momentum` (Caffe `cyclical_momentum[0]`) and
    s_m = `stepsize` (Caffe `cyclical_momentum[1]`):
        cycle = floor(t / (2 s_m));  x = (t - (2 cycle + 1) s_m) / s_m
        momentum = m + (c - m) * min(1, max(0, (1 - |x|) / 2**cycle))
    i.e. m -> c at s_m -> m at 2 s_m. Caffe then starts a second, half-amplitude cycle (the logs
    show momentum sliding from 0.95 toward 0.90 in the tail); `second_cycle=False` holds m
    instead, which is the papers' intent (momentum stays at its maximum in the tail).
    """

    momentum: float
    min_momentum: float
    stepsize: int
    second_cycle: bool

    def __call__(self, it: int) -> float:
        if not self.second_cycle and it >= 2 * self.stepsize:
            return self.momentum
        cycle = it // (2 * self.stepsize)
        x = (it - (2 * cycle + 1) * self.stepsize) / self.stepsize
        weight = min(1.0, max(0.0, (1.0 - abs(x)) / 2**cycle))
        return self.momentum + (self.min_momentum - self.momentum) * weight


@dataclass(frozen=True, kw_only=True)
class SmithOneCycle(Schedule):
    """Leslie Smith's 1cycle: one LR cycle over 2*stepsize iterations, then a tail far below.

    variant "caffe" = his Caffe `1cycle` policy as executed (reconstructed from the `lr =` lines
    of every hyperParam1 log; docs/paper_reference.md D3):
        0 <= t <= s:   base + (max - base) * t / s
        s < t <= 2s:   max * (2s - t) / s          (down to ZERO, not back to base)
        t > 2s:        base / 1000                 (constant tail: 8e-5 for base 0.08 in the logs)
    variant "paper" = as SC §3 / Part 1 §4.1 describe it: base -> max over [0, s], max -> base
    over [s, 2s], then linear from base at 2s to `final_lr` at the last iteration steps-1.
    Edge case 2s == steps-1 (a one-iteration tail): that last iteration takes `final_lr`, so the
    run always ends at final_lr, the text's "several orders of magnitude less than the initial
    learning rate"; 2s == steps leaves no tail at all and is rejected for this variant.
    """

    variant: str
    base_lr: float
    max_lr: float
    stepsize: int
    final_lr: float | None  # variant "paper" only
    constant_momentum: float | None
    cyclical_momentum: CaffeCyclicalMomentum | None

    def _lr(self, it: int) -> float:
        s = self.stepsize
        if it <= s:
            return self.base_lr + (self.max_lr - self.base_lr) * it / s
        if self.variant == "caffe":
            if it <= 2 * s:
                return self.max_lr * (2 * s - it) / s
            # The tail factor 1/1000 is Smith's Caffe code, read off his logs (D3).
            return self.base_lr / 1000
        last = self.steps - 1
        if it == last:  # also covers the one-iteration tail of 2s == steps-1 (see docstring)
            return self.final_lr
        if it <= 2 * s:
            return self.max_lr + (self.base_lr - self.max_lr) * (it - s) / s
        return self.base_lr + (self.final_lr - self.base_lr) * (it - 2 * s) / (last - 2 * s)

    def _momentum(self, it: int) -> float | None:
        if self.cyclical_momentum is not None:
            return self.cyclical_momentum(it)
        return self.constant_momentum


# ---------------------------------------------------------------------------------------------
# fastai's and PyTorch's 1cycle


def _fastai_cos(start: float, end: float, pos: float) -> float:
    # fastai's sched_cos / SchedCos (fastai/callback/schedule.py), same operation order.
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


@dataclass(frozen=True, kw_only=True)
class FastaiOneCycle(Schedule):
    """fastai `Learner.fit_one_cycle`: `combined_cos(pct_start, lr_max/div, lr_max,
    lr_max/div_final)` for the LR and `combined_cos(pct_start, *moms)` for momentum.

    Position: fastai's ParamScheduler evaluates the schedule at `pct_train`, which its
    TrainEvalCallback sets to epoch/n_epoch at each epoch start and raises by
    1/(n_iter*n_epoch) after each batch, i.e. pos = it / steps (0 at the first batch, never 1).
    We compute that quotient directly; fastai accumulates it by repeated addition and does the
    phase split of `combine_scheds` in float32 tensors, so its own values differ from these by
    float rounding only. Phase: pos >= pct_start is the second phase (fastai's `pos >= pcts`).
    """

    lr_max: float
    div: float
    div_final: float
    pct_start: float
    moms: tuple[float, float, float]

    def _phase(self, it: int) -> tuple[int, float]:
        pos = it / self.steps
        if pos >= self.pct_start:
            return 1, (pos - self.pct_start) / (1 - self.pct_start)
        return 0, pos / self.pct_start

    def _lr(self, it: int) -> float:
        phase, pos = self._phase(it)
        if phase == 0:
            return _fastai_cos(self.lr_max / self.div, self.lr_max, pos)
        return _fastai_cos(self.lr_max, self.lr_max / self.div_final, pos)

    def _momentum(self, it: int) -> float:
        phase, pos = self._phase(it)
        return _fastai_cos(self.moms[phase], self.moms[phase + 1], pos)


@dataclass(frozen=True, kw_only=True)
class TorchOneCycle(Schedule):
    """torch.optim.lr_scheduler.OneCycleLR with total_steps = steps, computed as torch does.

    Phases (end_step, start, end) exactly as OneCycleLR.__init__ builds them; the values come
    from its get_lr (same expressions, same order, so equal to the last bit).
    """

    max_lr: float
    pct_start: float
    anneal_strategy: str
    div_factor: float
    final_div_factor: float
    three_phase: bool
    base_momentum: float
    max_momentum: float
    cycle_momentum: bool
    phases: tuple[tuple[float, str, str, str, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        total = self.steps
        if self.three_phase:
            phases = ((float(self.pct_start * total) - 1, "initial", "max", "max_m", "base_m"),
                      (float(2 * self.pct_start * total) - 2, "max", "initial", "base_m", "max_m"),
                      (total - 1, "initial", "min", "max_m", "max_m"))
        else:
            phases = ((float(self.pct_start * total) - 1, "initial", "max", "max_m", "base_m"),
                      (total - 1, "max", "min", "base_m", "max_m"))
        object.__setattr__(self, "phases", phases)

    def _anchor(self, key: str) -> float:
        initial = self.max_lr / self.div_factor
        return {"initial": initial, "max": self.max_lr, "min": initial / self.final_div_factor,
                "max_m": self.max_momentum, "base_m": self.base_momentum}[key]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _interpolate(self, it: int, which: int) -> float:
        """`which` = 1: LR anchors of the phase, 3: momentum anchors."""
        start_step = 0.0
        for i, phase in enumerate(self.phases):  # the last phase takes every later step
            if it <= phase[0] or i == len(self.phases) - 1:
                break
            start_step = phase[0]
        pct = (it - start_step) / (phase[0] - start_step)
        return self._anneal(self._anchor(phase[which]), self._anchor(phase[which + 1]), pct)

    def _lr(self, it: int) -> float:
        return self._interpolate(it, 1)

    def _momentum(self, it: int) -> float | None:
        return self._interpolate(it, 3) if self.cycle_momentum else None
