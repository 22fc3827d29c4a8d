"""`onecycle plan`: what a workflow config costs before it runs, and the order that gives verdicts soonest.

    onecycle plan --config configs/paper.yaml [--device-class gpu|cpu] [--tflops X] [--devices N]

Per experiment and in total: jobs, iterations, images processed (trained = forward + backward,
evaluated = forward only), the FLOPs of those passes, and device-hours at a stated throughput.

- FLOPs are measured, not estimated: torch.utils.flop_counter.FlopCounterMode over one forward
  and backward pass (training mode, auxiliary heads included) and one forward pass (evaluation
  mode) of the job's real model, built on the `meta` device (no memory, no arithmetic), on a
  batch of 2 (batch norm in training mode needs 2) divided by 2; cached per (arch, options,
  input shape, classes). FlopCounterMode counts matrix products and convolutions (2 FLOPs per
  multiply-add), not element-wise layers (batch norm, ReLU, pooling).
- Iterations and images follow onecycle.training.run: epochs x (training images // the batch that
  counts epochs), each iteration one batch; an evaluation of the whole test set (plus Caffe's
  test sample) after every `eval_every_epochs` passes over the data and after the last; range
  tests `iterations` batches and an evaluation of `eval_subset` test images every `eval_every`.
  A run that diverges stops early: the plan is what the config asks for.
- Device-hours = training FLOPs / training rate + evaluation FLOPs / evaluation rate, at the
  rates of the job's family (onecycle.experiments.rates: in-memory datasets or image folders),
  effective rates (FLOPs counted as above per second of a real run, data loading included):
  what `make gpu-check` measured on this machine, else a stated default, or --tflops for all.
  A data-parallel job spreads the same FLOPs over its GPUs. Not counted: the data jobs
  (downloads, the Caffe caches of the ImageNet folders: one CPU-bound decoding pass over each
  split).
- The data path is assumed to keep every device fed, so that the rate is the model's alone:
  MNIST and CIFAR sit in device memory (data.Batches); ImageNet folders under Caffe's data
  layer read images decoded once (data.squash_cache) and crop whole batches on the device
  (data.caffe_batches), where the per-sample path decoded every JPEG every epoch (make bench:
  tests/benchmarks/test_bench_data.py times the two; docs/gpus_and_clusters.md).
- The suggested order puts the experiments with published numbers first, cheapest first, so the
  first verdicts come soonest; then the rest, cheapest first.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onecycle import data as datasets
from onecycle.experiments.config import ConfigError, RangeTestConfig, RunConfig
from onecycle.experiments.expansion import Job, Plan
from onecycle.experiments.rates import Rates, job_family

# Imagenette v2 (fastai/imagenette README; the `imagefolder` default), when its folder is not here.
IMAGENETTE_SIZES = {"train": 9469, "test": 3925}
FLOP_BATCH = 2


@dataclass(frozen=True)
class JobCost:
    job_id: str
    experiment: str
    kind: str
    family: str  # onecycle.experiments.rates.FAMILIES: which rates price it
    iterations: int
    train_images: int  # forward + backward
    eval_images: int   # forward only
    train_flops: float
    eval_flops: float

    @property
    def flops(self) -> float:
        return self.train_flops + self.eval_flops

    def device_hours(self, rates: Rates) -> float:
        rate = rates.families[self.family]
        return (self.train_flops / rate.train_tflops + self.eval_flops / rate.eval_tflops) / 1e12 / 3600


@functools.lru_cache(maxsize=None)
def model_flops(arch: str, options: str, in_channels: int, side: int, num_classes: int) -> tuple[float, float]:
    """(forward + backward FLOPs per image in training mode, forward FLOPs per image in evaluation
    mode) of the registered model, measured with FlopCounterMode on the meta device. `options`:
    the model's options as sorted JSON (a cache key)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from onecycle.models import build_model, classification_loss

    with torch.device("meta"):
        model = build_model(arch, num_classes, in_channels, **json.loads(options))
        x = torch.empty(FLOP_BATCH, in_channels, side, side)
        y = torch.zeros(FLOP_BATCH, dtype=torch.long)
    model.train()
    with FlopCounterMode(display=False) as counter:
        classification_loss(model(x), y).backward()
    train = counter.get_total_flops() / FLOP_BATCH
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return train, counter.get_total_flops() / FLOP_BATCH


def split_sizes(cfg: RunConfig | RangeTestConfig) -> tuple[int, int]:
    """(training images the job uses, test images) of its dataset."""
    d = cfg.data
    info = datasets.DATASETS[d.dataset]
    if info.train_size is not None:
        train, test = info.train_size, info.test_size
    else:
        train, test = _folder_sizes(d)
    return min(d.train_subset or train, train), test


def _folder_sizes(d: Any) -> tuple[int, int]:
    root = Path(d.root) if d.root else datasets.default_root(d.dataset)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return tuple(len(datasets.load_split(d.dataset, split, root, class_list=d.classes))
                     for split in ("train", "test"))
    if d.classes is None:  # Imagenette's ten classes: its published sizes
        return IMAGENETTE_SIZES["train"], IMAGENETTE_SIZES["test"]
    raise ConfigError(f"{d.dataset} with data.classes {d.classes!r}: its size is known only from its "
                      f"folder, and {root} has no train/ and val/")


def input_shape(cfg: RunConfig | RangeTestConfig) -> tuple[int, int, int]:
    """(channels, side, classes) the model sees: folder datasets at their crop size."""
    from onecycle.models import MODELS

    info = datasets.DATASETS[cfg.data.dataset]
    if cfg.data.dataset in datasets.FOLDER_DATASETS:
        side = cfg.data.crop_size or MODELS[cfg.model.arch].input_size
        classes = len(cfg.data.classes) if isinstance(cfg.data.classes, list) else info.num_classes
        return info.in_channels, side, classes
    return info.in_channels, info.image_size, info.num_classes


def _evaluations(passes: int, every: int) -> int:
    """Evaluations after every `every`-th of `passes`, and always after the last."""
    return passes // every + (1 if passes % every else 0)


def job_cost(job: Job) -> JobCost:
    if job.kind == "train":
        cfg = RunConfig.model_validate(job.config)
        train_size, test_size = split_sizes(cfg)
        t = cfg.train
        iterations = t.epochs * (train_size // (t.epoch_batch_size or t.batch_size))
        data_passes = math.ceil(iterations / (train_size // t.batch_size))
        caffe_sample = t.caffe_test.test_iter * t.caffe_test.batch if t.caffe_test else 0
        eval_images = _evaluations(data_passes, t.eval_every_epochs) * (test_size + caffe_sample)
    else:
        cfg = RangeTestConfig.model_validate(job.config)
        train_size, test_size = split_sizes(cfg)
        spec = cfg.range_test
        iterations = spec.iterations
        # onecycle.data.assembly.load_data: folder datasets are always scored on their whole split.
        scored = test_size if cfg.data.dataset in datasets.FOLDER_DATASETS else min(spec.eval_subset, test_size)
        eval_images = _evaluations(iterations, spec.eval_every) * scored
    train_images = iterations * cfg.train.batch_size
    options = json.dumps(cfg.model.options, sort_keys=True)
    train_flops, eval_flops = model_flops(cfg.model.arch, options, *input_shape(cfg))
    return JobCost(job.job_id, job.experiment, job.kind, job_family(cfg.data.dataset), iterations, train_images,
                   eval_images, train_images * train_flops, eval_images * eval_flops)


def experiment_costs(plan: Plan) -> dict[str, list[JobCost]]:
    return {name: [job_cost(job) for job in [*plan.experiment_range_tests(name), *plan.experiment_trains(name)]]
            for name in plan.workflow.experiments}


def device_hours(costs: list[JobCost], rates: Rates) -> float:
    return sum(cost.device_hours(rates) for cost in costs)


def suggested_order(plan: Plan, costs: dict[str, list[JobCost]]) -> list[str]:
    """Experiments with published numbers first (their verdicts), cheapest first; then the rest."""
    def key(name: str) -> tuple[bool, float, str]:
        return (not plan.workflow.experiments[name].published, sum(c.flops for c in costs[name]), name)

    return sorted(costs, key=key)


def _si(value: float) -> str:
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def _rates_header(rates: Rates) -> str:
    rates_seen = set(rates.families.values())
    if len(rates_seen) == 1:
        (rate,) = rates_seen
        if rate.train_tflops == rate.eval_tflops:
            return f"at {rate.train_tflops:g} TFLOP/s per device ({rate.source})."
    return "at these rates per device and job family:\n" + rates.describe()


def format_plan(plan: Plan, rates: Rates, config_path: str, devices: int = 1) -> str:
    """The printed plan: one row per experiment, the totals, and the suggested order."""
    costs = experiment_costs(plan)
    header = (f"{'experiment':<42} {'pub':>3} {'jobs':>5} {'iterations':>10} {'images':>8} "
              f"{'FLOPs':>8} {'device-h':>9}")
    lines = [f"Cost plan of {len(plan.trains)} trainings and {len(plan.range_tests)} range tests "
             f"{_rates_header(rates)}",
             "images: trained (forward+backward) + evaluated (forward); FLOPs measured with "
             "torch.utils.flop_counter on each real model.", "", header, "-" * len(header)]
    total = {"jobs": 0, "iterations": 0, "images": 0, "flops": 0.0, "hours": 0.0}
    for name, jobs in costs.items():
        row = {"jobs": len(jobs), "iterations": sum(c.iterations for c in jobs),
               "images": sum(c.train_images + c.eval_images for c in jobs), "flops": sum(c.flops for c in jobs),
               "hours": device_hours(jobs, rates)}
        published = len(plan.workflow.experiments[name].published)
        lines.append(f"{name:<42} {published or '':>3} {row['jobs']:>5} {_si(row['iterations']):>10} "
                     f"{_si(row['images']):>8} {_si(row['flops']):>8} {row['hours']:>9.2f}")
        total = {k: total[k] + row[k] for k in total}
    hours = total["hours"]
    lines += ["-" * len(header),
              f"{'total':<42} {'':>3} {total['jobs']:>5} {_si(total['iterations']):>10} {_si(total['images']):>8} "
              f"{_si(total['flops']):>8} {hours:>9.2f}",
              "", f"Total: {hours:,.0f} device-hours = {hours / 24:,.1f} device-days; on {devices} device(s) "
                  f"about {hours / devices / 24:,.1f} days if they are kept busy.",
              "", "Suggested order (published numbers first, cheapest first: the first verdicts soonest):"]
    cumulative = 0.0
    for rank, name in enumerate(suggested_order(plan, costs), start=1):
        hours_here = device_hours(costs[name], rates)
        cumulative += hours_here
        published = len(plan.workflow.experiments[name].published)
        what = f"{published} published rows" if published else "no published numbers"
        lines.append(f"{rank:>3}. {name:<42} {hours_here:>9.2f} h  (cumulative {cumulative:>9.2f} h; {what})")
    first = suggested_order(plan, costs)[0]
    lines += ["", "Run one experiment (its table, and everything it needs) with, e.g.:",
              f"    snakemake --cores all --resources gpu={devices} --configfile {config_path} "
              f"{plan.results_dir / 'tables' / first}.md"]
    return "\n".join(lines)
