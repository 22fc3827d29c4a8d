"""Bounds-study scores: each range-test rule's regret against the study's LR grid.

Pure functions of frames that onecycle.report.build reads from explicit result files (the study's
jobs are onecycle.experiments.bounds_study's). A diverged run delivers no usable model, so it
scores chance accuracy (100 / classes %) in every mean here; the tables count divergences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from onecycle.experiments.bounds_study import RULE_SIGNALS, BoundsStudyConfig, grid_group, rule_group
from onecycle.report import stats

def scored_runs(runs: pd.DataFrame, chance_accuracy: float) -> pd.DataFrame:
    """`runs` (onecycle.report.runs.collect_runs) with a `score` column: the final accuracy (%) of
    a completed run, chance accuracy for a diverged one."""
    score = np.where(runs["status"] == "completed", runs["final_accuracy"], chance_accuracy)
    return runs.assign(score=score.astype(float))


def _setting_scores(scored: pd.DataFrame, group: str) -> dict[str, Any]:
    members = scored[scored["group"] == group]
    mean, std, n = stats.mean_std(members["score"]) if len(members) else (math.nan, math.nan, 0)
    return {"accuracy_mean": mean, "accuracy_std": std, "n": n,
            "n_diverged": int((members["status"] == "diverged").sum()),
            "max_lr": float(members["max_lr"].iloc[0]) if len(members) else math.nan}


def grid_scores(scored: pd.DataFrame, grid: Sequence[float]) -> pd.DataFrame:
    """One row per grid point: max_lr, score mean ± std over seeds, n, diverged."""
    rows = []
    for max_lr in grid:
        row = _setting_scores(scored, grid_group(max_lr))
        rows.append({**row, "group": grid_group(max_lr), "max_lr": max_lr})
    return pd.DataFrame(rows, columns=["group", "max_lr", "accuracy_mean", "accuracy_std", "n", "n_diverged"])


REGRET_COLUMNS = ("rule", "signal", "suggested_max_lr_mean", "suggested_max_lr_std", "n_range_tests",
                  "trained_max_lr", "accuracy_mean", "accuracy_std", "n", "n_diverged",
                  "grid_best_accuracy", "grid_best_max_lr", "regret_pp", "rank", "within_pp")


def regret_table(scored: pd.DataFrame, combined_bounds: Mapping[str, Any] | None,
                 study: BoundsStudyConfig) -> pd.DataFrame:
    """One row per rule, best first: its suggestion over the range-test seeds (mean ± std of the
    seeds that gave one, of n_range_tests), the max_lr it trained at (their median), the score
    of its runs, the grid's best mean score and that point's max_lr, regret = best - its score
    (percentage points), rank by regret (1 = lowest, ties share the lower rank) and whether the
    regret is at most `within_pp`. Rules whose runs have not finished have NaN scores, no rank.
    """
    grid = grid_scores(scored, study.max_lr_grid)
    finished = grid[grid["n"] > 0]
    best = finished.loc[finished["accuracy_mean"].idxmax()] if len(finished) else None
    best_accuracy = math.nan if best is None else float(best["accuracy_mean"])
    best_max_lr = math.nan if best is None else float(best["max_lr"])
    per_rule = (combined_bounds or {}).get("rules", {})
    rows = []
    for rule in study.rules:
        suggestions = [v for v in per_rule.get(rule, {}).get("per_seed", []) if v is not None]
        mean, std, _ = stats.mean_std(suggestions)
        runs = _setting_scores(scored, rule_group(rule))
        rows.append({"rule": rule, "signal": RULE_SIGNALS[rule], "suggested_max_lr_mean": mean,
                     "suggested_max_lr_std": std,
                     "n_range_tests": len(suggestions),
                     "trained_max_lr": runs["max_lr"] if runs["n"] else per_rule.get(rule, {}).get("max_lr"),
                     "accuracy_mean": runs["accuracy_mean"], "accuracy_std": runs["accuracy_std"],
                     "n": runs["n"], "n_diverged": runs["n_diverged"],
                     "grid_best_accuracy": best_accuracy, "grid_best_max_lr": best_max_lr,
                     "regret_pp": best_accuracy - runs["accuracy_mean"]})
    table = pd.DataFrame(rows, columns=[c for c in REGRET_COLUMNS if c not in ("rank", "within_pp")])
    table["trained_max_lr"] = pd.to_numeric(table["trained_max_lr"], errors="coerce")
    table["rank"] = table["regret_pp"].rank(method="min").astype("Int64")
    table["within_pp"] = table["regret_pp"].le(study.within_pp).where(table["regret_pp"].notna())
    return table.sort_values(["rank", "rule"], na_position="last", kind="stable").reset_index(drop=True)


def grid_covers(grid: Sequence[float], suggestions: Sequence[float]) -> bool:
    """Whether the grid reaches a tenth of the lowest and ten times the highest suggestion."""
    return bool(suggestions) and grid[0] <= min(suggestions) / 10 and grid[-1] >= max(suggestions) * 10


# --------------------------------------------------------------------------------------------
# Range-test settings
# --------------------------------------------------------------------------------------------

def setting_values(suggestions: Mapping[str, Sequence[Mapping[str, Any]]],
                   rules: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """setting -> rule -> the max_lr of each seed that gave one. suggestions: setting name ->
    the `suggestions` block of each seed's bounds.json."""
    return {setting: {rule: [s[rule]["max_lr"] for s in seeds if s.get(rule, {}).get("max_lr") is not None]
                      for rule in rules}
            for setting, seeds in suggestions.items()}


def settings_table(suggestions: Mapping[str, Sequence[Mapping[str, Any]]], rules: Sequence[str]) -> pd.DataFrame:
    """How each range-test setting moves each rule's suggestion (see `setting_values`).

    One row per rule: its signal, then per setting the mean and std (over the seeds that gave
    one) of its max_lr, and `spread_factor` = the largest setting mean / the smallest.
    """
    values = setting_values(suggestions, rules)
    rows = []
    for rule in rules:
        row: dict[str, Any] = {"rule": rule, "signal": RULE_SIGNALS[rule]}
        means = []
        for setting, by_rule in values.items():
            mean, std, n = stats.mean_std(by_rule[rule])
            row[f"{setting}_mean"], row[f"{setting}_std"] = mean, std
            if n:
                means.append(mean)
        row["spread_factor"] = max(means) / min(means) if means else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Suite summary
# --------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ("rule", "signal", "n_studies", "mean_regret_pp", "mean_rank", "n_within", "n_diverged")


def suite_summary(regrets: Mapping[str, pd.DataFrame], within_pp: Mapping[str, float]) -> pd.DataFrame:
    """Across studies (name -> regret_table), one row per rule, lowest mean regret first: the
    studies that scored it, its mean regret and rank, in how many it landed within the grid's
    best (regret at most within_pp[study]), its diverged runs, and its regret in each study."""
    rules = list(dict.fromkeys(rule for table in regrets.values() for rule in table["rule"]))
    rows = []
    for rule in rules:
        row: dict[str, Any] = {"rule": rule, "signal": RULE_SIGNALS[rule]}
        regret, ranks, within, diverged = [], [], 0, 0
        for study, table in regrets.items():
            match = table[(table["rule"] == rule) & table["regret_pp"].notna()]
            value = float(match["regret_pp"].iloc[0]) if len(match) else math.nan
            row[f"regret_pp_{study}"] = value
            if len(match):
                regret.append(value)
                ranks.append(float(match["rank"].iloc[0]))
                within += value <= within_pp[study]
                diverged += int(match["n_diverged"].iloc[0])
        row.update({"n_studies": len(regret), "mean_regret_pp": float(np.mean(regret)) if regret else math.nan,
                    "mean_rank": float(np.mean(ranks)) if ranks else math.nan, "n_within": within,
                    "n_diverged": diverged})
        rows.append(row)
    columns = [*SUMMARY_COLUMNS, *(f"regret_pp_{study}" for study in regrets)]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["mean_regret_pp", "rule"], na_position="last", kind="stable").reset_index(drop=True)
