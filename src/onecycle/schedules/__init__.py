"""Learning-rate and momentum schedules as closed-form functions of the 0-based iteration.

A schedule is a pure value: `lr(it)` and `momentum(it)` depend on `it` alone, so a resumed run
needs only its iteration count (docs/design.md §4). Each policy reproduces a named source:
Smith's 1cycle as his Caffe code executed it and as the papers describe it (docs/paper_reference.md D3,
D4), fastai's and PyTorch's 1cycle, CLR (D1), Caffe's classic policies, and cosine annealing.
tests/test_schedules.py pins each one against torch's own scheduler where one exists and
against hand-computed values at every phase boundary otherwise.

`make_schedule(policy, steps, **params)` builds one, checking every parameter;
`OneCycleScheduler` drops a schedule into anyone's PyTorch loop; `apply_schedule` is the
stateless form our own training loop calls every iteration.
"""

from __future__ import annotations

import difflib
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pandas as pd
import torch


# ---------------------------------------------------------------------------------------------
# The schedule value


@dataclass(frozen=True, kw_only=True)
class Schedule(ABC):
    """One policy over `steps` iterations (0 .. steps-1). Subclasses define `_lr`/`_momentum`."""

    name: str
    steps: int

    def lr(self, it: int) -> float:
        """The learning rate at 0-based iteration `it`."""
        return self._lr(self._checked(it))

    def momentum(self, it: int) -> float | None:
        """The momentum (SGD) or beta1 (Adam) at `it`; None if this policy sets no momentum."""
        return self._momentum(self._checked(it))

    def _checked(self, it: int) -> int:
        if isinstance(it, bool) or not isinstance(it, numbers.Integral):
            raise ValueError(f"{self.name}: iteration must be an integer, got {it!r}")
        if it < 0:
            raise ValueError(f"{self.name}: iteration {it} is before the schedule's start "
                             f"(iterations are 0-based, 0 .. {self.steps - 1})")
        if it >= self.steps:
            raise ValueError(f"{self.name}: iteration {it} is past the schedule's {self.steps} steps "
                             f"(iterations are 0-based, 0 .. {self.steps - 1})")
        return int(it)

    @abstractmethod
    def _lr(self, it: int) -> float: ...

    @abstractmethod
    def _momentum(self, it: int) -> float | None: ...


@dataclass(frozen=True, kw_only=True)
class _ConstantMomentumSchedule(Schedule):
    """Policies that only schedule the LR; their optional `momentum` parameter is held constant."""

    constant_momentum: float | None

    def _momentum(self, it: int) -> float | None:
        return self.constant_momentum


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


# ---------------------------------------------------------------------------------------------
# CLR (docs/paper_reference.md D1), Caffe's policies, cosine


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


# ---------------------------------------------------------------------------------------------
# Parameter checking


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Marks a parameter without default in `PolicyInfo.params`."""


@dataclass(frozen=True)
class DerivedDefault:
    """A default computed from other parameters; `rule` says how (shown by `schedule --list`)."""

    rule: str

    def __repr__(self) -> str:
        return self.rule


def _yaml_hint(text: str) -> str:
    try:
        float(text)
    except ValueError:
        return ""
    return " (YAML 1.1 reads 1e-4 as a string: write 1.0e-4)"


_FROM_PARAMS: Any = object()  # `value` default of the _Params readers: read the named parameter


class _Params:
    """One policy's parameters (defaults filled in), read one by one with a check each; every
    error names the policy, the parameter and the offending value, on one line."""

    def __init__(self, policy: str, values: dict[str, Any]) -> None:
        self.policy = policy
        self.values = values

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ValueError(f"{self.policy}: {name} {problem}")

    def given(self, name: str) -> bool:
        return not isinstance(self.values[name], DerivedDefault)

    def number(self, name: str, *, at_least: float | None = None, above: float | None = None,
               below: float | None = None, at_most: float | None = None, value: Any = _FROM_PARAMS) -> float:
        value = self.values[name] if value is _FROM_PARAMS else value
        if isinstance(value, str):
            self.fail(name, f"must be a number, got the string {value!r}{_yaml_hint(value)}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            self.fail(name, f"must be a finite number, got {value!r}")
        value = float(value)
        if at_least is not None and value < at_least:
            self.fail(name, f"must be >= {at_least:g}, got {value!r}")
        if above is not None and value <= above:
            self.fail(name, f"must be > {above:g}, got {value!r}")
        if below is not None and value >= below:
            self.fail(name, f"must be < {below:g}, got {value!r}")
        if at_most is not None and value > at_most:
            self.fail(name, f"must be <= {at_most:g}, got {value!r}")
        return value

    def lr(self, name: str) -> float:
        return self.number(name, at_least=0.0)

    def momentum(self, name: str, value: Any = _FROM_PARAMS) -> float:
        # SGD momentum / Adam beta1: 1 or more never forgets (or diverges).
        return self.number(name, at_least=0.0, below=1.0, value=value)

    def optional_momentum(self, name: str) -> float | None:
        return None if self.values[name] is None else self.momentum(name)

    def fraction(self, name: str) -> float:
        return self.number(name, above=0.0, below=1.0)

    def count(self, name: str, *, at_least: int = 1, value: Any = _FROM_PARAMS) -> int:
        """An iteration count. An integral float (1000.0, or 1e3 typed on the command line) is
        accepted: Caffe's prototxt and the epoch conversion both produce whole numbers."""
        value = self.values[name] if value is _FROM_PARAMS else value
        if isinstance(value, str):
            self.fail(name, f"must be an integer, got the string {value!r}")
        integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral:
            self.fail(name, f"must be an integer, got {value!r}")
        if value < at_least:
            self.fail(name, f"must be an integer >= {at_least}, got {value!r}")
        return int(value)

    def flag(self, name: str) -> bool:
        value = self.values[name]
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {value!r}")
        return value

    def choice(self, name: str, options: Sequence[str]) -> str:
        value = self.values[name]
        if value not in options:
            self.fail(name, f"must be one of {', '.join(map(repr, options))}, got {value!r}")
        return value

    def at_least_lr(self, name: str, low_name: str, low: float) -> float:
        value = self.lr(name)
        if value < low:
            self.fail(name, f"must be >= {low_name} ({low!r}), got {value!r}")
        return value


# ---------------------------------------------------------------------------------------------
# Builders: one per policy, each reading and checking its parameters


def _smith_stepsize(steps: int, p: _Params) -> int:
    """Smith's stepsize in iterations, or as `pct_start`, the fraction of the run spent
    climbing to max_lr (OneCycleLR's and fastai's name): stepsize = round(pct_start * steps)."""
    if p.values["pct_start"] is None:
        if not p.given("stepsize"):
            p.fail("stepsize", "is required (in iterations), or give pct_start (a fraction of the run)")
        return p.count("stepsize")
    if p.given("stepsize"):
        p.fail("pct_start", "and stepsize both set the climb's length: give one of them")
    # Below 0.5: the cycle (2 * stepsize) must fit in the run.
    pct_start = p.number("pct_start", above=0.0, at_most=0.5)
    stepsize = round(pct_start * steps)
    if stepsize < 1:
        p.fail("pct_start", f"= {pct_start!r} of {steps} steps is less than one iteration")
    return stepsize


def _build_smith_1cycle(steps: int, p: _Params) -> Schedule:
    variant = p.choice("variant", ("caffe", "paper"))
    base_lr = p.lr("base_lr")
    max_lr = p.at_least_lr("max_lr", "base_lr", base_lr)
    stepsize = _smith_stepsize(steps, p)
    if 2 * stepsize > steps:
        p.fail("stepsize", f"= {stepsize} is too long: the cycle (2*stepsize = {2 * stepsize}) "
                           f"must fit in the {steps} steps")
    if variant == "paper":
        if 2 * stepsize == steps:
            p.fail("stepsize", f"= {stepsize}: variant 'paper' needs a tail after the cycle, so "
                               f"2*stepsize must be < steps = {steps} (or use variant 'caffe')")
        # Part 1 Fig 8a: 0.1 -> 1.0 -> ... -> 0.001, i.e. the run ends at base_lr/100
        # (docs/paper_reference.md B1 row 8a, D3).
        final_lr = p.lr("final_lr") if p.given("final_lr") else base_lr / 100
        if final_lr > base_lr:
            p.fail("final_lr", f"must be <= base_lr ({base_lr!r}): the tail anneals below the "
                               f"cycle's start (docs/paper_reference.md D3), got {final_lr!r}")
    else:
        if p.given("final_lr"):
            p.fail("final_lr", "applies only to variant 'paper': Smith's Caffe code ends in a "
                               "constant tail of base_lr/1000 (docs/paper_reference.md D3)")
        final_lr = None
    momentum = p.optional_momentum("momentum")
    cyclical = None
    if p.values["min_momentum"] is None:
        for name, unused in (("momentum_stepsize", p.given("momentum_stepsize")),
                             ("momentum_second_cycle", p.values["momentum_second_cycle"] is not False)):
            if unused:
                p.fail(name, "has no effect without min_momentum (Caffe cyclical_momentum[0])")
    else:
        if momentum is None:
            p.fail("min_momentum", "needs momentum (the maximum momentum, Caffe `momentum`)")
        # The value at the LR peak, Caffe cyclical_momentum[0]. Up to 1.0 inclusive: Part 1
        # Table 1 also runs increasing momentum 0.90 -> 1.00 (docs/paper_reference.md A1).
        min_momentum = p.number("min_momentum", at_least=0.0, at_most=1.0)
        momentum_stepsize = p.count("momentum_stepsize") if p.given("momentum_stepsize") else stepsize
        cyclical = CaffeCyclicalMomentum(momentum=momentum, min_momentum=min_momentum,
                                         stepsize=momentum_stepsize,
                                         second_cycle=p.flag("momentum_second_cycle"))
    return SmithOneCycle(name="smith_1cycle", steps=steps, variant=variant, base_lr=base_lr,
                         max_lr=max_lr, stepsize=stepsize, final_lr=final_lr,
                         constant_momentum=momentum, cyclical_momentum=cyclical)


def _build_fastai_1cycle(steps: int, p: _Params) -> Schedule:
    moms = p.values["moms"]
    if isinstance(moms, str) or not isinstance(moms, Sequence) or len(moms) != 3:
        p.fail("moms", f"must be a list of 3 momenta (start, middle, end), got {moms!r}")
    return FastaiOneCycle(name="fastai_1cycle", steps=steps, lr_max=p.lr("lr_max"),
                          div=p.number("div", above=0.0), div_final=p.number("div_final", above=0.0),
                          pct_start=p.fraction("pct_start"),
                          moms=tuple(p.momentum("moms", value=m) for m in moms))


def _build_torch_1cycle(steps: int, p: _Params) -> Schedule:
    pct_start = p.fraction("pct_start")
    if float(pct_start * steps) - 1 == 0:
        # OneCycleLR's first phase would span zero steps: it divides by zero at step 0.
        p.fail("pct_start", f"= {pct_start!r} with steps = {steps} gives a first phase of zero "
                            "length (pct_start*steps == 1), on which OneCycleLR divides by zero")
    return TorchOneCycle(name="torch_1cycle", steps=steps, max_lr=p.lr("max_lr"), pct_start=pct_start,
                         anneal_strategy=p.choice("anneal_strategy", ("cos", "linear")),
                         div_factor=p.number("div_factor", above=0.0),
                         final_div_factor=p.number("final_div_factor", above=0.0),
                         three_phase=p.flag("three_phase"),
                         base_momentum=p.momentum("base_momentum"),
                         max_momentum=p.momentum("max_momentum"),
                         cycle_momentum=p.flag("cycle_momentum"))


def _clr_builder(mode: str) -> Callable[[int, _Params], Schedule]:
    def build(steps: int, p: _Params) -> Schedule:
        base_lr = p.lr("base_lr")
        # gamma < 1 shrinks the amplitude every iteration; > 1 would grow it without bound.
        gamma = p.number("gamma", above=0.0, at_most=1.0) if mode == "exp_range" else None
        decay = p.choice("decay", ("amplitude", "bounds")) if mode == "exp_range" else "amplitude"
        return CyclicalLR(name=mode, steps=steps, base_lr=base_lr,
                          max_lr=p.at_least_lr("max_lr", "base_lr", base_lr),
                          stepsize=p.count("stepsize"), gamma=gamma, decay=decay,
                          constant_momentum=p.optional_momentum("momentum"))

    return build


def _build_fixed(steps: int, p: _Params) -> Schedule:
    return CaffeFixed(name="fixed", steps=steps, base_lr=p.lr("base_lr"),
                      constant_momentum=p.optional_momentum("momentum"))


def _caffe_gamma(p: _Params) -> float:
    return p.number("gamma", at_least=0.0)  # Caffe: CHECK_GE(gamma, 0)


def _build_step(steps: int, p: _Params) -> Schedule:
    return CaffeStep(name="step", steps=steps, base_lr=p.lr("base_lr"), gamma=_caffe_gamma(p),
                     stepsize=p.count("stepsize"),  # Caffe: CHECK_GT(stepsize, 0)
                     constant_momentum=p.optional_momentum("momentum"))


def _build_multistep(steps: int, p: _Params) -> Schedule:
    raw = p.values["stepvalue"]
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw:
        p.fail("stepvalue", f"must be a non-empty list of iterations, got {raw!r}")
    values = tuple(p.count("stepvalue", value=v) for v in raw)
    if any(later <= earlier for earlier, later in zip(values, values[1:])):
        # Caffe walks the list once, in order: a repeated or decreasing entry is a typo.
        p.fail("stepvalue", f"must be strictly increasing, got {list(values)}")
    return CaffeMultiStep(name="multistep", steps=steps, base_lr=p.lr("base_lr"), gamma=_caffe_gamma(p),
                          stepvalue=values, constant_momentum=p.optional_momentum("momentum"))


def _build_inv(steps: int, p: _Params) -> Schedule:
    return CaffeInv(name="inv", steps=steps, base_lr=p.lr("base_lr"), gamma=_caffe_gamma(p),
                    power=p.number("power", at_least=0.0),
                    constant_momentum=p.optional_momentum("momentum"))


def _build_exp(steps: int, p: _Params) -> Schedule:
    return CaffeExp(name="exp", steps=steps, base_lr=p.lr("base_lr"), gamma=_caffe_gamma(p),
                    constant_momentum=p.optional_momentum("momentum"))


def _build_poly(steps: int, p: _Params) -> Schedule:
    max_iter = p.count("max_iter") if p.given("max_iter") else steps
    if max_iter < steps:
        # Past max_iter Caffe's (1 - iter/max_iter)**power has a negative base (NaN).
        p.fail("max_iter", f"must be >= steps = {steps} (the LR reaches 0 at max_iter), got {max_iter}")
    return CaffePoly(name="poly", steps=steps, base_lr=p.lr("base_lr"),
                     power=p.number("power", at_least=0.0), max_iter=max_iter,
                     constant_momentum=p.optional_momentum("momentum"))


def _build_cosine(steps: int, p: _Params) -> Schedule:
    base_lr = p.lr("base_lr")
    eta_min = p.lr("eta_min")
    if eta_min > base_lr:
        p.fail("eta_min", f"must be <= base_lr ({base_lr!r}), got {eta_min!r}")
    return Cosine(name="cosine", steps=steps, base_lr=base_lr, eta_min=eta_min,
                  constant_momentum=p.optional_momentum("momentum"))


# ---------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    description: str  # one line, citing the source
    params: dict[str, Any]  # name -> default, REQUIRED, or a DerivedDefault
    source: str
    build: Callable[[int, _Params], Schedule] = field(repr=False)


_CAFFE_SOURCE = "Caffe SGDSolver::GetLearningRate (BVLC/caffe src/caffe/solvers/sgd_solver.cpp)"
_CLR_SOURCE = ("CLR, arXiv 1506.01186 §3.1 (docs/paper_reference.md D1); equals "
               "torch.optim.lr_scheduler.CyclicLR(mode=..., step_size_up=stepsize)")


def _policies() -> dict[str, PolicyInfo]:
    clr = {"base_lr": REQUIRED, "max_lr": REQUIRED, "stepsize": REQUIRED}
    infos = [
        PolicyInfo(
            "smith_1cycle",
            "Smith's 1cycle: base_lr -> max_lr -> (caffe: 0, then base_lr/1000 | paper: base_lr, "
            "then final_lr), with Caffe's cyclical momentum (docs/paper_reference.md D3, D4)",
            {"base_lr": REQUIRED, "max_lr": REQUIRED,
             "stepsize": DerivedDefault("round(pct_start*steps)"), "pct_start": None, "variant": "paper",
             "final_lr": DerivedDefault("base_lr/100"), "momentum": None, "min_momentum": None,
             "momentum_stepsize": DerivedDefault("stepsize"), "momentum_second_cycle": False},
            "arXiv 1708.07120 §3, 1803.09820 §4.1 + App. A; Caffe fork and logs in "
            "github.com/lnsmith54/hyperParam1",
            _build_smith_1cycle),
        PolicyInfo(
            "fastai_1cycle",
            "fastai fit_one_cycle: cosine lr_max/div -> lr_max -> lr_max/div_final, momentum "
            "moms[0] -> moms[1] -> moms[2], split at pct_start",
            {"lr_max": REQUIRED, "div": 25.0, "div_final": 1e5, "pct_start": 0.25,
             "moms": (0.95, 0.85, 0.95)},
            "fastai Learner.fit_one_cycle, combined_cos (fastai/callback/schedule.py)",
            _build_fastai_1cycle),
        PolicyInfo(
            "torch_1cycle",
            "PyTorch OneCycleLR with total_steps = steps (two or three phases, cos or linear)",
            {"max_lr": REQUIRED, "pct_start": 0.3, "anneal_strategy": "cos", "div_factor": 25.0,
             "final_div_factor": 1e4, "three_phase": False, "base_momentum": 0.85,
             "max_momentum": 0.95, "cycle_momentum": True},
            "torch.optim.lr_scheduler.OneCycleLR",
            _build_torch_1cycle),
        PolicyInfo("triangular", "CLR triangular: linear base_lr <-> max_lr, half cycle = stepsize",
                   {**clr, "momentum": None}, _CLR_SOURCE, _clr_builder("triangular")),
        PolicyInfo("triangular2", "CLR triangular2: triangular with the amplitude halved every cycle",
                   {**clr, "momentum": None}, _CLR_SOURCE, _clr_builder("triangular2")),
        PolicyInfo("exp_range", "CLR exp_range: triangular scaled by gamma**it, its amplitude (Keras, "
                   "torch) or both bounds (decay=bounds, the CLR paper's text)",
                   {**clr, "gamma": REQUIRED, "decay": "amplitude", "momentum": None}, _CLR_SOURCE,
                   _clr_builder("exp_range")),
        PolicyInfo("fixed", "Caffe fixed: base_lr", {"base_lr": REQUIRED, "momentum": None},
                   _CAFFE_SOURCE, _build_fixed),
        PolicyInfo("step", "Caffe step: base_lr * gamma**floor(it / stepsize)",
                   {"base_lr": REQUIRED, "gamma": REQUIRED, "stepsize": REQUIRED, "momentum": None},
                   _CAFFE_SOURCE, _build_step),
        PolicyInfo("multistep", "Caffe multistep: base_lr * gamma**(number of stepvalue entries <= it)",
                   {"base_lr": REQUIRED, "gamma": REQUIRED, "stepvalue": REQUIRED, "momentum": None},
                   _CAFFE_SOURCE, _build_multistep),
        PolicyInfo("inv", "Caffe inv: base_lr * (1 + gamma*it)**(-power)",
                   {"base_lr": REQUIRED, "gamma": REQUIRED, "power": REQUIRED, "momentum": None},
                   _CAFFE_SOURCE, _build_inv),
        PolicyInfo("exp", "Caffe exp: base_lr * gamma**it",
                   {"base_lr": REQUIRED, "gamma": REQUIRED, "momentum": None}, _CAFFE_SOURCE, _build_exp),
        PolicyInfo("poly", "Caffe poly: base_lr * (1 - it/max_iter)**power",
                   {"base_lr": REQUIRED, "power": REQUIRED, "max_iter": DerivedDefault("steps"),
                    "momentum": None}, _CAFFE_SOURCE, _build_poly),
        PolicyInfo("cosine", "cosine annealing base_lr -> eta_min over steps, no restarts",
                   {"base_lr": REQUIRED, "eta_min": 0.0, "momentum": None},
                   "SGDR, arXiv 1608.03983; equals torch.optim.lr_scheduler.CosineAnnealingLR(T_max=steps)",
                   _build_cosine),
    ]
    return {info.name: info for info in infos}


POLICIES: dict[str, PolicyInfo] = _policies()


def make_schedule(policy: str, steps: int, **params: Any) -> Schedule:
    """Build the named policy over `steps` iterations; every parameter is checked."""
    if not isinstance(policy, str):
        raise TypeError(f"policy must be a policy name ({', '.join(POLICIES)}), "
                        f"got {type(policy).__name__} {policy!r}")
    if policy not in POLICIES:
        close = difflib.get_close_matches(str(policy), POLICIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown schedule policy {policy!r}{hint}; valid: {', '.join(POLICIES)}")
    info = POLICIES[policy]
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"{policy}: steps must be an integer >= 1, got {steps!r}")
    for name in params:
        if name not in info.params:
            close = difflib.get_close_matches(name, info.params, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{policy}: unknown parameter {name!r}{hint}; "
                             f"valid: {', '.join(info.params)}")
    missing = [name for name, default in info.params.items() if default is REQUIRED and name not in params]
    if missing:
        raise ValueError(f"{policy}: missing required parameter {missing[0]!r} "
                         f"(required: {', '.join(n for n, d in info.params.items() if d is REQUIRED)})")
    return info.build(int(steps), _Params(policy, {**info.params, **params}))


def schedule_frame(schedule: Schedule) -> pd.DataFrame:
    """One row per iteration: step, lr, momentum (NaN where the policy sets no momentum)."""
    momenta = [schedule.momentum(it) for it in range(schedule.steps)]
    return pd.DataFrame({
        "step": range(schedule.steps),
        "lr": [schedule.lr(it) for it in range(schedule.steps)],
        "momentum": [math.nan if m is None else m for m in momenta],
    })


# ---------------------------------------------------------------------------------------------
# Applying a schedule to a torch optimizer


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
    accepted, and one more raises ValueError. After that trailing step OneCycleLR extrapolates
    its last phase one iteration further (below its minimum LR; negative with
    anneal_strategy="linear"); no optimizer step uses that value, and here the trailing step
    holds the last iteration's lr and momentum instead.

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
