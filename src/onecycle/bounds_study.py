"""Bounds studies: which range-test rule picks a good max LR, scored against real training.

The suite reads a max LR off a range test with eight rules (onecycle.bounds). A `bounds_study`
block on an experiment of the workflow config checks them against the outcome they are meant
to predict. onecycle.experiments expands it into jobs of the same DAG:

- the experiment's range test over `range_test_seeds`; combine_bounds keeps every rule's
  per-seed suggestion and median (onecycle.range_test);
- one training group per point of `max_lr_grid` (`lr_<value>`) and one per rule (`rule_<rule>`,
  schedule.bounds_rule: it waits for the combined bounds), all the same short `training` run,
  over the workflow's seeds;
- range tests under other settings (`range_test_variants`: length, ramp, evaluation), which
  only show how each setting moves the suggestions.

The analysis is pure: `regret_table`, `settings_table` and `suite_summary` read frames that
onecycle.report builds from explicit result files. A diverged run delivers no usable model, so
it scores chance accuracy (100 / classes %) in every mean here; the tables count divergences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from onecycle import stats
from onecycle.bounds import DEFAULT_DIVISORS, SUGGESTION_RULES
from onecycle.config import ConfigError, Number, RangeTestSpec, StrictModel, deep_merge, parse
from onecycle.train import LR_BOUND_PARAMS

# The minimum: 7 log-spaced points covering a tenth to ten times the suggestions.
MIN_GRID_POINTS = 7
MIN_GRID_SPAN = 100.0
# Neighbouring grid points may differ in ratio by at most this factor (the 1-2-5 series,
# x2 then x2.5, passes; a grid that jumps a decade after half-decade steps does not).
MAX_GRID_STEP_UNEVENNESS = 2.0

GRID_PREFIX, RULE_PREFIX = "lr_", "rule_"

# What each rule reads off the range test (docs/paper_reference.md D2 for Smith's rules; fastai's
# and the steepest-slope rules read the smoothed training loss: onecycle.bounds).
RULE_SIGNALS = {
    "smith_accuracy_peak": "test accuracy",
    "smith_loss_turn_up": "test loss",
    "fastai_valley": "train loss",
    "fastai_slide": "train loss",
    "fastai_steep": "train loss",
    "fastai_minimum": "train loss",
    "steepest_slope_lr": "train loss",
    "steepest_slope_log_lr": "train loss",
}


class BoundsStudyConfig(StrictModel):
    """The `bounds_study` block of an experiment (the experiment's `range_test` is the study's)."""

    # Overrides of the experiment's `base` for every training run of the study: the short run
    # whose final accuracy scores a max LR. Its schedule's LR bounds are set per group.
    training: dict[str, Any]
    # max_lr of each grid group, ascending; base_lr = max_lr / the range test's divisor, as the
    # rules' groups get it (range_test.policy_kind / bounds_divisor, D2).
    max_lr_grid: list[Number] = Field(min_length=MIN_GRID_POINTS)
    rules: list[str] = Field(default_factory=lambda: list(SUGGESTION_RULES), min_length=1)
    # The paper's max LR for this net, drawn on the figure, and where it is published.
    paper_max_lr: Number | None = Field(default=None, gt=0)
    paper_source: str = ""
    # The row name of the experiment's own range test in the settings table.
    range_test_name: str = "main"
    # Name -> overrides of `range_test`: range tests (no training) under other settings.
    range_test_variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # "Lands within the grid's best": a rule's regret at most this many percentage points.
    within_pp: Number = Field(default=0.5, ge=0)

    @field_validator("max_lr_grid")
    @classmethod
    def _log_spaced(cls, grid: list[float]) -> list[float]:
        if any(v <= 0 for v in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
            raise ValueError(f"max_lr_grid must be positive and strictly ascending, got {grid}")
        if grid[-1] / grid[0] < MIN_GRID_SPAN:
            raise ValueError(f"max_lr_grid spans x{grid[-1] / grid[0]:.3g}; it must span at least "
                             f"x{MIN_GRID_SPAN:g} (a tenth to ten times the suggestions)")
        steps = [b / a for a, b in zip(grid, grid[1:])]
        if max(steps) / min(steps) > MAX_GRID_STEP_UNEVENNESS:
            raise ValueError(f"max_lr_grid is not log-spaced: neighbours differ by x{min(steps):.3g} "
                             f"to x{max(steps):.3g}")
        return grid

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, rules: list[str]) -> list[str]:
        unknown = [r for r in rules if r not in SUGGESTION_RULES]
        if unknown:
            raise ValueError(f"unknown rule {unknown[0]!r}; valid: {', '.join(SUGGESTION_RULES)}")
        if len(set(rules)) != len(rules):
            raise ValueError(f"rules {rules} repeat a rule")
        return rules

    @model_validator(mode="after")
    def _paper_bound_is_cited(self) -> BoundsStudyConfig:
        if self.paper_max_lr is not None and not self.paper_source:
            raise ValueError("paper_max_lr needs paper_source (where the paper gives it)")
        return self


def grid_group(max_lr: float) -> str:
    return f"{GRID_PREFIX}{max_lr:g}"


def rule_group(rule: str) -> str:
    return f"{RULE_PREFIX}{rule}"


def divisor_of(range_test: RangeTestSpec) -> float:
    """base_lr = max_lr / this, for the grid as combine_bounds applies it to the rules."""
    return range_test.bounds_divisor or DEFAULT_DIVISORS[range_test.policy_kind]


def study_groups(study: BoundsStudyConfig, range_test: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Group name -> overrides of `base`: a grid point's fixed bounds, or a rule's suggestion."""
    spec = parse(RangeTestSpec, range_test, "range_test")
    policy = study.training.get("schedule", {}).get("policy")
    if policy not in LR_BOUND_PARAMS:
        raise ConfigError(f"bounds_study.training.schedule.policy = {policy!r}: a study sets the LR bounds "
                          f"of its runs, so use one of {', '.join(LR_BOUND_PARAMS)}")
    low_key, high_key = LR_BOUND_PARAMS[policy]
    divisor = divisor_of(spec)
    groups: dict[str, dict[str, Any]] = {}
    for max_lr in study.max_lr_grid:
        params = {high_key: max_lr, **({low_key: max_lr / divisor} if low_key else {})}
        name = grid_group(max_lr)
        if name in groups:
            raise ConfigError(f"bounds_study.max_lr_grid: {max_lr} and a neighbour both print as {name!r}")
        groups[name] = deep_merge(study.training, {"schedule": {"lr_bounds": "config", "params": params}})
    for rule in study.rules:
        groups[rule_group(rule)] = deep_merge(study.training,
                                              {"schedule": {"lr_bounds": "range_test", "bounds_rule": rule}})
    return groups


def variant_range_tests(study: BoundsStudyConfig, range_test: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> its whole `range_test` block (the study's, with the variant's overrides)."""
    variants = {}
    for name, overrides in study.range_test_variants.items():
        merged = deep_merge(range_test, overrides)
        spec = parse(RangeTestSpec, merged, f"bounds_study.range_test_variants.{name}")
        if spec.end_lr <= spec.start_lr:
            raise ConfigError(f"bounds_study.range_test_variants.{name}: a variant ramps the LR "
                              "(end_lr above start_lr); a momentum range test has no LR suggestions")
        variants[name] = merged
    return variants


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------

def scored_runs(runs: pd.DataFrame, chance_accuracy: float) -> pd.DataFrame:
    """`runs` (onecycle.aggregate.collect_runs) with a `score` column: the final accuracy (%) of
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
