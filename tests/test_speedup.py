"""The one definition of the target accuracy and the speed-up (onecycle.report.speedup), on hand-made runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from onecycle.experiments.workflow import Claim, ExperimentConfig
from onecycle.report import claims, speedup


def history(accuracies, iterations_per_epoch=100):
    epochs = np.arange(1, len(accuracies) + 1)
    return pd.DataFrame({"epoch": epochs, "iteration": epochs * iterations_per_epoch,
                         "test_accuracy": accuracies, "wall_time_s": epochs * iterations_per_epoch / 10})


def runs(rows):
    """(group, seed, status, final accuracy %, iterations) -> a runs table as collect_runs gives it."""
    return pd.DataFrame(rows, columns=["group", "seed", "status", "final_accuracy", "iterations"])


BASELINE = [("step", 0, "completed", 90.0, 1000), ("step", 1, "completed", 91.0, 1000)]


def test_paired_seeds_each_meet_their_own_baseline_seed_less_the_margin():
    # Seed 0's target 90.0 - 0.2 = 89.8, first reached at 300; seed 1's 91.0 - 0.2 = 90.8 at 500.
    table = runs([*BASELINE, ("1cycle", 0, "completed", 91.0, 400), ("1cycle", 1, "completed", 92.0, 500)])
    curves = {"1cycle": [(0, history([0.6, 0.8, 0.899, 0.91])), (1, history([0.6, 0.7, 0.8, 0.85, 0.92]))]}
    seeds, how = speedup.seed_speedups(table, curves, "1cycle", "step", 0.2)
    assert [s.target for s in seeds] == pytest.approx([89.8, 90.8])
    assert [s.iterations for s in seeds] == [300.0, 500.0] and [s.epochs for s in seeds] == [3.0, 5.0]
    assert [s.speedup for s in seeds] == pytest.approx([1000 / 300, 2.0])
    assert how == "target = the same seed's step final accuracy - 0.2 pp"
    # The claims' estimate: the geometric mean, sqrt(3.333 * 2) = 2.582.
    assert speedup.geometric_mean(seeds) == pytest.approx(math.sqrt(1000 / 300 * 2))


def test_unpaired_seeds_share_the_mean_target_and_a_seed_that_never_reaches_it_is_censored():
    table = runs([*BASELINE, ("1cycle", 5, "completed", 91.0, 300), ("1cycle", 6, "completed", 80.0, 300)])
    curves = {"1cycle": [(5, history([0.6, 0.8, 0.91])), (6, history([0.6, 0.7, 0.8]))]}
    seeds, how = speedup.seed_speedups(table, curves, "1cycle", "step", 0.0)
    assert [s.target for s in seeds] == [90.5, 90.5] and "seeds differ" in how
    assert seeds[0].reached and seeds[0].speedup == pytest.approx(1000 / 300)
    # Never reached in its 300 iterations: its speed-up is below 1000 / 300, and says so.
    assert not seeds[1].reached and seeds[1].speedup == pytest.approx(1000 / 300)


def test_only_completed_runs_count():
    table = runs([*BASELINE, ("step", 2, "diverged", math.nan, 400), ("1cycle", 0, "completed", 91.0, 400),
                  ("1cycle", 1, "diverged", math.nan, 100)])
    curves = {"1cycle": [(0, history([0.6, 0.8, 0.91])), (1, history([0.95]))]}
    seeds, how = speedup.seed_speedups(table, curves, "1cycle", "step", 0.0)
    assert [s.seed for s in seeds] == [0]
    assert speedup.seed_speedups(runs(BASELINE), {}, "1cycle", "step", 0.0) == ([], "no completed 1cycle run yet")


def test_the_table_and_the_claim_read_the_same_speed_ups():
    # The smoke's case: every seed reaches its target at the same evaluation, 2.67x.
    table = runs([("inv", s, "completed", 85.0 + s / 10, 624) for s in range(3)]
                 + [("one", s, "completed", 86.6, 312) for s in range(3)])
    curves = {"one": [(s, history([0.76, 0.81, 0.857, 0.864], iterations_per_epoch=78)) for s in range(3)]}
    tta = speedup.time_to_accuracy_table(table, curves, "inv", "one", margin_pp=0.2)
    assert tta["seed"].tolist() == [0, 1, 2, "all"]
    assert tta["speedup"].tolist() == pytest.approx([624 / 234] * 4)
    claim = Claim(id="s", text="t", source="s", kind="speedup", candidate="one", baseline="inv", k=2, margin_pp=0.2)
    row = claims.evaluate(claim, table, curves, (0, 1, 2))
    assert row["per_seed"] == "seed 0: 2.67x; seed 1: 2.67x; seed 2: 2.67x"
    assert row["estimate"] == pytest.approx(tta["speedup"].iloc[-1])


def test_the_table_takes_the_margin_of_the_speedup_claim_on_its_pair():
    c = {"id": "s", "text": "t", "source": "s", "kind": "speedup", "candidate": "one", "baseline": "base",
         "k": 2, "margin_pp": 0.3}
    exp = ExperimentConfig(base={}, groups={"one": {}, "base": {}, "other": {}}, candidate="one", baseline="base",
                           claims=[c])
    assert speedup.table_margin_pp(exp) == 0.3
    exp = ExperimentConfig(base={}, groups={"one": {}, "base": {}, "other": {}}, candidate="one", baseline="other",
                           claims=[c])
    assert speedup.table_margin_pp(exp) == 0.0
