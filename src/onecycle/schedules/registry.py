"""The policies by name: one builder per policy (reading and checking its parameters into a
schedule value), `POLICIES` (each policy's parameters, defaults and source), `make_schedule`
and `schedule_frame`.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from onecycle.schedules.base import Schedule
from onecycle.schedules.classic import (CaffeExp, CaffeFixed, CaffeInv, CaffeMultiStep, CaffePoly, CaffeStep,
                                        Cosine, CyclicalLR)
from onecycle.schedules.one_cycle import CaffeCyclicalMomentum, FastaiOneCycle, SmithOneCycle, TorchOneCycle
from onecycle.schedules.params import REQUIRED, DerivedDefault, _Params


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
