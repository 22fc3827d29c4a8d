"""A run's LR schedule from its config: the schedule's *_epochs parameters in iterations, the
LR bounds a range test found put in (`--bounds`, a bounds record), and the check that builds a
run's schedule without data when the workflow is expanded (check_schedule)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from onecycle import data as datasets
from onecycle import io
from onecycle.errors import excerpt
from onecycle.experiments.config import ConfigError, RunConfig, TrainConfig
from onecycle.schedules import Schedule, make_schedule

# Which schedule parameters hold the lower and upper LR bound, per policy, so that bounds
# found by a range test can be put in (names follow each policy's source).
LR_BOUND_PARAMS: dict[str, tuple[str | None, str]] = {
    "smith_1cycle": ("base_lr", "max_lr"),
    "triangular": ("base_lr", "max_lr"),
    "triangular2": ("base_lr", "max_lr"),
    "exp_range": ("base_lr", "max_lr"),
    "torch_1cycle": (None, "max_lr"),
    "fastai_1cycle": (None, "lr_max"),
}


# `gamma_per_epoch`: the per-iteration factor gamma of the policies whose LR decays as
# gamma**iteration, given per epoch instead (gamma = gamma_per_epoch ** (1 / iterations per
# epoch)), so a decay keeps its shape in epochs on a dataset of another size (the CLR paper's
# ImageNet exp rows on Imagenette, configs/paper.yaml).
GAMMA_PER_EPOCH = "gamma_per_epoch"
POWER_RATE_POLICIES = ("exp", "exp_range")


def resolve_schedule_params(cfg: RunConfig, iters_per_epoch: int,
                            bounds: dict[str, Any] | None) -> dict[str, Any]:
    """The schedule's parameters in iterations, with range-test bounds put in if asked."""
    params: dict[str, Any] = {}
    for key, value in cfg.schedule.params.items():
        if key == GAMMA_PER_EPOCH:
            params["gamma"] = _per_iteration_gamma(cfg, value, iters_per_epoch)
        elif key.endswith("_epochs"):
            name = key.removesuffix("_epochs")
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ConfigError(f"schedule.params.{key} = {value!r}: expected a number of epochs")
            converted = [round(v * iters_per_epoch) for v in values]
            params[name] = converted if isinstance(value, list) else converted[0]
        else:
            params[key] = value
    if cfg.schedule.lr_bounds == "range_test":
        if bounds is None:
            raise ConfigError("schedule.lr_bounds is 'range_test' but no bounds file was given (--bounds)")
        check_bounds(bounds, "bounds")
        if cfg.schedule.policy not in LR_BOUND_PARAMS:
            raise ConfigError(f"schedule.lr_bounds 'range_test' is not supported for policy "
                              f"{cfg.schedule.policy!r}; use one of {', '.join(LR_BOUND_PARAMS)}")
        rule, chosen = rule_bounds(bounds, cfg.schedule.bounds_rule)
        if cfg.schedule.bounds_rule is not None:
            check_bounds(chosen, f"bounds rules.{rule}")
        if chosen.get("max_lr") is None:
            # The chosen rule's record says why (range_test_job.bounds_record); a per-rule one does not.
            why = chosen.get("no_bounds") or f"its rule {rule!r} found no max_lr"
            setting = "range_test.bounds_rule" if cfg.schedule.bounds_rule is None else "schedule.bounds_rule"
            raise ConfigError(f"the range test gave no bounds ({why}); see its bounds.json, or pick "
                              f"another {setting}")
        low_key, high_key = LR_BOUND_PARAMS[cfg.schedule.policy]
        params[high_key] = float(chosen["max_lr"])
        if low_key is not None:
            params[low_key] = float(chosen["base_lr"])
    return params


def _per_iteration_gamma(cfg: RunConfig, value: Any, iters_per_epoch: int) -> float:
    where = f"schedule.params.{GAMMA_PER_EPOCH}"
    if cfg.schedule.policy not in POWER_RATE_POLICIES:
        raise ConfigError(f"{where}: only for the policies whose LR decays as gamma**iteration "
                          f"({', '.join(POWER_RATE_POLICIES)}), not {cfg.schedule.policy!r}")
    if "gamma" in cfg.schedule.params:
        raise ConfigError(f"{where}: give gamma or {GAMMA_PER_EPOCH}, not both")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{where} = {excerpt(value)}: expected a factor in (0, 1]")
    return float(value) ** (1 / iters_per_epoch)


def check_bounds(bounds: Any, source: str) -> dict[str, Any]:
    """A bounds record (a range test's bounds.json, `--bounds`): base_lr and max_lr are both
    positive finite numbers, or both null where the range test's rule found none."""
    if not isinstance(bounds, dict):
        raise ConfigError(f"{source}: expected a JSON object with base_lr and max_lr")
    values = {key: bounds.get(key) for key in ("base_lr", "max_lr")}
    for key, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise ConfigError(f"{source}: '{key}' = {excerpt(value)}: expected a positive number, "
                              "or null where the range test found no bound")
    if (values["base_lr"] is None) != (values["max_lr"] is None):
        raise ConfigError(f"{source}: base_lr and max_lr are both numbers or both null, got "
                          f"{excerpt(values['base_lr'])} and {excerpt(values['max_lr'])}")
    return bounds


def read_bounds_file(path: str | Path) -> dict[str, Any]:
    """`onecycle train --bounds FILE`: a bounds record, with errors naming the file and key."""
    try:
        record = io.read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a valid JSON file ({error})") from None
    return check_bounds(record, str(path))


def rule_bounds(bounds: dict[str, Any], rule: str | None) -> tuple[str, dict[str, Any]]:
    """(rule, its {"base_lr", "max_lr"}) from a bounds file: the range test's chosen rule, or
    `rule` (schedule.bounds_rule) from the per-rule bounds that combine_bounds keeps."""
    if rule is None:
        return bounds.get("chosen_rule"), bounds
    if rule not in bounds.get("rules", {}):
        raise ConfigError(f"schedule.bounds_rule {rule!r}: the bounds file has no per-rule bounds for it "
                          "(combine the range tests again with `onecycle combine-bounds`)")
    return rule, bounds["rules"][rule]


def build_schedule(cfg: RunConfig, iters_per_epoch: int,
                   bounds: dict[str, Any] | None) -> tuple[Schedule, dict[str, Any]]:
    params = resolve_schedule_params(cfg, iters_per_epoch, bounds)
    try:
        schedule = make_schedule(cfg.schedule.policy, cfg.train.epochs * iters_per_epoch, **params)
    except ValueError as error:
        raise ConfigError(f"schedule: {error}") from None
    return schedule, params


def schedule_iterations_per_epoch(train_cfg: TrainConfig, train_size: int) -> int:
    """Iterations per epoch as train.epochs and the schedule's *_epochs keys count them: of
    train.epoch_batch_size when it is set (Part 1's x4.sh, C2), else of the batch size trained."""
    return train_size // (train_cfg.epoch_batch_size or train_cfg.batch_size)


def check_schedule(cfg: RunConfig) -> None:
    """Build the run's schedule without data, so that a stepsize longer than the run fails when
    the workflow is expanded, not when the job starts. Range-test bounds are not known yet:
    stand-in LRs take their place (only the schedule's shape is checked here)."""
    info = datasets.DATASETS[cfg.data.dataset]
    if info.train_size is None:  # ImageFolder subsets: size known only once the folder is read
        return
    train_size = min(cfg.data.train_subset or info.train_size, info.train_size)
    for key in ("batch_size", "epoch_batch_size"):
        batch = getattr(cfg.train, key)
        if batch is not None and batch > train_size:
            raise ConfigError(f"train.{key} = {batch} is larger than the {train_size} training images "
                              f"of {cfg.data.dataset}")
    stand_in = {"base_lr": 0.1, "max_lr": 1.0, "chosen_rule": "stand-in",
                "rules": {cfg.schedule.bounds_rule: {"base_lr": 0.1, "max_lr": 1.0}}}
    build_schedule(cfg, schedule_iterations_per_epoch(cfg.train, train_size),
                   stand_in if cfg.schedule.lr_bounds == "range_test" else None)
