"""Bounds studies: which range-test rule picks a good max LR, scored against real training.

The suite reads a max LR off a range test with eight rules (onecycle.bounds). A `bounds_study`
block on an experiment of the workflow config checks them against the outcome they are meant
to predict. onecycle.experiments.expansion expands it into jobs of the same DAG:

- the experiment's range test over `range_test_seeds`; combine_bounds keeps every rule's
  per-seed suggestion and median (onecycle.range_test);
- one training group per point of `max_lr_grid` (`lr_<value>`) and one per rule (`rule_<rule>`,
  schedule.bounds_rule: it waits for the combined bounds), all the same short `training` run,
  over the workflow's seeds;
- range tests under other settings (`range_test_variants`: length, ramp, evaluation), which
  only show how each setting moves the suggestions.

The scores (regret, settings, suite summary) are onecycle.report.bounds_study's.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from onecycle.bounds import DEFAULT_DIVISORS, SUGGESTION_RULES
from onecycle.experiments.config import ConfigError, Number, RangeTestSpec, StrictModel, parse
from onecycle.experiments.loading import deep_merge
from onecycle.training.schedule_setup import LR_BOUND_PARAMS

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
