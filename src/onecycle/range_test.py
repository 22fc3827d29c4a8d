"""The LR range test (CLR paper §3.3; SC §3; Part 1 §4.1), as a library call and as a job.

Train for a few hundred iterations while the LR climbs from `start_lr` to `end_lr`; record, per
iteration, lr, momentum, raw and bias-corrected smoothed train loss, and every `eval_every`
iterations the loss and accuracy on a fixed held-out subset: Smith reads test accuracy and
test loss, not only the train loss (docs/paper_reference.md D2). Stop when the loss diverges.

Ramps: "linear" is Smith's (Caffe `triangular` with base 0 and stepsize = max_iter,
docs/paper_reference.md C1: lr = start + (end - start) * it / iterations); "exponential" is fastai's
and torch-lr-finder's (lr = start * (end/start) ** (it / (iterations - 1))).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from onecycle import bounds as bound_rules
from onecycle import io
from onecycle.config import ConfigError, RangeTestConfig
from onecycle.models import build_model, classification_loss
from onecycle.models.layers import set_batch_norm_shards
from onecycle.optim import build_optimizer
from onecycle.train import evaluate, load_data, resolve_device

HISTORY_COLUMNS = ("iteration", "lr", "momentum", "train_loss", "smoothed_loss", "test_loss", "test_accuracy")


def ramp_lr(ramp: str, start_lr: float, end_lr: float, iterations: int, it: int) -> float:
    if ramp == "linear":
        return start_lr + (end_lr - start_lr) * it / iterations
    return start_lr * (end_lr / start_lr) ** (it / (iterations - 1))


@dataclass
class RangeTestResult:
    history: pd.DataFrame
    suggestions: dict[str, bound_rules.Suggestion]
    diverged: dict[str, Any] | None


def lr_range_test(model: nn.Module, train_batches: Iterable, optimizer: torch.optim.Optimizer, *,
                  start_lr: float, end_lr: float, iterations: int, ramp: str = "linear",
                  eval_batches: Iterable | None = None, eval_every: int = 10,
                  momentum_range: tuple[float, float] | None = None,
                  loss_fn: Callable = nn.functional.cross_entropy, smoothing: float = 0.98,
                  divergence_factor: float = 4.0, restore: bool = True) -> RangeTestResult:
    """Run an LR range test on any model, optimizer and batches; return the curve and every
    bound heuristic's suggestion (onecycle.bounds), side by side.

    `train_batches` is re-iterated as often as needed (a DataLoader works); `eval_batches` is
    the fixed held-out set evaluated every `eval_every` iterations (and at the last one).
    With `restore` (default) the model and optimizer are put back as they were, so a library
    user can go on to train from the same starting point.
    """
    if ramp not in ("linear", "exponential"):
        raise ValueError(f"ramp must be 'linear' or 'exponential', got {ramp!r}")
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())) if restore else None
    batches = itertools.chain.from_iterable(itertools.repeat(train_batches))
    rows: list[dict[str, Any]] = []
    average, best_smoothed, diverged = 0.0, math.inf, None
    model.train()
    for it in range(iterations):
        lr = ramp_lr(ramp, start_lr, end_lr, iterations, it)
        momentum = None
        if momentum_range is not None:
            momentum = momentum_range[0] + (momentum_range[1] - momentum_range[0]) * it / iterations
        for group in optimizer.param_groups:
            # A group's lr_mult (Caffe's per-parameter multiplier, onecycle.optim) scales the ramp.
            group["lr"] = lr * group.get("lr_mult", 1.0)
            if momentum is not None:
                group["momentum"] = momentum
        x, y = next(batches)
        loss = classification_loss(model(x), y, loss_fn)  # auxiliary heads included, as Caffe
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        # Bias-corrected EMA (fastai's and torch-lr-finder's smoothing).
        average = smoothing * average + (1 - smoothing) * value
        smoothed = average / (1 - smoothing ** (it + 1))
        row = {"iteration": it, "lr": lr, "momentum": optimizer.param_groups[0].get("momentum"),
               "train_loss": value, "smoothed_loss": smoothed, "test_loss": math.nan, "test_accuracy": math.nan}
        if not math.isfinite(value) or smoothed > divergence_factor * best_smoothed:
            diverged = {"iteration": it, "lr": lr, "loss": value,
                        "reason": f"loss is {value}" if not math.isfinite(value) else
                        f"smoothed loss {smoothed:.4g} exceeds {divergence_factor:g} x its minimum {best_smoothed:.4g}"}
            rows.append(row)
            break
        best_smoothed = min(best_smoothed, smoothed)
        if eval_batches is not None and ((it + 1) % eval_every == 0 or it == iterations - 1):
            row["test_loss"], row["test_accuracy"] = evaluate(model, eval_batches, loss_fn)
        rows.append(row)
    if saved is not None:
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
    history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    # LR bounds only come from an LR ramp; a momentum range test (start_lr == end_lr) has none.
    suggestions = bound_rules.suggest_all(history) if end_lr > start_lr else {}
    return RangeTestResult(history, suggestions, diverged)


class _EpochStream:
    """Adapts data.Batches (epoch(i) -> batches) to a plain iterable that walks epochs 0, 1, ..."""

    def __init__(self, batches: Any) -> None:
        self.batches = batches
        self.epoch = 0

    def __iter__(self):
        yield from self.batches.epoch(self.epoch)
        self.epoch += 1


class _FixedSet:
    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches.epoch(0))


def run_range_test_job(cfg: RangeTestConfig, out_dir: str | Path) -> dict[str, Any]:
    """`onecycle range-test`: build data and model from a config, run, write history.csv,
    bounds.json and (last) metrics.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = cfg.range_test
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    bundle = load_data(cfg, device, eval_subset=spec.eval_subset)
    io.write_json(out_dir / "config.json", cfg.model_dump(mode="json"))
    model = build_model(cfg.model.arch, bundle.num_classes, bundle.in_channels, init=cfg.model.init,
                        **cfg.model.options).to(device)
    try:
        set_batch_norm_shards(model, cfg.train.batch_norm_shards)
    except ValueError as error:
        raise ConfigError(f"train.batch_norm_shards = {cfg.train.batch_norm_shards}: {error}") from None
    optimizer = build_optimizer(model, cfg.optim, lr=spec.start_lr)
    result = lr_range_test(model, _EpochStream(bundle.train), optimizer, start_lr=spec.start_lr,
                           end_lr=spec.end_lr, iterations=spec.iterations, ramp=spec.ramp,
                           eval_batches=_FixedSet(bundle.test), eval_every=spec.eval_every,
                           momentum_range=spec.momentum_range, smoothing=spec.smoothing,
                           divergence_factor=spec.divergence_factor, restore=False)
    io.write_csv(out_dir / "history.csv", result.history)
    bounds = bounds_record(result.suggestions, spec.bounds_rule, spec.policy_kind, spec.bounds_divisor)
    io.write_json(out_dir / "bounds.json", bounds)
    metrics = {"status": "diverged" if result.diverged else "completed", "name": cfg.name,
               "experiment": cfg.experiment, "seed": cfg.seed, "config": cfg.model_dump(mode="json"),
               "iterations": len(result.history), "iterations_planned": spec.iterations,
               "diverged": result.diverged, "bounds": bounds,
               "provenance": io.provenance(str(device), cfg.seed)}
    io.write_json(out_dir / "metrics.json", metrics)
    return metrics


def bounds_record(suggestions: dict[str, bound_rules.Suggestion], rule: str, policy_kind: str,
                  divisor: float | None) -> dict[str, Any]:
    """Every heuristic's suggestion side by side, and the (base_lr, max_lr) the chosen one gives
    (none for a momentum range test, which has no LR suggestions)."""
    chosen = suggestions.get(rule)
    found = chosen is not None and chosen.max_lr is not None
    base_lr, max_lr = bound_rules.lr_bounds(chosen, policy_kind, divisor) if found else (None, None)
    return {"suggestions": {name: {"max_lr": s.max_lr, "lr": s.lr, "note": s.note} for name, s in suggestions.items()},
            "chosen_rule": rule, "policy_kind": policy_kind,
            "divisor": bound_rules.DEFAULT_DIVISORS[policy_kind] if divisor is None else divisor,
            "base_lr": base_lr, "max_lr": max_lr}


def combine_bounds(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The bounds training uses, from several range-test seeds: the median of each seed's
    chosen bounds (robust to one noisy seed); seeds whose rule found nothing are left out.

    `rules` keeps every heuristic's per-seed max_lr and gives its own median bounds the same
    way, so that a run can train at any rule's suggestion (schedule.bounds_rule) and a bounds
    study can report each rule's spread over the seeds.
    """
    found = [r for r in records if r.get("max_lr") is not None]
    first = records[0]
    combined = {"chosen_rule": first["chosen_rule"], "policy_kind": first["policy_kind"],
                "n_seeds": len(records), "n_seeds_with_bounds": len(found),
                "per_seed": [{"base_lr": r.get("base_lr"), "max_lr": r.get("max_lr")} for r in records],
                "base_lr": None, "max_lr": None}
    if found:
        combined["base_lr"] = float(pd.Series([r["base_lr"] for r in found]).median())
        combined["max_lr"] = float(pd.Series([r["max_lr"] for r in found]).median())
    # Records written before bounds_record stored its divisor used the policy's default.
    divisor = first.get("divisor") or bound_rules.DEFAULT_DIVISORS[first["policy_kind"]]
    combined["rules"] = {}
    for rule in first.get("suggestions", {}):
        per_seed = [r["suggestions"].get(rule, {}).get("max_lr") for r in records]
        values = [v for v in per_seed if v is not None]
        median = float(pd.Series(values).median()) if values else None
        combined["rules"][rule] = {"per_seed": per_seed, "n_seeds_with_bounds": len(values),
                                   "max_lr": median, "base_lr": None if median is None else median / divisor}
    return combined
