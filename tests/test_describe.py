"""Group labels say what a group ran, with the LR bounds it used; traces are the configured schedule."""

import pytest

from onecycle.report.describe import schedule_label, schedule_trace
from onecycle.schedules import make_schedule


def run_config(policy, params, *, lr_bounds=None, momentum=0.9, steps=100):
    return {"schedule": {"policy": policy, **({"lr_bounds": lr_bounds} if lr_bounds else {})},
            "schedule_resolved": {"policy": policy, "steps": steps, "params": params},
            "optim": {"momentum": momentum}}


@pytest.mark.parametrize(("config", "label"), [
    # The smoke run's 1cycle: bounds from the range test's median max_lr, base = max / 10.
    (run_config("smith_1cycle", {"variant": "caffe", "stepsize": 45, "base_lr": 0.011346153846153846,
                                 "max_lr": 0.11346153846153845, "momentum": 0.95, "min_momentum": 0.8},
                lr_bounds="range_test"), "1cycle 0.0113-0.113 (range test), CM 0.95-0.8"),
    # Caffe's inv at the optimizer's constant momentum.
    (run_config("inv", {"base_lr": 0.01, "gamma": 1e-4, "power": 0.75}), "inv 0.01, momentum 0.9"),
    # A peak-only policy, and a schedule that sets its own constant momentum.
    (run_config("torch_1cycle", {"max_lr": 0.8}, momentum=None), "torch 1cycle max 0.8"),
    (run_config("fixed", {"base_lr": 0.1, "momentum": 0.95}), "fixed 0.1, momentum 0.95"),
])
def test_schedule_label(config, label):
    assert schedule_label(config) == label


def test_schedule_trace_is_the_configured_schedule_over_the_planned_run():
    params = {"variant": "caffe", "stepsize": 40, "base_lr": 0.01, "max_lr": 0.1, "momentum": 0.95,
              "min_momentum": 0.8}
    trace = schedule_trace(run_config("smith_1cycle", params))
    schedule = make_schedule("smith_1cycle", 100, **params)
    assert list(trace["iteration"]) == list(range(100))
    assert list(trace["lr"]) == [schedule.lr(it) for it in range(100)]
    assert list(trace["momentum"]) == [schedule.momentum(it) for it in range(100)]
    # inv sets no momentum: the optimizer's constant 0.9 is what the run trained with.
    inv = schedule_trace(run_config("inv", {"base_lr": 0.01, "gamma": 1e-4, "power": 0.75}))
    assert set(inv["momentum"]) == {0.9}
