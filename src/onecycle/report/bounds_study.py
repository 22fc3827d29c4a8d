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
                  "trained_max_lr", "accuracy_mean", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high", "n",
                  "n_diverged", "grid_best_accuracy", "grid_best_ci_low", "grid_best_ci_high", "grid_best_max_lr",
                  "regret_pp", "regret_lower_pp", "regret_upper_pp", "regret_test", "versus_best", "rank", "validity")


def _scores_by_seed(scored: pd.DataFrame, group: str) -> dict[int, float]:
    members = scored[scored["group"] == group]
    return {int(s): float(v) for s, v in zip(members["seed"], members["score"])}


def versus_best(bounds: stats.DifferenceBounds) -> str:
    """Where a rule stands against the grid's best, from the bounds on its regret (best - rule):
    "within noise" unless they exclude 0, then "below the best" or "above the best"."""
    if bounds.pairing == "none":
        return "no bound" if bounds.n else ""
    if bounds.lower > 0:
        return "below the best"
    return "above the best" if bounds.upper < 0 else "within noise"


def tied_ranks(by_rule: Mapping[str, Mapping[int, float]], confidence: float) -> dict[str, int]:
    """Rank 1 + the number of rules whose score beats this one's beyond noise (the lower bound of
    their difference, stats.difference_bounds, above 0): rules within noise of each other share
    a rank, so a reader never sees an order the seeds cannot tell."""
    return {rule: 1 + sum(stats.difference_bounds(other, scores, confidence).lower > 0
                          for name, other in by_rule.items() if name != rule and other and scores)
            for rule, scores in by_rule.items() if scores}


def regret_table(scored: pd.DataFrame, combined_bounds: Mapping[str, Any] | None, study: BoundsStudyConfig,
                 confidence: float = 0.95, validity: str | None = None) -> pd.DataFrame:
    """One row per rule, best first: its suggestion over the range-test seeds (mean ± std of the
    seeds that gave one, of n_range_tests), the max_lr it trained at (their median), its score
    with a 95 % t interval over seeds, the grid's best mean score (and its interval and max_lr),
    regret = best - its score with one-sided bounds from a paired t over the training seeds
    (the rule's run and the grid point's run of a seed share initialisation and data order), where
    it stands against the best (`versus_best`) and a rank with ties (`tied_ranks`). Rules whose
    runs have not finished have NaN scores and no rank. `validity` (an invalid study's label)
    stands in place of every rank and standing."""
    grid = grid_scores(scored, study.max_lr_grid)
    finished = grid[grid["n"] > 0]
    best = finished.loc[finished["accuracy_mean"].idxmax()] if len(finished) else None
    best_scores = _scores_by_seed(scored, best["group"]) if best is not None else {}
    best_ci = stats.t_interval(best_scores.values()) if best_scores else (math.nan, math.nan)
    per_rule = (combined_bounds or {}).get("rules", {})
    rows, by_rule = [], {}
    for rule in study.rules:
        suggestions = [v for v in per_rule.get(rule, {}).get("per_seed", []) if v is not None]
        mean, std, _ = stats.mean_std(suggestions)
        runs = _setting_scores(scored, rule_group(rule))
        by_rule[rule] = _scores_by_seed(scored, rule_group(rule))
        regret = stats.difference_bounds(best_scores, by_rule[rule], confidence) if best_scores and by_rule[rule] \
            else None
        ci = stats.t_interval(by_rule[rule].values()) if by_rule[rule] else (math.nan, math.nan)
        rows.append({"rule": rule, "signal": RULE_SIGNALS[rule], "suggested_max_lr_mean": mean,
                     "suggested_max_lr_std": std, "n_range_tests": len(suggestions),
                     "trained_max_lr": runs["max_lr"] if runs["n"] else per_rule.get(rule, {}).get("max_lr"),
                     "accuracy_mean": runs["accuracy_mean"], "accuracy_std": runs["accuracy_std"],
                     "accuracy_ci_low": ci[0], "accuracy_ci_high": ci[1], "n": runs["n"],
                     "n_diverged": runs["n_diverged"],
                     "grid_best_accuracy": math.nan if best is None else float(best["accuracy_mean"]),
                     "grid_best_ci_low": best_ci[0], "grid_best_ci_high": best_ci[1],
                     "grid_best_max_lr": math.nan if best is None else float(best["max_lr"]),
                     "regret_pp": math.nan if regret is None else regret.mean_diff,
                     "regret_lower_pp": math.nan if regret is None else regret.lower,
                     "regret_upper_pp": math.nan if regret is None else regret.upper,
                     "regret_test": "" if regret is None else regret.test,
                     "versus_best": "" if regret is None else versus_best(regret)})
    table = pd.DataFrame(rows, columns=list(REGRET_COLUMNS[:-2]))
    table["trained_max_lr"] = pd.to_numeric(table["trained_max_lr"], errors="coerce")
    ranks = tied_ranks(by_rule, confidence)
    table["rank"] = pd.array([ranks.get(rule) for rule in table["rule"]], dtype="Int64")
    table = table.sort_values(["rank", "regret_pp", "rule"], na_position="last", kind="stable").reset_index(drop=True)
    table["validity"] = validity or ""
    if validity:
        table["rank"] = validity
        table["versus_best"] = validity
    return table


def regret_display(table: pd.DataFrame) -> pd.DataFrame:
    """The regret table as a reader reads it: per rule its suggestion, the max_lr it trained at,
    its accuracy with the 95 % t interval, its regret with the bounds that decide where it
    stands, and the rank (or the study's "invalid: <reason>"); the CSV keeps every column."""
    rows = []
    for row in table.to_dict("records"):
        def number(value: float, spec: str) -> str:
            return "" if pd.isna(value) else format(value, spec)
        suggestion = number(row["suggested_max_lr_mean"], ".3g")
        if suggestion and not pd.isna(row["suggested_max_lr_std"]):
            suggestion += f" ± {row['suggested_max_lr_std']:.2g}"
        accuracy = number(row["accuracy_mean"], ".2f")
        if accuracy and not pd.isna(row["accuracy_std"]):
            accuracy += f" ± {row['accuracy_std']:.2f}"
        interval = (f"[{row['accuracy_ci_low']:.2f}, {row['accuracy_ci_high']:.2f}]"
                    if not pd.isna(row["accuracy_ci_low"]) else "")
        regret = number(row["regret_pp"], "+.2f")
        if regret and not pd.isna(row["regret_lower_pp"]):
            regret += f" [{row['regret_lower_pp']:+.2f}, {row['regret_upper_pp']:+.2f}]"
        rows.append({"rule": row["rule"], "signal": row["signal"], "suggested max_lr": suggestion,
                     "range tests": row["n_range_tests"], "trained at": number(row["trained_max_lr"], ".3g"),
                     "accuracy (%)": accuracy, "95% t CI": interval, "diverged": f"{row['n_diverged']}/{row['n']}",
                     "regret (pp) [bounds]": regret, **_standing(row)})
    return pd.DataFrame(rows)


def _standing(row: dict) -> dict[str, str]:
    """'versus the best' and 'rank' cells: an invalid study's reason once, in the caption, and
    "invalid" here, so that the reason does not widen two columns of every row."""
    invalid = isinstance(row.get("validity"), str) and bool(row["validity"])
    if invalid:
        return {"versus the best": "invalid", "rank": "—"}
    return {"versus the best": row["versus_best"], "rank": "" if pd.isna(row["rank"]) else str(row["rank"])}


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

SUMMARY_COLUMNS = ("rule", "signal", "n_studies", "mean_regret_pp", "n_within_noise", "n_diverged")


def suite_summary(regrets: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Across valid studies (name -> regret_table; the caller leaves out the invalid ones), one
    row per rule, lowest mean regret first: the studies that scored it, its mean regret, in how
    many it stood within noise of the grid's best (or above it), its diverged runs, and its
    regret in each study."""
    rules = list(dict.fromkeys(rule for table in regrets.values() for rule in table["rule"]))
    rows = []
    for rule in rules:
        row: dict[str, Any] = {"rule": rule, "signal": RULE_SIGNALS[rule]}
        regret, within, diverged = [], 0, 0
        for study, table in regrets.items():
            match = table[(table["rule"] == rule) & table["regret_pp"].notna()]
            value = float(match["regret_pp"].iloc[0]) if len(match) else math.nan
            row[f"regret_pp_{study}"] = value
            if len(match):
                regret.append(value)
                within += match["versus_best"].iloc[0] in ("within noise", "above the best")
                diverged += int(match["n_diverged"].iloc[0])
        row.update({"n_studies": len(regret), "mean_regret_pp": float(np.mean(regret)) if regret else math.nan,
                    "n_within_noise": within, "n_diverged": diverged})
        rows.append(row)
    columns = [*SUMMARY_COLUMNS, *(f"regret_pp_{study}" for study in regrets)]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["mean_regret_pp", "rule"], na_position="last", kind="stable").reset_index(drop=True)
