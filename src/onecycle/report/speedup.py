"""Time to the baseline's accuracy and the speed-up: the one definition every table, figure and claim uses.

The target. When the candidate and the baseline completed the same seeds (the design pairs them:
the same initialisation and data order), seed s's target is the baseline seed s's final test
accuracy minus `margin_pp`, and B_s that baseline run's iterations. Where the seeds differ, every
candidate seed has the same target: the baseline's mean final accuracy over its completed seeds
minus margin_pp, and B their mean iterations. margin_pp is the speedup claim's ("reaches the
baseline's accuracy within 0.2 pp"); the time-to-accuracy table takes the margin of the
experiment's speedup claim on its pair (`table_margin_pp`), 0 without one, so that the table and
the claim read the same iterations.

The speed-up of seed s is B_s / T_s (baseline over candidate), T_s the iteration of the
candidate's first evaluation at or above its target. Evaluations are discrete: the true crossing
lies between the evaluation before and T_s, so B_s / T_s is the least speed-up the curve allows.
A seed that never reaches its target within its run has a speed-up below B_s / (its last
evaluated iteration); it is marked `reached` False and carries that upper limit. Only completed
runs count: a diverged or broken run delivers no model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from onecycle.experiments.workflow import ExperimentConfig
from onecycle.report import stats


@dataclass(frozen=True)
class SeedSpeedup:
    """One candidate seed against its target (module docstring); accuracies in percent."""

    seed: int
    target: float
    baseline_iterations: float
    iterations: float          # at the first evaluation reaching the target; NaN if none did
    epochs: float
    wall_time_s: float
    last_iteration: float      # the candidate's last evaluation
    evaluated: tuple[float, ...]  # iterations of every evaluation, for the validity gate

    @property
    def reached(self) -> bool:
        return not math.isnan(self.iterations)

    @property
    def speedup(self) -> float:
        """B / T; for a seed that never reached its target, the upper limit B / its last evaluation."""
        return self.baseline_iterations / (self.iterations if self.reached else self.last_iteration)


def table_margin_pp(experiment: ExperimentConfig) -> float:
    """The margin of the experiment's speedup claim on its candidate/baseline pair, 0 without one."""
    for claim in experiment.claims:
        if claim.kind == "speedup" and (claim.candidate, claim.baseline) == (experiment.candidate,
                                                                             experiment.baseline):
            return claim.margin_pp or 0.0
    return 0.0


def seed_speedups(runs: pd.DataFrame, histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]],
                  candidate: str, baseline: str, margin_pp: float) -> tuple[list[SeedSpeedup], str]:
    """Each completed candidate seed against its target, and a note saying how the target was set.

    runs: onecycle.report.runs.collect_runs (final accuracy in percent, iterations, status);
    histories: group -> [(seed, history.csv)] with `iteration` and `test_accuracy` (a fraction).
    """
    done = runs[runs["status"] == "completed"]
    base = done[done["group"] == baseline]
    finals = dict(zip(base["seed"].astype(int), base["final_accuracy"].astype(float)))
    budgets = dict(zip(base["seed"].astype(int), base["iterations"].astype(float)))
    completed = set(done.loc[done["group"] == candidate, "seed"].astype(int))
    curves = {int(s): h for s, h in histories.get(candidate, ()) if int(s) in completed}
    if not finals or not curves:
        return [], f"no completed {baseline if not finals else candidate} run yet"
    paired = set(curves) == set(finals)
    margin = f" - {margin_pp:g} pp" if margin_pp else ""
    note = (f"target = the same seed's {baseline} final accuracy{margin}" if paired else
            f"target = mean final accuracy of {len(finals)} {baseline} seed(s){margin} (seeds differ)")
    result = []
    for seed, curve in sorted(curves.items()):
        target = (finals[seed] if paired else float(np.mean(list(finals.values())))) - margin_pp
        budget = budgets[seed] if paired else float(np.mean(list(budgets.values())))
        evaluated = curve[curve["test_accuracy"].notna()]
        hit = {x: stats.time_to_accuracy(evaluated, target / 100.0, x=x) if x in evaluated else None
               for x in ("iteration", "epoch", "wall_time_s")}
        result.append(SeedSpeedup(seed, target, budget, _nan_if_none(hit["iteration"]), _nan_if_none(hit["epoch"]),
                                  _nan_if_none(hit["wall_time_s"]),
                                  float(evaluated["iteration"].max()) if len(evaluated) else math.nan,
                                  tuple(float(i) for i in evaluated["iteration"])))
    return result, note


def geometric_mean(speedups: Sequence[SeedSpeedup]) -> float:
    """The speed-up the claims test (their t bound is on log speed-up): exp of the mean log."""
    values = [s.speedup for s in speedups if s.speedup > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else math.nan


_COLUMNS = ("seed", "target_accuracy", "iterations", "epochs", "wall_time_s", "baseline_iterations", "speedup",
            "note")


def time_to_accuracy_table(runs: pd.DataFrame, histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]],
                           baseline: str, candidate: str, margin_pp: float = 0.0, *,
                           broken: Mapping[str, Mapping[int, str]] | None = None) -> pd.DataFrame:
    """How soon each candidate seed reaches its target (module docstring): iterations, epochs and
    wall time at the first evaluation reaching it, the baseline iterations it is measured against,
    and the speed-up B / T. A seed that never reached it has NaN there and says so. A last row,
    "all", gives the geometric mean speed-up of the seeds that reached it (the speedup claims'
    estimate). Broken runs (collect_runs) get a row each, naming why they are not counted."""
    broken = broken or {}
    seeds, how = seed_speedups(runs, histories, candidate, baseline, margin_pp)
    if not seeds:
        return pd.DataFrame([{c: (how if c == "note" else math.nan) for c in _COLUMNS}], columns=list(_COLUMNS))
    rows = [{"seed": s.seed, "target_accuracy": s.target, "iterations": s.iterations, "epochs": s.epochs,
             "wall_time_s": s.wall_time_s, "baseline_iterations": s.baseline_iterations,
             "speedup": s.speedup if s.reached else math.nan,
             "note": how if s.reached else f"never reached the target (speed-up below {s.speedup:.2f})"}
            for s in seeds]
    for group in (candidate, baseline):
        for seed, reason in broken.get(group, {}).items():
            rows.append({**{c: math.nan for c in _COLUMNS}, "seed": seed,
                         "note": f"{group} seed {seed} broken, not counted: {reason}"})
    reached = [s for s in seeds if s.reached]
    rows.append({"seed": "all", "target_accuracy": math.nan,
                 "iterations": float(np.mean([s.iterations for s in reached])) if reached else math.nan,
                 "epochs": float(np.mean([s.epochs for s in reached])) if reached else math.nan,
                 "wall_time_s": float(np.mean([s.wall_time_s for s in reached])) if reached else math.nan,
                 "baseline_iterations": float(np.mean([s.baseline_iterations for s in seeds])),
                 "speedup": geometric_mean(reached),
                 "note": f"reached by {len(reached)} of {len(seeds)} {candidate} seed(s); speed-up: geometric mean"})
    return pd.DataFrame(rows, columns=list(_COLUMNS))


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
