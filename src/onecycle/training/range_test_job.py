"""`onecycle range-test`: one LR range test of the workflow, from a config to its files.

Builds data, model and optimizer from a RangeTestConfig, runs onecycle.range_test.lr_range_test,
and writes history.csv, bounds.json (every rule's suggestion and the chosen bounds) and, last,
metrics.json (onecycle.bounds.combine_bounds merges several seeds' bounds.json).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from onecycle import bounds as bound_rules
from onecycle import io
from onecycle.experiments.config import ConfigError, RangeTestConfig
from onecycle.experiments.identity import DIGEST_KEY, config_digest
from onecycle.models import build_model, classification_loss
from onecycle.models.fused_batch_norm import use_fused_running_statistics
from onecycle.models.layers import set_batch_norm_shards
from onecycle.training.optim import build_optimizer
from onecycle.progress import SILENT, Progress
from onecycle.range_test import lr_range_test
from onecycle.data.assembly import load_data
from onecycle.training.device import explain_mode_errors, fused_batch_norm, resolve_device, set_mode


class _EpochStream:
    """Adapts data.Batches (epoch(i) -> batches) to a plain iterable that walks epochs 0, 1, ...,
    its inputs in the run's memory format (train.channels_last), as the training run feeds them."""

    def __init__(self, batches: Any, memory_format: torch.memory_format) -> None:
        self.batches = batches
        self.memory_format = memory_format
        self.epoch = 0

    def __iter__(self):
        for x, y in self.batches.epoch(self.epoch):
            yield x.contiguous(memory_format=self.memory_format), y
        self.epoch += 1


class _FixedSet:
    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches.epoch(0))


def run_range_test_job(cfg: RangeTestConfig, out_dir: str | Path, progress: Progress = SILENT) -> dict[str, Any]:
    """`onecycle range-test`: build data and model from a config, run, write history.csv,
    bounds.json and (last) metrics.json, holding the folder (io.run_folder) meanwhile."""
    with io.run_folder(out_dir) as folder, explain_mode_errors(cfg.train.mode):
        return _run_range_test_job(cfg, folder, progress)


def _run_range_test_job(cfg: RangeTestConfig, out_dir: Path, progress: Progress) -> dict[str, Any]:
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
    # The numerics of the trainings that use its bounds: their mode, precision, memory format
    # and batch norm (as onecycle.training.run sets them up).
    set_mode(cfg.train.mode, device)
    if fused_batch_norm(device):
        use_fused_running_statistics(model)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(model, cfg.optim, lr=spec.start_lr)
    # classification_loss: Caffe's total loss, auxiliary heads (GoogLeNet) included. Timed as a
    # training run is (training and evaluations; loading the data is not part of it).
    started = time.perf_counter()
    result = lr_range_test(model, _EpochStream(bundle.train, memory_format), optimizer, start_lr=spec.start_lr,
                           end_lr=spec.end_lr, iterations=spec.iterations, ramp=spec.ramp,
                           eval_batches=_FixedSet(bundle.test), eval_every=spec.eval_every,
                           momentum_range=spec.momentum_range, loss_fn=classification_loss,
                           smoothing=spec.smoothing, divergence_factor=spec.divergence_factor,
                           device=device, restore=False, progress=progress,
                           autocast_dtype=torch.bfloat16 if cfg.train.precision == "bf16" else None)
    wall_time_s = time.perf_counter() - started
    io.write_csv(out_dir / "history.csv", result.history)
    bounds = bounds_record(result.suggestions, spec.bounds_rule, spec.policy_kind, spec.bounds_divisor)
    io.write_json(out_dir / "bounds.json", bounds)
    metrics = {"status": "diverged" if result.diverged else "completed", "name": cfg.name,
               "experiment": cfg.experiment, "seed": cfg.seed, DIGEST_KEY: config_digest(cfg),
               "config": cfg.model_dump(mode="json"),
               "iterations": len(result.history), "iterations_planned": spec.iterations,
               "diverged": result.diverged, "bounds": bounds, "wall_time_s": wall_time_s,
               "provenance": io.provenance(str(device), cfg.seed)}
    io.write_json(out_dir / "metrics.json", metrics)
    return metrics


def bounds_record(suggestions: dict[str, bound_rules.Suggestion], rule: str, policy_kind: str,
                  divisor: float | None) -> dict[str, Any]:
    """Every heuristic's suggestion side by side, and the (base_lr, max_lr) the chosen one gives.

    When it gives none (the rule could not decide, proposed a max LR that is no positive LR, e.g.
    0 at the start of a ramp from 0, or the test was a momentum range test) both are None and
    `no_bounds` says why: the record is still written, and a training that needs the bounds
    fails with that reason (onecycle.training.schedule_setup.resolve_schedule_params)."""
    chosen = suggestions.get(rule)
    base_lr = max_lr = no_bounds = None
    if chosen is None:
        no_bounds = (f"rule {rule!r} made no suggestion" if suggestions else
                     "a momentum range test (start_lr == end_lr) proposes no LR bounds")
    elif chosen.max_lr is None:
        no_bounds = f"rule {rule!r} proposed no max_lr: {chosen.note}"
    else:
        try:
            base_lr, max_lr = bound_rules.lr_bounds(chosen, policy_kind, divisor)
        except ValueError as error:
            no_bounds = str(error)
    record = {"suggestions": {name: {"max_lr": s.max_lr, "lr": s.lr, "note": s.note}
                              for name, s in suggestions.items()},
              "chosen_rule": rule, "policy_kind": policy_kind,
              "divisor": bound_rules.DEFAULT_DIVISORS[policy_kind] if divisor is None else divisor,
              "base_lr": base_lr, "max_lr": max_lr}
    if no_bounds is not None:
        record["no_bounds"] = no_bounds
    return record
