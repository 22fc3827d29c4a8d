"""Tiny scale: every job of any workflow config runs a handful of iterations (`scale: tiny`).

    snakemake --cores 2 --config scale=tiny                          # configs/paper.yaml, tiny
    snakemake --cores 2 --configfile configs/smoke.yaml --config scale=tiny

How a user checks a new machine and a new copy of the data before the real run: every job of
the config starts, reads its data through the real loaders, builds its real model, runs its
schedule compressed to a few iterations, evaluates, writes its results; the range tests give
bounds and the tables and figures are written. The results go to `<results_dir>-tiny`, never
beside the real ones. The numbers mean nothing.

`tiny_job` rewrites one job's merged settings (experiment base + group, before Part 1's run
protocol and the device are applied, so those act on the tiny job as on the real one):

- train.epochs -> `epochs`, data.train_subset -> `iterations_per_epoch` x the batch, so every
  epoch is `iterations_per_epoch` iterations (of the batch that counts epochs);
- train.batch_size -> at most `batch_size` (but `images_per_shard` per batch-norm shard or
  data-parallel process), as a multiple of everything it must split into (batch-norm shards,
  data-parallel GPUs, Part 1's 4 runs); every LR (LR_PARAMS, the range tests' ramps) x sqrt(tiny
  batch / real batch), the square-root rule (Krizhevsky 2014, arXiv:1404.5997; Hoffer et al. 2017, arXiv:1705.08741).
  Measured on configs/paper.yaml's range tests: at the real LRs the batch-norm nets diverge in
  their first iterations, and with the linear rule (Goyal et al. 2017) LeNet's LRs are too small
  to move its accuracy in 24 iterations; either way some range tests gave no bounds;
- the schedule, compressed in time by f = tiny iterations / real iterations: `*_epochs` keys
  and the iteration keys (ITERATION_PARAMS) become iterations, floored (so a cycle that fit
  still fits: 2*stepsize <= steps), at least 1, with multistep drops kept strictly increasing;
  per-iteration rates (RATE_PARAMS) are compressed with them, and a `gamma_per_epoch` to the
  tiny run's epochs, so the LR falls as far as in the real run;
- train.eval_every_epochs -> 1 and log_every -> 1; train.caffe_test -> `caffe_test_iter`
  batches of at most `batch_size` images;
- range tests: `range_test_iterations` iterations with `range_test_evaluations` evaluations of
  at most `range_test_eval_subset` test images; the LR ramp's ends scale with the batch (as
  above), the momentum ramp keeps its ends.

Not scaled, so still checked at their real size: the models, their input sizes and crops,
eval_batch_size, the test split (scored whole at every evaluation), and the Caffe mean images
(one pass over the whole training split).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from onecycle.experiments.config import ConfigError
from onecycle.experiments.loading import deep_merge
from onecycle.data import DATASETS
from onecycle.training.schedule_setup import GAMMA_PER_EPOCH

# Schedule parameters counted in iterations (onecycle.schedules' policies: Caffe's stepsize,
# stepvalue and poly max_iter, Smith's momentum stepsize).
ITERATION_PARAMS = ("stepsize", "stepvalue", "momentum_stepsize", "max_iter")


def _power_rate(gamma: float, f: Fraction) -> float:
    return float(gamma) ** (1 / float(f))  # gamma**it: gamma' ** (f * it) == gamma ** it


def _linear_rate(gamma: float, f: Fraction) -> float:
    return float(gamma) / float(f)  # (1 + gamma*it): gamma' * (f * it) == gamma * it


# Schedule parameters that are learning rates (onecycle.schedules' policies).
LR_PARAMS = ("base_lr", "max_lr", "final_lr", "lr_max", "eta_min")


# Per-iteration rates, by policy: Caffe exp (base * gamma**it), exp_range (gamma**it on the
# amplitude or both bounds) and inv (base * (1 + gamma*it)**-power).
RATE_PARAMS = {"exp": {"gamma": _power_rate}, "exp_range": {"gamma": _power_rate},
               "inv": {"gamma": _linear_rate}}


@dataclass(frozen=True)
class TinyScale:
    epochs: int = 2                  # two: evaluation, checkpoint and resume between epochs run too
    iterations_per_epoch: int = 4
    batch_size: int = 8
    images_per_shard: int = 2
    caffe_test_iter: int = 2
    # Smith's rules need 3 evaluations before divergence (onecycle.bounds.SMITH_SMOOTHING_WINDOW)
    # and an accuracy that moves. A batch-norm net at batch 8 can stop (smoothed loss 4x its
    # minimum) a third of the way up the ramp, e.g. DenseNet-40 at iteration 8, so every
    # iteration is evaluated: 3 evaluations need only 3 iterations before the stop. 32 images
    # per evaluation keep the 24 evaluations cheap (tests/test_paper_tiny.py runs them all).
    range_test_iterations: int = 24
    range_test_evaluations: int = 24
    range_test_eval_subset: int = 32


TINY = TinyScale()


def tiny_job(raw: dict[str, Any], *, split_into: int, where: str, tiny: TinyScale = TINY) -> dict[str, Any]:
    """`raw` (a job's merged settings, validated later) at tiny scale. `split_into`: what the
    batch must be a multiple of besides its batch-norm shards (data-parallel GPUs, Part 1's runs)."""
    train = raw.get("train", {})
    shards = train.get("batch_norm_shards", 1)
    shards = shards if isinstance(shards, int) and shards > 0 else 1
    batch = train.get("batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool):
        return raw  # let validation name the missing or malformed key
    # At least `images_per_shard` images in every part of the batch normalised on its own (a
    # Caffe shard, a data-parallel process): one image makes the statistics that of one image
    # (torch's batch norm refuses it on a 1x1 map), and the evaluations noise.
    target = max(min(batch, tiny.batch_size), tiny.images_per_shard * max(shards, split_into))
    multiple = math.lcm(shards, split_into)
    tiny_batch = multiple * math.ceil(target / multiple)
    # The square-root rule (module docstring), per batch that counts epochs (Part 1's nominal TBS).
    lr_scale = math.sqrt(tiny_batch / (train.get("epoch_batch_size") or batch))
    overrides: dict[str, Any] = {
        "data": {"train_subset": tiny.iterations_per_epoch * tiny_batch},
        "train": {"batch_size": tiny_batch, "log_every": 1},
    }
    if train.get("epoch_batch_size") is not None:
        overrides["train"]["epoch_batch_size"] = tiny_batch
    if isinstance(train.get("caffe_test"), dict):
        caffe_test = train["caffe_test"]
        overrides["train"]["caffe_test"] = {"test_iter": min(caffe_test.get("test_iter", 1), tiny.caffe_test_iter),
                                            "batch": min(caffe_test.get("batch", tiny_batch), tiny_batch)}
    if "range_test" in raw:
        spec = raw["range_test"]
        overrides["range_test"] = {
            **{key: _scaled_lr(spec[key], lr_scale) for key in ("start_lr", "end_lr") if _numbers(spec.get(key))},
            "iterations": tiny.range_test_iterations,
            "eval_every": tiny.range_test_iterations // tiny.range_test_evaluations,
            "eval_subset": min(spec.get("eval_subset", tiny.range_test_eval_subset), tiny.range_test_eval_subset),
        }
    if isinstance(raw.get("schedule"), dict):
        overrides["train"].update({"epochs": tiny.epochs, "eval_every_epochs": 1})
    scaled = deep_merge(raw, overrides)
    if isinstance(raw.get("schedule"), dict):  # replaced whole: *_epochs keys become iterations
        scaled["schedule"] = {**raw["schedule"], "params": _tiny_schedule(raw, tiny, lr_scale, where)}
    return scaled


def _scaled_lr(lr: float, scale: float) -> float:
    return float(lr) * scale


def _tiny_schedule(raw: dict[str, Any], tiny: TinyScale, lr_scale: float, where: str) -> dict[str, Any]:
    schedule = raw["schedule"]
    params = dict(schedule.get("params") or {})
    epochs = raw.get("train", {}).get("epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        return params  # validation names train.epochs
    steps = tiny.epochs * tiny.iterations_per_epoch
    scaled: dict[str, Any] = {}
    # *_epochs keys: the same fraction of the run, in iterations.
    for key, value in params.items():
        if key.endswith("_epochs") and _numbers(value):
            scaled[key.removesuffix("_epochs")] = _compress(value, Fraction(steps) / Fraction(epochs))
    real_steps = _real_steps(raw, epochs)
    policy_rates = RATE_PARAMS.get(schedule.get("policy"), {})
    timed = [key for key in params if key in ITERATION_PARAMS or key in policy_rates]
    if timed and real_steps is None:
        raise ConfigError(f"{where}: tiny scale: schedule.params {', '.join(timed)} count iterations, but "
                          f"{raw['data']['dataset']}'s epoch length is known only from its folder: give them "
                          "in epochs (*_epochs) to run at tiny scale")
    for key, value in params.items():
        if key.endswith("_epochs") and _numbers(value):
            continue
        if key in ITERATION_PARAMS and _numbers(value):
            scaled[key] = _compress(value, Fraction(steps, real_steps))
        elif key in policy_rates and _numbers(value):
            scaled[key] = policy_rates[key](value, Fraction(steps, real_steps))
        elif key == GAMMA_PER_EPOCH and _numbers(value) and not isinstance(value, list):
            # The run's whole decay, gamma_per_epoch ** epochs, over the tiny run's epochs.
            scaled[key] = float(value) ** (epochs / tiny.epochs)
        elif key in LR_PARAMS and _numbers(value) and not isinstance(value, list):
            scaled[key] = _scaled_lr(value, lr_scale)
        else:
            scaled[key] = value
    return scaled


def _numbers(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _compress(value: Any, factor: Fraction) -> int | list[int]:
    """value x factor in whole iterations: floored, at least 1; a list stays strictly increasing."""
    if not isinstance(value, list):
        return max(1, math.floor(Fraction(value) * factor))
    compressed: list[int] = []
    for v in value:
        iteration = max(1, math.floor(Fraction(v) * factor))
        compressed.append(max(iteration, compressed[-1] + 1) if compressed else iteration)
    return compressed


def _real_steps(raw: dict[str, Any], epochs: int) -> int | None:
    """The real run's iterations (onecycle.training.schedule_setup.schedule_iterations_per_epoch), or None when the
    training set's size is known only from its folder (imagefolder)."""
    data, train = raw.get("data", {}), raw.get("train", {})
    info = DATASETS.get(data.get("dataset"))
    if info is None or info.train_size is None:
        return None
    size = min(data.get("train_subset") or info.train_size, info.train_size)
    return epochs * (size // (train.get("epoch_batch_size") or train["batch_size"]))
