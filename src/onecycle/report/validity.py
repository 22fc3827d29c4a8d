"""Validity gates: can an experiment's evidence answer its question? Checked before any verdict.

A verdict, a rank or a recommendation is only as good as the runs under it. Each experiment is
checked, and the result recorded (tables/<experiment>_validity.csv), before its tables are
decided; a failed gate puts `invalid: <reason>` where the verdict or rank would be, in every
table, the scorecard and the report page, beside what would make it valid. A run at tiny scale
never gives a verdict (`TINY`): its handful of iterations answers nothing (docs/design.md §10c).

The gates (a gate that does not apply, or whose runs have not finished, neither passes nor fails):

- trainings learned: every completed training a verdict reads ends clearly above chance, i.e.
  final accuracy > chance + CHANCE_Z binomial standard errors of the test set (chance = 100 / C %
  for C classes, SE = sqrt(p (1 - p) / N) at p = 1 / C on N test images: 0.3 pp on a 10k test
  set of 10 classes, so the line is 11.5 %). In a bounds study a training at too high an LR that
  ends at chance is a finding, scored as chance; there the grid's best point must have learned.
- range tests left chance: each range test's test accuracy rose above the same line (N = its
  evaluation subset) while its test loss fell below ln C, the loss of a uniform guess, together
  on RANGE_TEST_RUN consecutive evaluations before it stopped. One spike is not learning: a net
  at chance with a loss in the hundreds can score 41 % once on 500 images.
- time to accuracy resolved: for each speedup claim, every candidate seed was evaluated at least
  MIN_EVALUATIONS_BY_BUDGET times by B / k, so a crossing at B / k is located to within a
  quarter of B / k (a speed-up near k resolved to a factor 4/3).
- grid brackets its best: a bounds study's best grid point (highest mean) is at neither end of
  the grid; at an end the best max LR may lie beyond it, and every regret would be measured
  against the wrong point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from onecycle import io
from onecycle.data import DATASETS
from onecycle.experiments.bounds_study import grid_group
from onecycle.experiments.config import RangeTestSpec
from onecycle.experiments.expansion import Plan
from onecycle.experiments.workflow import Claim
from onecycle.report import speedup
from onecycle.report.evidence import DIVERGED, FRESH, range_test_evidence

# Standard errors above chance that count as "clearly": a binomial tail beyond 5 SE has
# probability 3e-7 (normal approximation), so a run above the line did not get there by guessing.
CHANCE_Z = 5.0
# Consecutive evaluations a range test must hold above chance: three, so that neither one
# spike nor a spike and a half-recovered neighbour passes.
RANGE_TEST_RUN = 3
# Evaluations of the candidate at or before B / k that a speed-up claim needs (module docstring).
MIN_EVALUATIONS_BY_BUDGET = 4

TINY = "tiny: no verdict"
INVALID = "invalid"


@dataclass(frozen=True)
class Gate:
    """One check: `passed` True, False, or None (does not apply, or its runs have not finished);
    `reason` is what a failed one puts in the tables ("invalid: <reason>"), `detail` the numbers."""

    name: str
    passed: bool | None
    detail: str
    remedy: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Validity:
    """An experiment's gates, and at what scale it ran."""

    gates: tuple[Gate, ...]
    tiny: bool = False

    @property
    def failed(self) -> list[Gate]:
        return [g for g in self.gates if g.passed is False]

    @property
    def label(self) -> str | None:
        """What stands in place of every verdict: "tiny: no verdict", "invalid: <reasons>", or
        None when the verdicts stand."""
        if self.tiny:
            return TINY
        if self.failed:
            return f"{INVALID}: " + "; ".join(g.reason for g in self.failed)
        return None

    def frame(self) -> pd.DataFrame:
        rows = [{"gate": g.name, "passed": g.passed, "detail": g.detail, "to_make_valid": g.remedy}
                for g in self.gates]
        if self.tiny:
            rows.insert(0, {"gate": "scale", "passed": False, "detail": "tiny scale: a handful of iterations per job",
                            "to_make_valid": "run the config at full scale (without scale=tiny)"})
        return pd.DataFrame(rows, columns=["gate", "passed", "detail", "to_make_valid"])


def chance_line(num_classes: int, images: int) -> float:
    """Accuracy (%) a net must exceed to have clearly left chance on `images` test images."""
    p = 1.0 / num_classes
    return 100.0 * (p + CHANCE_Z * math.sqrt(p * (1 - p) / images))


def trainings_learned(runs: pd.DataFrame, num_classes: int, test_images: int,
                      groups: Sequence[str] | None = None) -> Gate:
    """Every completed run (of `groups`, all by default) ends above `chance_line`."""
    line = chance_line(num_classes, test_images)
    done = runs[runs["status"] == "completed"]
    if groups is not None:
        done = done[done["group"].isin(list(groups))]
    if done.empty:
        return Gate("trainings learned", None, "no completed training yet")
    low = done[~(done["final_accuracy"] > line)]
    if low.empty:
        return Gate("trainings learned", True,
                    f"{len(done)} completed training(s) above chance + {CHANCE_Z:g} SE ({line:.1f} %)")
    named = ", ".join(f"{g}/seed{s} {a:.1f} %" for g, s, a in zip(low["group"], low["seed"], low["final_accuracy"]))
    return Gate("trainings learned", False, f"training(s) at chance (<= {line:.1f} %): {named}",
                "rerun those runs with settings that learn (a lower LR, longer training), or leave their "
                "groups out of the verdicts", "training at chance")


def range_test_left_chance(history: pd.DataFrame, num_classes: int, eval_images: int) -> bool:
    """Whether the range test's test accuracy and loss left chance together on RANGE_TEST_RUN
    consecutive evaluations (module docstring)."""
    evaluated = history[history["test_accuracy"].notna()]
    above = ((100.0 * evaluated["test_accuracy"] > chance_line(num_classes, eval_images))
             & (evaluated["test_loss"] < math.log(num_classes))).to_numpy()
    run = 0
    for hit in above:
        run = run + 1 if hit else 0
        if run >= RANGE_TEST_RUN:
            return True
    return False


def range_tests_left_chance(tests: Sequence[tuple[int, pd.DataFrame]], num_classes: int,
                            eval_images: int) -> Gate:
    """Every finished range test (seed, history.csv) left chance (`range_test_left_chance`)."""
    if not tests:
        return Gate("range tests left chance", None, "no range test, or none finished yet")
    stuck = [seed for seed, history in tests if not range_test_left_chance(history, num_classes, eval_images)]
    line = chance_line(num_classes, eval_images)
    if not stuck:
        return Gate("range tests left chance", True, f"{len(tests)} range test(s) above {line:.1f} % with test "
                    f"loss below ln {num_classes} on {RANGE_TEST_RUN} consecutive evaluations")
    medians = ", ".join(f"seed {seed} median {100 * h['test_accuracy'].median():.1f} %"
                        for seed, h in tests if seed in stuck)
    return Gate("range tests left chance", False,
                f"range test never left chance in {len(stuck)} of {len(tests)} seeds ({medians}; needs "
                f"{RANGE_TEST_RUN} evaluations in a row above {line:.1f} % with test loss < ln {num_classes})",
                "rerun the range test so that it learns before it stops: a longer test, a lower end LR, or more "
                "evaluation images; its suggestions and everything trained at them wait for that",
                "range test never left chance")


def time_to_accuracy_resolved(speedups: Mapping[Claim, Sequence]) -> Gate:
    """Each speedup claim's candidate seeds (speedup.SeedSpeedup) evaluated at least
    MIN_EVALUATIONS_BY_BUDGET times by B / k."""
    if not speedups:
        return Gate("time to accuracy resolved", None, "no speedup claim")
    coarse = []
    for claim, seeds in speedups.items():
        for seed in seeds:
            by_budget = sum(i <= seed.baseline_iterations / claim.k for i in seed.evaluated)
            if by_budget < MIN_EVALUATIONS_BY_BUDGET:
                coarse.append(f"{claim.id} seed {seed.seed}: {by_budget} evaluation(s) by iteration "
                              f"{seed.baseline_iterations / claim.k:.0f}")
    if not any(speedups.values()):
        return Gate("time to accuracy resolved", None, "no completed candidate run yet")
    if not coarse:
        return Gate("time to accuracy resolved", True, f"at least {MIN_EVALUATIONS_BY_BUDGET} evaluations by B / k "
                    "for every speedup claim's seed")
    return Gate("time to accuracy resolved", False, "too few evaluations for time to accuracy (" + "; ".join(coarse)
                + ")", f"evaluate the candidate at least {MIN_EVALUATIONS_BY_BUDGET} times by B / k "
                "(train.eval_every_epochs) and rerun it", "too few evaluations for time to accuracy")


def grid_brackets_best(grid_means: Sequence[tuple[float, float]]) -> Gate:
    """A bounds study's grid [(max_lr, mean score)] in ascending max_lr, NaN where unfinished:
    whether its best point is at neither end."""
    finished = [(lr, mean) for lr, mean in grid_means if not math.isnan(mean)]
    if len(finished) < len(grid_means) or not finished:
        return Gate("grid brackets its best", None, f"{len(finished)} of {len(grid_means)} grid points finished")
    best_lr = max(finished, key=lambda point: point[1])[0]
    if best_lr not in (finished[0][0], finished[-1][0]):
        return Gate("grid brackets its best", True, f"best grid point {best_lr:g} lies inside the grid "
                    f"({finished[0][0]:g}-{finished[-1][0]:g})")
    side = "lowest" if best_lr == finished[0][0] else "highest"
    return Gate("grid brackets its best", False, f"the grid's best point is its {side} max_lr {best_lr:g}",
                f"extend the grid beyond {best_lr:g} and train the new points", f"grid's best at its {side} end")


# --------------------------------------------------------------------------------------------
# One experiment, from its result files
# --------------------------------------------------------------------------------------------

def check_experiment(plan: Plan, experiment: str, runs: pd.DataFrame,
                     histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]]) -> Validity:
    """Every gate of the module docstring for one experiment. runs: its trainings
    (onecycle.report.runs.collect_runs); histories: group -> [(seed, history.csv)] of its runs."""
    exp = plan.workflow.experiments[experiment]
    trains = plan.experiment_trains(experiment)
    info = DATASETS[trains[0].dataset]
    # An image folder's test set is the user's: its size is unknown here, and 1 000 images make
    # the line stricter than any larger set would.
    test_images = info.test_size or 1000
    gates = []
    if exp.bounds_study is None:
        gates.append(trainings_learned(runs, info.num_classes, test_images))
    else:
        chance = 100.0 / info.num_classes
        grid = [(lr, _mean_score(runs, grid_group(lr), chance)) for lr in exp.bounds_study.max_lr_grid]
        bracket = grid_brackets_best(grid)
        best = max(((lr, m) for lr, m in grid if not math.isnan(m)), key=lambda p: p[1], default=None)
        gates.append(trainings_learned(runs, info.num_classes, test_images, [grid_group(best[0])])
                     if best else Gate("trainings learned", None, "no grid point finished yet"))
        gates.append(bracket)
    jobs = plan.experiment_range_tests(experiment)
    # The range tests of the planned config whose files read (onecycle.report.evidence).
    tests = [(item.job.seed, pd.read_csv(item.job.out_dir / "history.csv"))
             for item in range_test_evidence(plan, jobs) if item.state in (FRESH, DIVERGED)]
    eval_images = min(RangeTestSpec.model_validate(jobs[0].config["range_test"]).eval_subset,
                      test_images) if jobs else test_images
    gates.append(range_tests_left_chance(tests, info.num_classes, eval_images))
    speedups = {c: speedup.seed_speedups(runs, histories, c.candidate, c.baseline, c.margin_pp or 0.0)[0]
                for c in exp.claims if c.kind == "speedup"}
    gates.append(time_to_accuracy_resolved(speedups))
    return Validity(tuple(gates), tiny=plan.workflow.scale == "tiny")


def _mean_score(runs: pd.DataFrame, group: str, chance: float) -> float:
    """Mean final accuracy of a bounds-study group, a diverged run at chance (report.bounds_study)."""
    members = runs[(runs["group"] == group) & runs["status"].isin(["completed", "diverged"])]
    if members.empty:
        return math.nan
    return float(members["final_accuracy"].where(members["status"] == "completed", chance).mean())


def write_validity(path: Path, validity: Validity) -> None:
    """tables/<experiment>_validity.csv: one row per gate, with what would make a failed one pass."""
    io.write_csv(path, validity.frame())
