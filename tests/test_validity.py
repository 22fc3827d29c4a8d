"""Validity gates (onecycle.report.validity): each gate on hand-made runs, and on the committed results."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from onecycle.experiments.expansion import expand
from onecycle.experiments.loading import load_mapping
from onecycle.experiments.workflow import Claim
from onecycle.report import validity
from onecycle.report.build import experiment_validity
from onecycle.report.speedup import SeedSpeedup


def test_the_chance_line_is_five_binomial_standard_errors_above_chance():
    # 10 classes on 10 000 images: sqrt(0.1 * 0.9 / 10 000) = 0.003 -> 5 SE = 1.5 pp above 10 %.
    assert validity.chance_line(10, 10_000) == pytest.approx(11.5)
    # On the 500 images a range test reads: sqrt(0.09 / 500) = 0.013416 -> 16.708 %.
    assert validity.chance_line(10, 500) == pytest.approx(10 + 5 * 100 * math.sqrt(0.09 / 500))


def _runs(rows):
    return pd.DataFrame(rows, columns=["group", "seed", "status", "final_accuracy"])


def test_every_counted_training_must_end_above_the_chance_line():
    learned = _runs([("a", 0, "completed", 11.6), ("a", 1, "completed", 86.0), ("b", 0, "diverged", math.nan)])
    gate = validity.trainings_learned(learned, 10, 10_000)
    assert gate.passed is True and "2 completed training(s)" in gate.detail
    stuck = _runs([("a", 0, "completed", 11.4), ("b", 0, "completed", 86.0)])
    gate = validity.trainings_learned(stuck, 10, 10_000)
    assert gate.passed is False and gate.reason == "training at chance"
    assert "a/seed0 11.4 %" in gate.detail and gate.remedy
    # Only the groups a verdict reads count (a bounds study's too-high LR may end at chance).
    assert validity.trainings_learned(stuck, 10, 10_000, groups=["b"]).passed is True
    assert validity.trainings_learned(_runs([]), 10, 10_000).passed is None


def _range_test(accuracies, losses):
    return pd.DataFrame({"test_accuracy": accuracies, "test_loss": losses})


@pytest.mark.parametrize(("accuracies", "losses", "left"), [
    # Learning: three evaluations in a row above 16.7 % with the loss below ln 10 = 2.303.
    ([0.10, 0.30, 0.50, 0.60, 0.20], [2.4, 2.0, 1.5, 1.2, 9.0], True),
    # One spike of 41 % at a loss of 5 (the ResNet-20 bounds study's seed 1): not learning.
    ([0.10, 0.09, 0.41, 0.12, 0.33, 0.09], [300.0, 60.0, 5.3, 416.0, 10.6, 102.6], False),
    # Accuracy above chance three times, but confidently wrong (loss 8-12): not learning.
    ([0.10, 0.20, 0.24, 0.18, 0.10], [2.3, 8.2, 11.5, 12.1, 250.0], False),
    # Two good evaluations, then the test stopped: not enough.
    ([0.10, 0.40, 0.50], [2.4, 1.6, 1.4], False),
])
def test_a_range_test_leaves_chance_only_on_a_run_of_evaluations(accuracies, losses, left):
    assert validity.range_test_left_chance(_range_test(accuracies, losses), 10, 500) is left


def test_the_range_test_gate_names_the_seeds_at_chance():
    good = _range_test([0.3, 0.5, 0.6], [2.0, 1.5, 1.2])
    bad = _range_test([0.10, 0.11, 0.10], [5.0, 4.0, 3.0])
    gate = validity.range_tests_left_chance([(0, good), (1, bad)], 10, 2000)
    assert gate.passed is False and gate.reason == "range test never left chance"
    assert "1 of 2 seeds (seed 1 median 10.0 %" in gate.detail and "rerun the range test" in gate.remedy
    assert validity.range_tests_left_chance([(0, good)], 10, 2000).passed is True
    assert validity.range_tests_left_chance([], 10, 2000).passed is None


def _seed(evaluated, budget=1000.0):
    return SeedSpeedup(0, 90.0, budget, evaluated[-1], 1.0, 1.0, evaluated[-1], tuple(evaluated))


def test_time_to_accuracy_needs_four_evaluations_by_b_over_k():
    claim = Claim(id="s", text="t", source="s", kind="speedup", candidate="a", baseline="b", k=2, margin_pp=0.2)
    # B / k = 500: evaluations at 125, 250, 375, 500 are four; every 200 gives two.
    assert validity.time_to_accuracy_resolved({claim: [_seed([125.0, 250.0, 375.0, 500.0])]}).passed is True
    gate = validity.time_to_accuracy_resolved({claim: [_seed([200.0, 400.0, 600.0])]})
    assert gate.passed is False and "s seed 0: 2 evaluation(s) by iteration 500" in gate.detail
    assert validity.time_to_accuracy_resolved({}).passed is None


def test_the_grid_must_bracket_its_best_point():
    assert validity.grid_brackets_best([(0.01, 80.0), (0.1, 90.0), (1.0, 85.0)]).passed is True
    top = validity.grid_brackets_best([(0.01, 80.0), (0.1, 85.0), (1.0, 90.0)])
    assert top.passed is False and top.reason == "grid's best at its highest end" and "beyond 1" in top.remedy
    assert validity.grid_brackets_best([(0.01, 90.0), (0.1, 85.0)]).reason == "grid's best at its lowest end"
    assert validity.grid_brackets_best([(0.01, 80.0), (0.1, math.nan)]).passed is None


def test_the_label_stands_in_for_every_verdict():
    passed = validity.Gate("a", True, "fine")
    failed = validity.Gate("b", False, "numbers", "rerun it", "range test never left chance")
    assert validity.Validity((passed, validity.Gate("c", None, "n/a"))).label is None
    checked = validity.Validity((passed, failed))
    assert checked.label == "invalid: range test never left chance"
    assert checked.frame()["to_make_valid"].tolist() == ["", "rerun it"]
    tiny = validity.Validity((passed, failed), tiny=True)
    assert tiny.label == "tiny: no verdict" and tiny.frame()["gate"].iloc[0] == "scale"


# ----------------------------------------------------------------- the committed results

def committed_plan(config: str):
    """The plan of a committed config, reading its committed results wherever pytest runs."""
    data = load_mapping(REPO / "configs" / f"{config}.yaml")
    data["results_dir"] = str(REPO / data["results_dir"])
    return expand(data, config)


@pytest.fixture(scope="module")
def bounds_plan():
    return committed_plan("bounds_study")


def test_the_resnet20_bounds_study_is_invalid_and_lenets_is_valid(bounds_plan):
    # The committed ResNet-20 range tests sit at chance: median test accuracy 10.2-10.8 %.
    resnet = experiment_validity(bounds_plan, "fmnist_resnet20_bounds")
    assert resnet.label == "invalid: range test never left chance"
    medians = [100 * pd.read_csv(REPO / f"results/bounds_study/range_test/fmnist_resnet20_bounds/seed{s}/history.csv")
               ["test_accuracy"].median() for s in range(3)]
    assert np.all(np.array(medians) < validity.chance_line(10, 500) - 5)
    lenet = experiment_validity(bounds_plan, "fmnist_lenet_bounds")
    assert lenet.label is None and all(g.passed is not False for g in lenet.gates)


def test_every_other_committed_experiment_is_valid():
    for config in ("smoke", "fmnist_mirror", "sc_mirror", "sc_confounds"):
        plan = committed_plan(config)
        for name in plan.workflow.experiments:
            assert experiment_validity(plan, name).label is None, (config, name)
