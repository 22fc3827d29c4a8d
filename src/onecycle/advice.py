"""`advise`: a max LR for Smith's 1cycle that was checked against training before you train.

Every range-test rule picks a max LR from the test's curve, and none is safe on every net: on
LeNet Smith's rules came within 0.5 pp of the best max LR an 11-point grid found while the
loss-slope rules lost up to 5 pp, and on a batch-norm ResNet-20 the order inverted
(docs/bounds_studies.md). No peer checks a suggestion against training (docs/peers.md §9). So
advise, on the user's model and data:

1. holds out part of the training data (onecycle.advice_data);
2. runs the range test once per seed (onecycle.range_test) and takes every rule's suggestion,
   the median over the seeds (onecycle.bounds.suggest_all), as the bounds studies do;
3. merges suggestions closer than CANDIDATE_MERGE_RATIO, adds `grid_points` points of a
   log grid (steps of GRID_FACTOR) below the lowest and above the highest, the latter only
   below where a range test diverged and within the LRs it ran;
4. trains a short 1cycle at each of them from the same initial weights and batch order, and
   scores it on the held-out part;
5. returns the max LR that scored best (`Advice`), with the schedule for the real training,
   the table of what it tried and what that cost in training iterations.

Each trial is as long as the budget allows, at least a range test's length and at most the
real training's; the budget is the user's (a fraction of the real training's iterations, or a
number of iterations). The model and the optimizer come back as they were.

A library module: it imports torch, numpy, pandas and onecycle's library modules (the figure's
matplotlib when asked for a figure).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from onecycle import bounds as bound_rules
from onecycle.advice_data import DEFAULT_HOLDOUT, AdviceData, split_data
from onecycle.evaluation import batch_pair, class_targets, evaluate, model_device, move_to, training_divergence
from onecycle.range_test import RangeTestResult, group_ratios, lr_range_test, plot_function, put_back, snapshot
from onecycle.schedules import OneCycleScheduler, Schedule, apply_schedule, group_momentum, make_schedule

# Suggestions within this factor of each other are one candidate: the LeNet bounds study's
# rules moved by 12-27 % (std/mean) from one range-test seed to the next (docs/bounds_studies.md).
CANDIDATE_MERGE_RATIO = 1.25
# The log grid's step: the bounds studies' 1-2-5 grids step by 2 to 2.5 (configs/bounds_study.yaml).
GRID_FACTOR = 2.0
# The range test advise runs unless told otherwise: fastai's lr_find, 1e-7 -> 10 over 100
# iterations, exponentially (docs/peers.md §1), scored 25 times on the held-out part, as the
# bounds studies read Smith's rules off ~26 evaluations (configs/bounds_study.yaml).
RANGE_TEST_DEFAULTS: dict[str, Any] = {"start_lr": 1e-7, "end_lr": 10.0, "iterations": 100, "eval_every": 4}
# Smith's 1cycle as the README's loop runs it: the climb over 45 % of the run (his Caffe runs'
# stepsize, docs/paper_reference.md D3) and cyclical momentum 0.95 -> 0.85 (Part 1, D4), the
# latter only for an optimizer that uses momentum.
SMITH_PCT_START = 0.45
SMITH_MOMENTA = {"momentum": 0.95, "min_momentum": 0.85}
# A trial diverges as the suite's training runs do: a loss above 10 x its first
# (train.divergence_factor's default, onecycle.experiments.config.TrainConfig).
TRIAL_DIVERGENCE_FACTOR = 10.0
# Keys of `range_test` that advise sets itself.
_OWN_RANGE_TEST_KEYS = ("eval_batches", "loss_fn", "device", "restore", "cache_batches", "progress")
# Keys of `schedule_params` that advise sets, or that would not scale from a trial to the real run.
_OWN_SCHEDULE_KEYS = ("base_lr", "max_lr", "stepsize", "momentum_stepsize", "final_lr")


@dataclass
class Advice:
    """max_lr, base_lr (= max_lr / divisor): the pick; schedule: Smith's 1cycle for the real
    training at them (total_steps iterations); trials: one row per max LR tried (max_lr, source,
    rules, base_lr, iterations, diverged, divergence, held_out_loss, held_out_accuracy, chosen),
    in ascending max_lr; suggestions: every
    rule's max LR per range-test seed and their median; range_tests: the RangeTestResults;
    cost_iterations: training iterations run (range tests and trials; held-out scoring not
    counted), budget_iterations: what the budget allowed; trial_iterations: each trial's length."""

    max_lr: float
    base_lr: float
    schedule: Schedule
    trials: pd.DataFrame
    suggestions: pd.DataFrame
    range_tests: list[RangeTestResult]
    cost_iterations: int
    budget_iterations: int
    total_steps: int
    trial_iterations: int

    def scheduler(self, optimizer: torch.optim.Optimizer) -> OneCycleScheduler:
        """The schedule as a torch LR scheduler on `optimizer`, each param group keeping its LR's
        ratio to group 0's, as in the trials; step it after every optimizer step."""
        return OneCycleScheduler(optimizer, self.schedule, group_scales=group_ratios(optimizer))

    def plot(self, ax: Any = None) -> Any:
        """Held-out accuracy against the max LRs tried, the rules' suggestions and the pick, on
        `ax` (returned) or a new Figure (returned). Needs matplotlib (onecycle[plots])."""
        plot_advice = plot_function("onecycle.advice_plot", "plot_advice", "Advice.plot()")
        return plot_advice(self.trials, self.suggestions, ax=ax)


def advise(model: nn.Module, optimizer: torch.optim.Optimizer, data: Any, *, epochs: int,
           budget: float | None = None, budget_iterations: int | None = None,
           seeds: Sequence[int] = (0, 1, 2), holdout: float = DEFAULT_HOLDOUT, batch_size: int | None = None,
           range_test: Mapping[str, Any] | None = None, schedule_params: Mapping[str, Any] | None = None,
           divisor: float = bound_rules.DEFAULT_DIVISORS["1cycle"], grid_points: int = 1,
           loss_fn: Callable = nn.functional.cross_entropy, device: torch.device | str | None = None,
           log: Callable[[str], None] | None = None) -> Advice:
    """Pick the max LR of Smith's 1cycle for training `model` with `optimizer` on `data` for
    `epochs` epochs, by range tests and short trainings (the module's docstring says how).

    data: a DataLoader (or a map-style Dataset with `batch_size`), split with `holdout`
    (onecycle.advice_data.split_data), or an AdviceData. budget: a fraction of the real
    training's epochs x steps_per_epoch iterations, or budget_iterations: exactly one.
    seeds: one range test per seed (the batch order, and torch's RNG for dropout; the
    initial weights are the model's own). range_test: lr_range_test's keywords, over
    RANGE_TEST_DEFAULTS. schedule_params: smith_1cycle's, without the LRs (default
    SMITH_PCT_START and, with momentum, SMITH_MOMENTA); base_lr = max_lr / divisor.
    loss_fn(outputs, class-index targets); log: called with a line per step, e.g. print.
    The model, the optimizer and torch's random state come back as they were.
    """
    if not isinstance(model, nn.Module) or not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"model must be a torch.nn.Module and optimizer a torch.optim.Optimizer, got "
                        f"{type(model).__name__} and {type(optimizer).__name__}")
    _check_int("epochs", epochs, 1)
    data = data if isinstance(data, AdviceData) else split_data(data, holdout=holdout, batch_size=batch_size)
    total = epochs * data.steps_per_epoch
    settings = _range_test_settings(range_test)
    budget_total = _budget(budget, budget_iterations, total, len(_checked_seeds(seeds)), settings["iterations"])
    params = _schedule_params(schedule_params, optimizer, total, divisor)
    _check_int("grid_points", grid_points, 0)
    device = torch.device(device) if device is not None else model_device(model)
    say = log or (lambda line: None)
    initial = snapshot(model, optimizer)
    # The seeds below set torch's random state; the caller's comes back (every CUDA device's too).
    cuda_devices = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda_devices), _restored(model, optimizer, initial):
        results = [_range_test(model, optimizer, data, seed, settings, loss_fn, device, say) for seed in seeds]
        suggestions = rule_suggestions(results)
        spent = sum(len(result.history) for result in results)
        planned, length = _plan_trials(suggestions, results, grid_points, budget_total - spent, total,
                                       settings["iterations"], budget_total)
        trials = _run_trials(model, optimizer, initial, data, planned, length, params, divisor, seeds[0],
                             loss_fn, device, say)
    chosen, cost = _choose(trials), spent + int(trials["iterations"].sum())
    say(f"advise: max_lr {chosen:.4g} (base_lr {chosen / divisor:.4g}); {cost} of {budget_total} budgeted "
        f"iterations ({cost / total:.3g} x the real training's {total})")
    schedule = make_schedule("smith_1cycle", total, base_lr=chosen / divisor, max_lr=chosen, **params)
    return Advice(chosen, chosen / divisor, schedule, trials, suggestions, results, cost, budget_total, total, length)


@contextlib.contextmanager
def _restored(model: nn.Module, optimizer: torch.optim.Optimizer, initial: tuple) -> Iterator[None]:
    """Put the model and the optimizer back to `initial` (range_test.snapshot), even on an error."""
    try:
        yield
    finally:
        put_back(model, optimizer, initial)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _checked_seeds(seeds: Any) -> Sequence[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of integers (one range test each), got {seeds!r}")
    for seed in seeds:
        _check_int("each seed", seed, 0)
    return seeds


def _range_test_settings(range_test: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(range_test or {})
    own = [key for key in given if key in _OWN_RANGE_TEST_KEYS]
    if own:
        raise ValueError(f"range_test: {own[0]!r} is advise's own (the held-out part, its loss_fn and device)")
    settings = {**RANGE_TEST_DEFAULTS, **given}
    _check_int("range_test iterations", settings["iterations"], 2)
    return settings


def _budget(budget: Any, budget_iterations: Any, total: int, seeds: int, test_length: int) -> int:
    """The budget in iterations, refused when it cannot pay for the range tests and two trials
    as long as one of them (a trial shorter than the test that proposed its LR says less)."""
    if (budget is None) == (budget_iterations is None):
        raise ValueError(f"give budget (a fraction of the real training's {total} iterations, e.g. 0.1) "
                         "or budget_iterations, exactly one")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not 0 < budget < math.inf:
            raise ValueError(f"budget must be a positive fraction of the real training, got {budget!r}")
        iterations = round(budget * total)
    else:
        iterations = _check_int("budget_iterations", budget_iterations, 1)
    needed = (seeds + 2) * test_length
    if iterations < needed:
        raise ValueError(f"a budget of {iterations} iterations cannot pay for {seeds} range tests of {test_length} "
                         f"and two trials as long: give at least {needed} iterations "
                         f"({needed / total:.3g} of the real training's {total})")
    return iterations


def _schedule_params(given: Mapping[str, Any] | None, optimizer: Any, total: int, divisor: Any) -> dict[str, Any]:
    """smith_1cycle's parameters for the trials and the real run, checked on the real run."""
    if isinstance(divisor, bool) or not isinstance(divisor, numbers.Real) or not 1 < divisor < math.inf:
        raise ValueError(f"divisor must be a number > 1 (base_lr = max_lr / divisor), got {divisor!r}")
    if given is None:
        uses_momentum = bool(group_momentum(optimizer.param_groups[0])) if isinstance(
            optimizer, torch.optim.Optimizer) else False
        given = {"pct_start": SMITH_PCT_START, **(SMITH_MOMENTA if uses_momentum else {})}
    params = dict(given)
    own = [key for key in params if key in _OWN_SCHEDULE_KEYS]
    if own:
        raise ValueError(f"schedule_params: {own[0]!r} is set by advise or would not scale from a trial to the "
                         "real run (give the climb as pct_start, a fraction of the run)")
    make_schedule("smith_1cycle", total, base_lr=1.0 / divisor, max_lr=1.0, **params)  # raises on a bad one
    return params


def _range_test(model: nn.Module, optimizer: torch.optim.Optimizer, data: AdviceData, seed: int,
                settings: dict[str, Any], loss_fn: Callable, device: torch.device,
                say: Callable[[str], None]) -> RangeTestResult:
    torch.manual_seed(seed)
    result = lr_range_test(model, data.train(seed), optimizer, eval_batches=data.held_out, loss_fn=loss_fn,
                           device=device, **settings)
    stop = f"; {result.stop_reason}" if result.stop_reason else ""
    say(f"advise: range test seed {seed}: {result.ramp} {result.start_lr:.3g} -> {settings['end_lr']:.3g}, "
        f"{len(result.history)} iterations{stop}")
    return result


def rule_suggestions(results: Sequence[RangeTestResult]) -> pd.DataFrame:
    """Every rule's max LR per range test (NaN where it could not decide or proposed no
    positive LR) and the median over the tests that decided; one row per rule."""
    table = pd.DataFrame({f"seed_{i}": {name: (s.max_lr if s.max_lr is not None and s.max_lr > 0 else math.nan)
                                        for name, s in result.suggestions.items()}
                          for i, result in enumerate(results)})
    table["median"] = table.median(axis=1, skipna=True)
    return table.rename_axis("rule")


def candidates(suggestions: pd.DataFrame) -> list[tuple[float, list[str]]]:
    """The distinct suggested max LRs, ascending, each with the rules behind it: medians
    within CANDIDATE_MERGE_RATIO of a group's lowest join that group, which the lower median
    of its members stands for."""
    medians = suggestions["median"].dropna().sort_values()
    groups: list[list[tuple[str, float]]] = []
    for rule, lr in medians.items():
        if groups and lr <= CANDIDATE_MERGE_RATIO * groups[-1][0][1]:
            groups[-1].append((rule, lr))
        else:
            groups.append([(rule, lr)])
    return [(group[(len(group) - 1) // 2][1], [rule for rule, _ in group]) for group in groups]


def grid(lowest: float, highest: float, ceiling: float, points: int) -> list[float]:
    """`points` LRs of the log grid below `lowest` and as many above `highest`, those only
    below `ceiling` (where a range test diverged, or the highest LR the tests ran)."""
    below = [lowest / GRID_FACTOR ** k for k in range(points, 0, -1)]
    above = [highest * GRID_FACTOR ** k for k in range(1, points + 1)]
    return below + [lr for lr in above if lr < ceiling]


def _ceiling(results: Sequence[RangeTestResult]) -> float:
    diverged = [result.diverged["lr"] for result in results if result.diverged is not None]
    return min(diverged) if diverged else max(float(result.history["lr"].max()) for result in results)


def _plan_trials(suggestions: pd.DataFrame, results: Sequence[RangeTestResult], grid_points: int, left: int,
                 total: int, test_length: int, budget_total: int) -> tuple[pd.DataFrame, int]:
    """The max LRs to try (max_lr, source, rules) and each trial's length: the budget left
    shared out, capped at the real training's length. Grid points go first when it cannot give
    every trial a range test's length; a budget too small even then is a ValueError."""
    found = candidates(suggestions)
    if not found:
        raise ValueError("no rule suggested a max LR on any range test: see advice's range tests "
                         "(a wider range, or more iterations)")
    rows = [{"max_lr": lr, "source": "rule", "rules": ", ".join(rules)} for lr, rules in found]
    points = grid(found[0][0], found[-1][0], _ceiling(results), grid_points)
    rows += [{"max_lr": lr, "source": "grid", "rules": ""} for lr in points]
    length = min(total, left // len(rows))
    if length < test_length and points:
        rows, length = rows[:len(found)], min(total, left // len(found))
    if length < test_length:
        needed = budget_total - left + len(found) * test_length
        raise ValueError(f"the range tests proposed {len(found)} distinct max LRs: trials of at least "
                         f"{test_length} iterations each need a budget of {needed}, got {budget_total}")
    return pd.DataFrame(rows).sort_values("max_lr", ignore_index=True), length


def _run_trials(model: nn.Module, optimizer: torch.optim.Optimizer, initial: tuple, data: AdviceData,
                planned: pd.DataFrame, length: int, params: dict[str, Any], divisor: float, seed: int,
                loss_fn: Callable, device: torch.device, say: Callable[[str], None]) -> pd.DataFrame:
    """One short 1cycle per planned max LR, each from the initial weights and optimizer state,
    over the same batches (seed's order), scored on the held-out part."""
    ratios = group_ratios(optimizer)
    rows = []
    for row in planned.to_dict("records"):
        put_back(model, optimizer, initial)
        torch.manual_seed(seed)
        schedule = make_schedule("smith_1cycle", length, base_lr=row["max_lr"] / divisor, max_lr=row["max_lr"],
                                 **params)
        ran, diverged = train_trial(model, optimizer, data.train(seed), schedule, ratios, loss_fn, device)
        loss, accuracy = (math.nan, math.nan) if diverged else evaluate(
            model, data.held_out, loss_fn, device=device, what="held-out batches")
        rows.append({**row, "base_lr": row["max_lr"] / divisor, "iterations": ran, "diverged": diverged is not None,
                     "divergence": diverged or "", "held_out_loss": loss, "held_out_accuracy": accuracy})
        outcome = f"diverged ({diverged})" if diverged else f"held-out accuracy {100 * accuracy:.2f} %"
        say(f"advise: trial max_lr {row['max_lr']:.4g} ({row['rules'] or 'grid'}): {ran} iterations, {outcome}")
    return pd.DataFrame(rows)


def train_trial(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable, schedule: Schedule,
                ratios: Sequence[float], loss_fn: Callable, device: torch.device) -> tuple[int, str | None]:
    """Train `schedule.steps` iterations over passes of `batches` at the schedule's LR (times
    each group's ratio) and momentum; return the iterations run and why it diverged, or None."""
    model.train()
    it, first = 0, None
    while it < schedule.steps:
        in_pass = 0
        for batch in batches:
            if it == schedule.steps:
                break
            x, y = batch_pair(batch, "the training batches")
            apply_schedule(optimizer, schedule, it, group_scales=ratios)
            loss = loss_fn(model(move_to(x, device)), move_to(class_targets(y), device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            first = value if first is None else first
            it, in_pass = it + 1, in_pass + 1
            reason = training_divergence(value, first, TRIAL_DIVERGENCE_FACTOR)
            if reason is not None:
                return it, reason
        if in_pass == 0:
            raise ValueError("the training batches yielded no batch: a trial needs at least one per pass")
    return it, None


def _choose(trials: pd.DataFrame) -> float:
    """The max LR of the best held-out accuracy (trials are in ascending LR, so a tie goes to
    the lower LR, the one farther from divergence); marks it in `trials`."""
    scored = trials["held_out_accuracy"].to_numpy(dtype=float)
    if np.isnan(scored).all():
        raise ValueError(f"every trial diverged (max LRs {', '.join(f'{lr:.3g}' for lr in trials['max_lr'])}): "
                         "the range tests' suggestions are too high for this training")
    best = int(np.nanargmax(scored))
    trials["chosen"] = [i == best for i in range(len(trials))]
    return float(trials["max_lr"].iloc[best])
