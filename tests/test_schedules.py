"""Schedules pinned against independent references: torch's own schedulers where one exists,
values computed by hand (written literally below) at every phase boundary otherwise."""

from __future__ import annotations

import argparse
import io
import math
import re
import warnings

import pytest
import torch

from onecycle.cli import schedule as cli_schedule
from onecycle.schedules import (POLICIES, REQUIRED, OneCycleScheduler, apply_schedule, make_schedule,
                                schedule_frame)

ALL_POLICIES = ["smith_1cycle", "fastai_1cycle", "torch_1cycle", "triangular", "triangular2", "exp_range",
                "fixed", "step", "multistep", "inv", "exp", "poly", "cosine"]


def close(actual: float, expected: float, rel: float = 1e-12) -> bool:
    """Relative closeness with no absolute slack (pytest.approx's default abs=1e-12 would
    accept any two values below 1e-12, and hide errors in tails like 8e-5)."""
    return math.isclose(actual, expected, rel_tol=rel, abs_tol=0.0)


def assert_values(schedule, expected_lr: dict[int, float], expected_momentum: dict[int, float | None] = None):
    for it, lr in expected_lr.items():
        assert close(schedule.lr(it), lr), (it, schedule.lr(it), lr)
    for it, momentum in (expected_momentum or {}).items():
        got = schedule.momentum(it)
        assert (got is None and momentum is None) or close(got, momentum), (it, got, momentum)


def torch_reference(steps: int, make_scheduler, lr: float = 0.123):
    """(lr, momentum) that a torch scheduler gives an SGD optimizer at each iteration 0..steps-1.
    `lr` is the optimizer's initial LR, which StepLR & co. take as their base LR."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.5)
    scheduler = make_scheduler(opt)
    values = []
    for it in range(steps):
        group = opt.param_groups[0]
        values.append((group["lr"], group.get("momentum")))
        if it < steps - 1:
            opt.step()
            scheduler.step()
    return values


# ---------------------------------------------------------------------------------------------
# Smith's 1cycle (docs/paper_reference.md D3, D4): base .08, max .8 as in the hyperParam1 ResNet-56 logs.

S, STEPS = 10, 25  # cycle over [0, 20], tail 21..24


def test_smith_caffe_lr_at_every_boundary():
    schedule = make_schedule("smith_1cycle", STEPS, variant="caffe", base_lr=0.08, max_lr=0.8, stepsize=S)
    assert_values(schedule, {
        0: 0.08,
        9: 0.728,   # .08 + .72 * 9/10
        10: 0.8,
        11: 0.72,   # .8 * 9/10: down towards 0, not towards base
        19: 0.08,   # .8 * 1/10
        20: 0.0,    # 2s: zero
        21: 8e-5,   # tail base/1000, as printed in the authors' logs (D3)
        24: 8e-5,
    })


def test_smith_paper_lr_at_every_boundary():
    schedule = make_schedule("smith_1cycle", STEPS, base_lr=0.08, max_lr=0.8, stepsize=S)
    assert schedule.lr(24) == 0.0008  # default final_lr = base_lr/100 (Part 1 Fig 8a), exactly
    assert_values(schedule, {
        0: 0.08,
        9: 0.728,
        10: 0.8,
        11: 0.728,   # .8 - .72 * 1/10: back towards base
        19: 0.152,   # .8 - .72 * 9/10
        20: 0.08,
        21: 0.0602,  # .08 + (.0008 - .08) * 1/4
        24: 0.0008,
    })


def test_smith_paper_final_lr_and_tail_edge_cases():
    schedule = make_schedule("smith_1cycle", 9, base_lr=0.1, max_lr=1.0, stepsize=3, final_lr=0.01)
    assert_values(schedule, {6: 0.1, 7: 0.055, 8: 0.01})
    # 2s == steps-1: the one-iteration tail is the last iteration, which ends at final_lr.
    edge = make_schedule("smith_1cycle", 7, base_lr=0.1, max_lr=1.0, stepsize=3, final_lr=0.01)
    assert_values(edge, {3: 1.0, 5: 0.4, 6: 0.01})
    # 2s == steps: no tail; fine for Caffe (its cycle just ends), rejected for the paper variant.
    caffe = make_schedule("smith_1cycle", 6, variant="caffe", base_lr=0.1, max_lr=1.0, stepsize=3)
    assert close(caffe.lr(5), 1.0 / 3)
    with pytest.raises(ValueError, match=r"stepsize = 3: variant 'paper' needs a tail"):
        make_schedule("smith_1cycle", 6, base_lr=0.1, max_lr=1.0, stepsize=3)


def test_smith_cyclical_momentum_with_and_without_caffe_second_cycle():
    common = dict(base_lr=0.08, max_lr=0.8, stepsize=S, momentum=0.95, min_momentum=0.85)
    paper = make_schedule("smith_1cycle", 35, **common)
    caffe = make_schedule("smith_1cycle", 35, variant="caffe", momentum_second_cycle=True, **common)
    first_cycle = {0: 0.95, 9: 0.86, 10: 0.85, 11: 0.86, 19: 0.94, 20: 0.95}
    assert_values(paper, {}, {**first_cycle, 21: 0.95, 30: 0.95, 34: 0.95})
    # D4: a second, half-amplitude cycle: (1 - |x|)/2 with x = (t - 30)/10.
    assert_values(caffe, {}, {**first_cycle, 21: 0.945, 24: 0.93, 30: 0.90, 34: 0.92})


def test_smith_momentum_stepsize_and_constant_momentum():
    short = make_schedule("smith_1cycle", 25, base_lr=0.1, max_lr=1.0, stepsize=10,
                          momentum=0.9, min_momentum=0.8, momentum_stepsize=4)
    assert_values(short, {}, {2: 0.85, 4: 0.8, 8: 0.9, 12: 0.9})
    constant = make_schedule("smith_1cycle", 25, base_lr=0.1, max_lr=1.0, stepsize=10, momentum=0.9)
    assert [constant.momentum(it) for it in (0, 10, 24)] == [0.9, 0.9, 0.9]
    bare = make_schedule("smith_1cycle", 25, base_lr=0.1, max_lr=1.0, stepsize=10)
    assert bare.momentum(10) is None
    # Part 1 Table 1 runs increasing momentum 0.90 -> 1.00 (docs/paper_reference.md A1).
    rising = make_schedule("smith_1cycle", 25, base_lr=0.1, max_lr=1.0, stepsize=10, momentum=0.9, min_momentum=1.0)
    assert close(rising.momentum(10), 1.0)


# ---------------------------------------------------------------------------------------------
# fastai fit_one_cycle


def test_fastai_hand_values():
    # lr_max 1, div 25 -> starts at .04; div_final 1e5 -> ends near 1e-5; pct .25 of 200 steps.
    schedule = make_schedule("fastai_1cycle", 200, lr_max=1.0)
    assert_values(schedule, {
        0: 0.04,
        25: 0.52,       # half way up the first cosine: (.04 + 1)/2
        50: 1.0,        # pos = pct_start
        125: 0.500005,  # half way down: (1 + 1e-5)/2
    }, {0: 0.95, 25: 0.9, 50: 0.85, 125: 0.9})


def fastai_transcription(lr_max, div, div_final, pct_start, moms, n_epoch, n_iter):
    """fastai's own loop, transcribed from fastai/callback/schedule.py (sched_cos,
    combine_scheds) and TrainEvalCallback (pct_train = epoch/n_epoch at each epoch start,
    += 1/(n_iter*n_epoch) after each batch). One deviation: combine_scheds keeps its phase
    limits in a float32 tensor; this keeps them in float64 so the comparison can be tight."""
    def sched_cos(start, end, pos):
        return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2

    def combined_cos(pct, start, middle, end):
        pcts = [0.0, pct, pct + (1 - pct)]
        scheds = [(start, middle), (middle, end)]

        def inner(pos):
            idx = min(max(i for i, p in enumerate(pcts) if pos >= p), len(pcts) - 2)
            actual = (pos - pcts[idx]) / (pcts[idx + 1] - pcts[idx])
            return sched_cos(*scheds[idx], actual)
        return inner

    lr = combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final)
    mom = combined_cos(pct_start, *moms)
    values = []
    for epoch in range(n_epoch):
        pct_train = epoch / n_epoch
        for _ in range(n_iter):
            values.append((lr(pct_train), mom(pct_train)))
            pct_train += 1.0 / (n_iter * n_epoch)
    return values


@pytest.mark.parametrize("pct_start, div, div_final, n_epoch, n_iter",
                         [(0.25, 25.0, 1e5, 4, 50), (0.3, 10.0, 1e4, 3, 17)])
def test_fastai_equals_fastai_loop(pct_start, div, div_final, n_epoch, n_iter):
    moms = (0.95, 0.8, 0.9)
    schedule = make_schedule("fastai_1cycle", n_epoch * n_iter, lr_max=0.4, div=div, div_final=div_final,
                             pct_start=pct_start, moms=list(moms))
    reference = fastai_transcription(0.4, div, div_final, pct_start, moms, n_epoch, n_iter)
    # fastai's accumulated pct_train differs from it/steps by a few ulp, which the steep end
    # of the last cosine amplifies ~100x; 1e-9 is still far below any formula error.
    for it, (lr, momentum) in enumerate(reference):
        assert close(schedule.lr(it), lr, rel=1e-9), it
        assert close(schedule.momentum(it), momentum, rel=1e-9), it


# ---------------------------------------------------------------------------------------------
# Parity with torch's schedulers, at every step


@pytest.mark.parametrize("steps", [7, 33, 100])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal_strategy", ["cos", "linear"])
def test_torch_1cycle_equals_onecyclelr(steps, three_phase, anneal_strategy):
    kwargs = dict(max_lr=0.8, anneal_strategy=anneal_strategy, three_phase=three_phase)
    schedule = make_schedule("torch_1cycle", steps, **kwargs)
    reference = torch_reference(steps, lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, total_steps=steps, **kwargs))
    for it, (lr, momentum) in enumerate(reference):
        assert close(schedule.lr(it), lr) and close(schedule.momentum(it), momentum), it


def test_torch_1cycle_non_default_arguments():
    kwargs = dict(max_lr=2.0, pct_start=0.45, div_factor=10.0, final_div_factor=100.0,
                  base_momentum=0.8, max_momentum=0.9)
    schedule = make_schedule("torch_1cycle", 40, **kwargs)
    reference = torch_reference(40, lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, total_steps=40, **kwargs))
    for it, (lr, momentum) in enumerate(reference):
        assert close(schedule.lr(it), lr) and close(schedule.momentum(it), momentum), it
    assert make_schedule("torch_1cycle", 40, max_lr=1.0, cycle_momentum=False).momentum(3) is None


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("stepsize, steps", [(1, 9), (3, 20), (5, 37), (7, 50)])
def test_clr_equals_cycliclr(mode, stepsize, steps):
    extra = {"gamma": 0.97} if mode == "exp_range" else {}
    schedule = make_schedule(mode, steps, base_lr=0.01, max_lr=0.3, stepsize=stepsize, **extra)
    reference = torch_reference(steps, lambda opt: torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=0.01, max_lr=0.3, step_size_up=stepsize, mode=mode, cycle_momentum=False, **extra))
    for it, (lr, _) in enumerate(reference):
        assert close(schedule.lr(it), lr), it


def test_clr_hand_values():
    # D1 with base .1, max 1, stepsize 4: peaks at 4, 12; troughs at 0, 8, 16.
    triangular = make_schedule("triangular", 17, base_lr=0.1, max_lr=1.0, stepsize=4)
    assert_values(triangular, {0: 0.1, 3: 0.775, 4: 1.0, 5: 0.775, 7: 0.325, 8: 0.1, 9: 0.325, 12: 1.0, 16: 0.1},
                  {0: None})
    triangular2 = make_schedule("triangular2", 17, base_lr=0.1, max_lr=1.0, stepsize=4, momentum=0.9)
    assert_values(triangular2, {4: 1.0, 12: 0.55}, {0: 0.9, 12: 0.9})
    exp_range = make_schedule("exp_range", 17, base_lr=0.1, max_lr=1.0, stepsize=4, gamma=0.9)
    assert_values(exp_range, {4: 0.69049})  # .1 + .9 * .9**4
    # decay=bounds, the CLR paper's text: both bounds x gamma**it. Peak 1 * .9**4; trough at 8
    # .1 * .9**8; half way up at 2: (.1 + .9/2) * .9**2.
    bounds = make_schedule("exp_range", 17, base_lr=0.1, max_lr=1.0, stepsize=4, gamma=0.9, decay="bounds")
    assert_values(bounds, {0: 0.1, 2: 0.4455, 4: 0.6561, 8: 0.043046721})


@pytest.mark.parametrize("steps", [5, 50, 300])
def test_caffe_and_cosine_equal_torch_schedulers(steps):
    lr_sched = torch.optim.lr_scheduler
    cases = [
        (make_schedule("step", steps, base_lr=0.1, gamma=0.3, stepsize=3),
         lambda opt: lr_sched.StepLR(opt, step_size=3, gamma=0.3)),
        (make_schedule("multistep", steps, base_lr=0.1, gamma=0.5, stepvalue=[2, 4, 40, 41]),
         lambda opt: lr_sched.MultiStepLR(opt, milestones=[2, 4, 40, 41], gamma=0.5)),
        (make_schedule("exp", steps, base_lr=0.1, gamma=0.97),
         lambda opt: lr_sched.ExponentialLR(opt, gamma=0.97)),
        (make_schedule("poly", steps, base_lr=0.1, power=0.9),
         lambda opt: lr_sched.PolynomialLR(opt, total_iters=steps, power=0.9)),
        (make_schedule("cosine", steps, base_lr=0.1, eta_min=0.001),
         lambda opt: lr_sched.CosineAnnealingLR(opt, T_max=steps, eta_min=0.001)),
    ]
    for schedule, make_scheduler in cases:
        # torch's schedulers update the LR recursively (lr *= factor), the closed form here
        # does not: they agree to float rounding accumulated over at most 300 steps.
        for it, (lr, _) in enumerate(torch_reference(steps, make_scheduler, lr=0.1)):
            assert close(schedule.lr(it), lr), (schedule.name, it)


def test_caffe_policies_hand_values():
    assert_values(make_schedule("fixed", 5, base_lr=0.01), {0: 0.01, 4: 0.01})
    assert_values(make_schedule("step", 7, base_lr=0.1, gamma=0.5, stepsize=3),
                  {0: 0.1, 2: 0.1, 3: 0.05, 5: 0.05, 6: 0.025})
    # Caffe drops at iter >= stepvalue: it 2 already uses the first drop.
    assert_values(make_schedule("multistep", 7, base_lr=0.1, gamma=0.1, stepvalue=[2, 5]),
                  {1: 0.1, 2: 0.01, 4: 0.01, 5: 0.001, 6: 0.001})
    # Caffe's LeNet solver (docs/paper_reference.md A2): 0.01 * (1 + 1e-4 * 10000)**-0.75 = 0.01 / 2**0.75
    assert_values(make_schedule("inv", 10001, base_lr=0.01, gamma=1e-4, power=0.75),
                  {0: 0.01, 10000: 0.005946035575013605})
    assert_values(make_schedule("exp", 4, base_lr=0.1, gamma=0.5), {0: 0.1, 3: 0.0125})
    assert_values(make_schedule("poly", 10, base_lr=0.1, power=2.0), {0: 0.1, 5: 0.025, 9: 0.001})
    assert_values(make_schedule("poly", 10, base_lr=0.1, power=2.0, max_iter=20), {5: 0.05625})
    assert_values(make_schedule("cosine", 4, base_lr=0.1), {0: 0.1, 1: 0.08535533905932738, 2: 0.05})


# ---------------------------------------------------------------------------------------------
# Bad input: one clear ValueError naming the key and the value


def test_unknown_policy_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown schedule policy 'one_cycle'.*valid: smith_1cycle, "):
        make_schedule("one_cycle", 10, max_lr=1.0)


def test_unknown_parameter_suggests_close_match():
    with pytest.raises(ValueError, match=r"smith_1cycle: unknown parameter 'maxlr' \(did you mean 'max_lr'\?\)"):
        make_schedule("smith_1cycle", 10, base_lr=0.1, maxlr=1.0, stepsize=3)


def test_missing_required_parameter():
    with pytest.raises(ValueError, match=r"triangular: missing required parameter 'stepsize'"):
        make_schedule("triangular", 10, base_lr=0.1, max_lr=1.0)


SMITH = dict(base_lr=0.1, max_lr=1.0, stepsize=3)


@pytest.mark.parametrize("policy, params, message", [
    ("smith_1cycle", {**SMITH, "base_lr": -0.1}, r"base_lr must be >= 0, got -0.1"),
    ("smith_1cycle", {**SMITH, "max_lr": 0.05}, r"max_lr must be >= base_lr \(0.1\), got 0.05"),
    ("smith_1cycle", {**SMITH, "stepsize": 0}, r"stepsize must be an integer >= 1, got 0"),
    ("smith_1cycle", {**SMITH, "stepsize": 2.5}, r"stepsize must be an integer, got 2.5"),
    ("smith_1cycle", {**SMITH, "stepsize": 6}, r"stepsize = 6 is too long: .*2\*stepsize = 12.* 10 steps"),
    ("smith_1cycle", {**SMITH, "variant": "keras"}, r"variant must be one of 'caffe', 'paper', got 'keras'"),
    ("smith_1cycle", {**SMITH, "momentum": 1.2}, r"momentum must be < 1, got 1.2"),
    ("smith_1cycle", {**SMITH, "momentum": 0.95, "min_momentum": 1.1}, r"min_momentum must be <= 1, got 1.1"),
    ("smith_1cycle", {**SMITH, "min_momentum": 0.85}, r"min_momentum needs momentum"),
    ("smith_1cycle", {**SMITH, "momentum": 0.9, "momentum_stepsize": 4}, r"momentum_stepsize has no effect"),
    ("smith_1cycle", {**SMITH, "variant": "caffe", "final_lr": 0.001}, r"final_lr applies only to variant 'paper'"),
    ("smith_1cycle", {**SMITH, "final_lr": 0.5}, r"final_lr must be <= base_lr"),
    ("smith_1cycle", {**SMITH, "base_lr": "1e-4"}, r"base_lr must be a number, got the string '1e-4'"),
    ("fastai_1cycle", {"lr_max": 1.0, "pct_start": 1.0}, r"pct_start must be < 1, got 1.0"),
    ("fastai_1cycle", {"lr_max": 1.0, "moms": [0.95, 0.85]}, r"moms must be a list of 3 momenta"),
    ("torch_1cycle", {"max_lr": 1.0, "pct_start": 0.0}, r"pct_start must be > 0, got 0.0"),
    ("torch_1cycle", {"max_lr": 1.0, "pct_start": 0.1}, r"pct_start = 0.1 with steps = 10 .* zero length"),
    ("torch_1cycle", {"max_lr": 1.0, "anneal_strategy": "cosine"}, r"anneal_strategy must be one of 'cos', 'linear'"),
    ("torch_1cycle", {"max_lr": 1.0, "three_phase": "yes"}, r"three_phase must be true or false, got 'yes'"),
    ("exp_range", {**SMITH, "gamma": 1.5}, r"gamma must be <= 1, got 1.5"),
    ("exp_range", {**SMITH, "gamma": 0.9, "decay": "both"}, r"decay must be one of 'amplitude', 'bounds', got 'both'"),
    ("step", {"base_lr": 0.1, "gamma": -0.1, "stepsize": 2}, r"gamma must be >= 0, got -0.1"),
    ("multistep", {"base_lr": 0.1, "gamma": 0.1, "stepvalue": [5, 3]}, r"stepvalue must be strictly increasing, got \[5, 3\]"),
    ("multistep", {"base_lr": 0.1, "gamma": 0.1, "stepvalue": 5}, r"stepvalue must be a non-empty list"),
    ("poly", {"base_lr": 0.1, "power": 1.0, "max_iter": 5}, r"max_iter must be >= steps = 10"),
    ("cosine", {"base_lr": 0.1, "eta_min": 0.2}, r"eta_min must be <= base_lr"),
    ("fixed", {"base_lr": float("nan")}, r"base_lr must be a finite number, got nan"),
    ("fixed", {"base_lr": 0.1, "momentum": -0.5}, r"momentum must be >= 0, got -0.5"),
])
def test_out_of_range_values_name_the_parameter(policy, params, message):
    with pytest.raises(ValueError, match=f"^{policy}: .*{message}") as error:
        make_schedule(policy, 10, **params)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("it", [25, 26, -1])
def test_iteration_outside_schedule_raises(it):
    schedule = make_schedule("smith_1cycle", 25, **SMITH)
    with pytest.raises(ValueError, match=rf"iteration {it} is (past the schedule's 25 steps|before the schedule's start)"):
        schedule.lr(it)
    with pytest.raises(ValueError, match=rf"iteration {it} "):
        schedule.momentum(it)


def test_steps_must_be_positive_integer():
    with pytest.raises(ValueError, match=r"fixed: steps must be an integer >= 1, got 0"):
        make_schedule("fixed", 0, base_lr=0.1)


def test_registry_lists_every_policy_with_required_markers():
    assert list(POLICIES) == ALL_POLICIES
    assert POLICIES["smith_1cycle"].params["base_lr"] is REQUIRED
    assert POLICIES["torch_1cycle"].params["pct_start"] == 0.3
    assert all(info.description and info.source for info in POLICIES.values())


def test_schedule_frame_has_one_row_per_step():
    frame = schedule_frame(make_schedule("smith_1cycle", 25, variant="caffe", base_lr=0.08, max_lr=0.8,
                                         stepsize=10, momentum=0.95, min_momentum=0.85))
    assert list(frame.columns) == ["step", "lr", "momentum"] and len(frame) == 25
    assert frame["step"].tolist() == list(range(25))
    assert frame["lr"][20] == 0.0 and close(frame["lr"][24], 8e-5) and close(frame["momentum"][10], 0.85)
    assert schedule_frame(make_schedule("fixed", 3, base_lr=0.1))["momentum"].isna().all()


# ---------------------------------------------------------------------------------------------
# The torch adapter


def sgd(groups: int = 1, lr: float = 0.5) -> torch.optim.SGD:
    params = [[torch.nn.Parameter(torch.ones(2))] for _ in range(groups)]
    return torch.optim.SGD([{"params": p} for p in params], lr=lr, momentum=0.5)


def run_steps(opt, scheduler, count: int) -> list[tuple[float, float]]:
    values = []
    for _ in range(count):
        opt.step()
        scheduler.step()
        values.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
    return values


def smith_with_momentum(steps: int = 25):
    return make_schedule("smith_1cycle", steps, base_lr=0.08, max_lr=0.8, stepsize=10,
                         momentum=0.95, min_momentum=0.85, momentum_second_cycle=True)


def test_adapter_applies_step_zero_then_one_iteration_per_step():
    schedule = smith_with_momentum()
    opt = sgd()
    scheduler = OneCycleScheduler(opt, schedule)
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]) == (schedule.lr(0), schedule.momentum(0))
    values = run_steps(opt, scheduler, 24)
    assert values == [(schedule.lr(it), schedule.momentum(it)) for it in range(1, 25)]
    assert scheduler.get_last_lr() == [schedule.lr(24)]


def test_adapter_resume_from_state_dict_equals_uninterrupted_run():
    schedule = smith_with_momentum()
    opt = sgd()
    uninterrupted = run_steps(opt, OneCycleScheduler(opt, schedule), 24)

    opt = sgd()
    scheduler = OneCycleScheduler(opt, schedule)
    first = run_steps(opt, scheduler, 13)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # plain data only

    fresh_opt = sgd(lr=9.0)
    fresh = OneCycleScheduler(fresh_opt, schedule)
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    fresh.load_state_dict(checkpoint["scheduler"])
    assert first + run_steps(fresh_opt, fresh, 11) == uninterrupted


def test_adapter_past_the_end_raises_clear_error():
    opt = sgd()
    scheduler = OneCycleScheduler(opt, make_schedule("fixed", 3, base_lr=0.1))
    run_steps(opt, scheduler, 3)  # the third is the standard loop's trailing step
    with pytest.raises(ValueError, match=r"tried to step 4 times; the schedule has 3 steps"):
        scheduler.step()
    assert scheduler.last_epoch == 3  # the failed step changed nothing


def test_adapter_group_scales_and_bad_scales():
    schedule = smith_with_momentum()
    opt = sgd(groups=2)
    scheduler = OneCycleScheduler(opt, schedule, group_scales=[1.0, 0.1])
    run_steps(opt, scheduler, 5)
    assert [g["lr"] for g in opt.param_groups] == [schedule.lr(5), schedule.lr(5) * 0.1]
    assert [g["momentum"] for g in opt.param_groups] == [schedule.momentum(5)] * 2
    with pytest.raises(ValueError, match=r"group_scales has 1 entries but the optimizer has 2 param groups"):
        OneCycleScheduler(sgd(groups=2), schedule, group_scales=[1.0])
    with pytest.raises(ValueError, match=r"group_scales\[1\] must be a finite number >= 0, got -1"):
        apply_schedule(sgd(groups=2), schedule, 0, group_scales=[1.0, -1])


def test_group_scales_multiply_each_groups_caffe_lr_mult():
    # onecycle.training.optim's groups carry Caffe's lr_mult; a scale given on top must keep it.
    schedule = smith_with_momentum()
    opt = sgd(groups=2)
    opt.param_groups[1]["lr_mult"] = 2.0
    apply_schedule(opt, schedule, 3)
    assert [g["lr"] for g in opt.param_groups] == [schedule.lr(3), 2.0 * schedule.lr(3)]
    scheduler = OneCycleScheduler(opt, schedule, group_scales=[0.5, 0.5])
    run_steps(opt, scheduler, 4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5 * schedule.lr(4), 1.0 * schedule.lr(4)])


def test_adapter_sets_adam_beta1_and_rejects_optimizers_without_momentum():
    schedule = smith_with_momentum()
    param = torch.nn.Parameter(torch.ones(2))
    adam = torch.optim.Adam([param], lr=0.1, betas=(0.9, 0.999))
    scheduler = OneCycleScheduler(adam, schedule)
    adam.step()
    scheduler.step()
    assert adam.param_groups[0]["betas"] == (schedule.momentum(1), 0.999)
    with pytest.raises(ValueError, match=r"sets momentum, but param group 0 of Adagrad has neither 'momentum' nor 'betas'"):
        OneCycleScheduler(torch.optim.Adagrad([param], lr=0.1), schedule)
    # A policy without momentum leaves the optimizer's own momentum alone.
    opt = sgd()
    OneCycleScheduler(opt, make_schedule("fixed", 3, base_lr=0.1))
    assert opt.param_groups[0]["momentum"] == 0.5


def test_adapter_drives_optimizer_like_onecyclelr():
    steps = 30
    schedule = make_schedule("torch_1cycle", steps, max_lr=0.6, three_phase=True)
    ours = run_steps(opt := sgd(), OneCycleScheduler(opt, schedule), steps - 1)
    reference = run_steps(ref_opt := sgd(), torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=0.6, total_steps=steps, three_phase=True), steps - 1)
    assert all(close(a, b) for pair, ref in zip(ours, reference) for a, b in zip(pair, ref))


def test_apply_schedule_is_stateless():
    schedule = smith_with_momentum()
    opt = sgd()
    for it in (17, 3, 24):
        apply_schedule(opt, schedule, it)
        assert (opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]) == (schedule.lr(it), schedule.momentum(it))


# ---------------------------------------------------------------------------------------------
# CLI: `onecycle schedule`, called in-process through an argparse parser built with register()


def cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="onecycle")
    cli_schedule.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["schedule", *argv])
    code = args.handler(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list_names_every_policy(capsys):
    code, out, err = cli(["--list"], capsys)
    assert code == 0 and err == ""
    listed = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert listed == ALL_POLICIES
    assert "final_lr=base_lr/100" in out and "max_lr=REQUIRED" in out and "torch.optim.lr_scheduler.OneCycleLR" in out


def test_cli_csv_of_caffe_1cycle(capsys):
    code, out, err = cli(["--policy", "smith_1cycle", "--set", "variant=caffe", "--set", "base_lr=0.08",
                          "--set", "max_lr=0.8", "--set", "stepsize=10", "--set", "momentum=0.95",
                          "--set", "min_momentum=0.85", "--steps", "25"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "step,lr,momentum" and len(lines) == 26
    rows = {int(step): (float(lr), float(m)) for step, lr, m in (line.split(",") for line in lines[1:])}
    assert rows[0] == (0.08, 0.95) and rows[10] == (0.8, 0.85) and rows[20] == (0.0, 0.95)
    assert close(rows[24][0], 8e-5)


def test_cli_accepts_typed_exponents_and_lists(capsys):
    # YAML 1.1 reads 1e-4 as a string; users type it that way on the command line.
    code, out, _ = cli(["--policy", "multistep", "--set", "base_lr=1e-4", "--set", "gamma=0.1",
                        "--set", "stepvalue=[2, 4]", "--steps", "5"], capsys)
    assert code == 0
    rows = [line.split(",") for line in out.splitlines()[1:]]
    assert [m for _, _, m in rows] == [""] * 5  # no momentum set: empty column
    assert all(close(float(lr), expected) for (_, lr, _), expected in zip(rows, [1e-4, 1e-4, 1e-5, 1e-5, 1e-6]))


def test_cli_plot_writes_png(tmp_path, capsys):
    target = tmp_path / "plots" / "lr.png"
    code, out, err = cli(["--policy", "torch_1cycle", "--set", "max_lr=0.5", "--steps", "40",
                          "--plot", str(target)], capsys)
    assert code == 0 and err == ""
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in target.parent.iterdir()] == ["lr.png"]  # no temp file left behind
    assert len(out.splitlines()) == 41


@pytest.mark.parametrize("argv, message", [
    (["--policy", "one_cycle", "--steps", "10"], "unknown schedule policy 'one_cycle'"),
    (["--policy", "fixed", "--set", "base_lrr=0.1", "--steps", "10"], "unknown parameter 'base_lrr' (did you mean 'base_lr'?)"),
    (["--policy", "fixed", "--set", "base_lr", "--steps", "10"], "--set expects KEY=VALUE, got 'base_lr'"),
    (["--policy", "fixed", "--set", "base_lr=0.1"], "--policy needs --steps N"),
    (["--policy", "fixed", "--set", "base_lr=0.1", "--steps", "3", "--plot", "x.jpg"], "--plot needs a .png"),
    (["--policy", "fixed", "--set", "base_lr=-1", "--steps", "3"], "fixed: base_lr must be >= 0, got -1.0"),
    ([], "give --policy NAME"),
])
def test_cli_errors_are_one_line_and_exit_2(argv, message, capsys):
    code, out, err = cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("onecycle: error: ") and message in err
    assert err.count("\n") == 1


def test_no_warnings_from_adapter():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = sgd()
        run_steps(opt, OneCycleScheduler(opt, smith_with_momentum()), 3)


# ---------------------------------------------------------------------------------------------
# Issue 14: OneCycleScheduler where OneCycleLR goes (#4), Smith's stepsize as a fraction (#8),
# a policy name where a schedule is expected (#6)


def _standard_loop(opt, scheduler, loader, epochs):
    """The loop of torch's OneCycleLR docs: opt.step(); scheduler.step() for every batch.
    Returns the LR each optimizer step used."""
    used = []
    for _ in range(epochs):
        for _batch in loader:
            used.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
    return used


def test_4_adapter_keeps_onecyclelrs_contract_in_the_standard_loop():
    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=2)  # 5 batches per epoch
    epochs = 3
    steps = epochs * len(loader)
    schedule = make_schedule("torch_1cycle", steps, max_lr=0.6)
    ours_opt, ref_opt = sgd(), sgd()
    ours = OneCycleScheduler(ours_opt, schedule)
    reference = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.6, total_steps=steps)
    # Both accept all `steps` step() calls, the trailing one after the last optimizer step included ...
    used = _standard_loop(ours_opt, ours, loader, epochs)
    assert used == pytest.approx(_standard_loop(ref_opt, reference, loader, epochs), rel=1e-12, abs=0)
    assert ours.last_epoch == reference.last_epoch == steps
    # ... and both refuse one more.
    for scheduler in (reference, ours):
        with pytest.raises(ValueError, match=r"(?i)tried to step 16 times"):
            scheduler.step()
    # After the trailing step OneCycleLR extrapolates its last phase; no optimizer step uses that
    # value, and ours holds the last iteration's.
    assert ours.get_last_lr() == [schedule.lr(steps - 1)]
    assert ours_opt.param_groups[0]["momentum"] == schedule.momentum(steps - 1)


def test_4_a_state_saved_after_the_trailing_step_loads_back():
    schedule = smith_with_momentum()
    opt = sgd()
    scheduler = OneCycleScheduler(opt, schedule)
    run_steps(opt, scheduler, schedule.steps)
    fresh = OneCycleScheduler(sgd(), schedule)
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh.last_epoch == schedule.steps
    with pytest.raises(ValueError, match="past this schedule's 25 steps"):
        fresh.load_state_dict({**scheduler.state_dict(), "last_epoch": 26})


def test_8_smith_1cycle_takes_its_stepsize_as_a_fraction_of_the_run():
    params = {"variant": "paper", "base_lr": 0.1, "max_lr": 1.0, "momentum": 0.95, "min_momentum": 0.85}
    by_fraction = make_schedule("smith_1cycle", 1000, pct_start=0.45, **params)
    by_iterations = make_schedule("smith_1cycle", 1000, stepsize=450, **params)
    assert by_fraction.stepsize == 450
    assert schedule_frame(by_fraction).equals(schedule_frame(by_iterations))
    # round(): 0.3 of 25 steps is 7.5 iterations -> 8 (round half to even).
    assert make_schedule("smith_1cycle", 25, pct_start=0.3, variant="caffe", base_lr=0.1, max_lr=1.0).stepsize == 8


@pytest.mark.parametrize("params, message", [
    ({"pct_start": 0.45, "stepsize": 450}, "smith_1cycle: pct_start and stepsize both set the climb's length"),
    ({}, "smith_1cycle: stepsize is required (in iterations), or give pct_start"),
    ({"pct_start": 0.6}, "smith_1cycle: pct_start must be <= 0.5, got 0.6"),
    ({"pct_start": 0.0001}, "smith_1cycle: pct_start = 0.0001 of 1000 steps is less than one iteration"),
    ({"pct_start": "0.3"}, "smith_1cycle: pct_start must be a number"),
])
def test_8_smith_pct_start_errors_name_the_parameter(params, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_schedule("smith_1cycle", 1000, base_lr=0.1, max_lr=1.0, **params)


def test_6_a_policy_name_or_a_non_optimizer_where_objects_are_expected_is_a_type_error():
    opt = sgd()
    with pytest.raises(TypeError, match=re.escape("schedule must be a Schedule, got str 'smith_1cycle': "
                                                  "build one with make_schedule('smith_1cycle', steps, ...)")):
        OneCycleScheduler(opt, "smith_1cycle")
    with pytest.raises(TypeError, match="schedule must be a Schedule, got str"):
        apply_schedule(opt, "fixed", 0)
    schedule = make_schedule("fixed", 3, base_lr=0.1)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer, got list"):
        OneCycleScheduler([torch.nn.Parameter(torch.ones(2))], schedule)
    with pytest.raises(TypeError, match="policy must be a policy name"):
        make_schedule(schedule, 3)
