"""`onecycle advise --config RUN.yaml --out DIR`: onecycle.advice.advise on a run config's data,
model and optimizer, and a run config ready to train at its pick.

Builds the model and optimizer as `onecycle train` does, holds out `advise.holdout` of the
training images (in-memory datasets: the folder datasets stream from disk and are not split
here), and writes into DIR: trials.csv (each max LR tried and its held-out score),
suggestions.csv (each rule's max LR per range-test seed), advice.json (the pick, the schedule,
the cost), run.json (the run config at the pick: `onecycle train --config DIR/run.json`) and,
with matplotlib, advice.png.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from onecycle import data as datasets
from onecycle import io
from onecycle.advice import Advice, advise
from onecycle.advice_data import AdviceData
from onecycle.data.assembly import normalisation
from onecycle.experiments.advise_config import AdviseConfig
from onecycle.experiments.config import ConfigError
from onecycle.models import build_model, classification_loss
from onecycle.models.layers import set_batch_norm_shards
from onecycle.training.device import resolve_device, set_mode
from onecycle.training.optim import build_optimizer
from onecycle.training.range_test_job import _EpochStream, _FixedSet  # Batches as re-iterables
from onecycle.training.schedule_setup import schedule_iterations_per_epoch

# What the range test reads from a `range_test` block (the rest of RangeTestSpec is the
# workflow's: which rule feeds training, its held-out subset of the test set).
_RANGE_TEST_KEYS = ("start_lr", "end_lr", "iterations", "ramp", "eval_every", "smoothing", "divergence_factor")


def run_advise_job(cfg: AdviseConfig, out_dir: str | Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Advise on `cfg`'s max LR and write DIR's files (the module's docstring), holding the
    folder (io.run_folder) meanwhile; returns advice.json's record."""
    with io.run_folder(out_dir) as folder:
        device = resolve_device(cfg.train.device)
        set_mode(cfg.train.mode, device)
        torch.manual_seed(cfg.seed)
        data, num_classes, in_channels = advice_data(cfg, device)
        model = build_model(cfg.model.arch, num_classes, in_channels, init=cfg.model.init,
                            **cfg.model.options).to(device)
        try:
            set_batch_norm_shards(model, cfg.train.batch_norm_shards)
        except ValueError as error:
            raise ConfigError(f"train.batch_norm_shards = {cfg.train.batch_norm_shards}: {error}") from None
        spec, ramp = cfg.advise, _range_test(cfg)
        optimizer = build_optimizer(model, cfg.optim, lr=ramp.get("start_lr", 0.0))
        try:
            advice = advise(model, optimizer, data, epochs=cfg.train.epochs, budget=spec.budget,
                            budget_iterations=spec.budget_iterations, seeds=spec.seeds, range_test=ramp,
                            schedule_params=schedule_params(cfg, data.steps_per_epoch), divisor=_divisor(cfg),
                            grid_points=spec.grid_points, loss_fn=classification_loss, device=device, log=log)
        except ValueError as error:  # the budget, the schedule's parameters: the config's to fix
            raise ConfigError(f"{cfg.name}: {error}") from None
        return _write(folder, cfg, advice, device, log)


def advice_data(cfg: AdviseConfig, device: torch.device) -> tuple[AdviceData, int, int]:
    """The run's training images split into a part to train on and `advise.holdout` held out
    (a permutation seeded by the run's seed), batched and normalised as `onecycle train` does
    (the statistics of all the training images); the number of classes and of input channels."""
    d = cfg.data
    if d.dataset in datasets.FOLDER_DATASETS:
        raise ConfigError(f"data.dataset {d.dataset!r}: onecycle advise --config splits in-memory datasets "
                          "only; call onecycle.advise with a DataLoader over the folder instead")
    root = Path(d.root) if d.root else None
    train_set = datasets.load_split(d.dataset, "train", root, subset=d.train_subset)
    common = {**normalisation(d, train_set, root), "device": device}
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(cfg.seed))
    held = round(cfg.advise.holdout * len(train_set))
    if not cfg.train.batch_size <= len(train_set) - held:
        raise ConfigError(f"advise.holdout = {cfg.advise.holdout} leaves {len(train_set) - held} training images, "
                          f"fewer than train.batch_size = {cfg.train.batch_size}")

    def part(indices: torch.Tensor) -> datasets.ArrayDataset:
        return datasets.ArrayDataset(train_set.images[indices], train_set.labels[indices], train_set.num_classes)

    held_out, kept = part(order[:held]), part(order[held:])

    # The trials run in fp32 on a contiguous model: onecycle.advise takes no autocast dtype or
    # memory format (train.precision and train.channels_last are the real run's).
    def train(seed: int) -> _EpochStream:
        return _EpochStream(datasets.Batches(kept, cfg.train.batch_size, shuffle=True, drop_last=True,
                                             augment=d.augment, seed=seed, order=d.order, **common),
                            torch.contiguous_format)

    scored = _FixedSet(datasets.Batches(held_out, cfg.train.eval_batch_size, shuffle=False, drop_last=False,
                                        augment="none", seed=0, **common))
    info = datasets.DATASETS[d.dataset]
    steps = schedule_iterations_per_epoch(cfg.train, len(train_set))
    return AdviceData(train, scored, steps), info.num_classes, info.in_channels


def schedule_params(cfg: AdviseConfig, steps_per_epoch: int) -> dict[str, Any]:
    """The run's smith_1cycle parameters as advise takes them: the LRs left out (advise picks
    them) and the climb as pct_start, a fraction of the run, so that it scales to the trials."""
    params: dict[str, Any] = {}
    total = cfg.train.epochs * steps_per_epoch
    for key, value in cfg.schedule.params.items():
        if key in ("base_lr", "max_lr"):
            continue
        if key == "stepsize_epochs":
            params["pct_start"] = value / cfg.train.epochs
        elif key == "stepsize":
            params["pct_start"] = value / total
        elif key.endswith("_epochs"):
            raise ConfigError(f"schedule.params.{key}: advise scales the schedule to its short trials and "
                              f"cannot scale {key}; leave it out")
        else:
            params[key] = value
    return params


def _range_test(cfg: AdviseConfig) -> dict[str, Any]:
    if cfg.range_test is None:
        return {}
    return {key: getattr(cfg.range_test, key) for key in _RANGE_TEST_KEYS}


def _divisor(cfg: AdviseConfig) -> float:
    """base_lr = max_lr / divisor: the range test block's bounds_divisor, else Smith's 10 (D2)."""
    if cfg.range_test is not None and cfg.range_test.bounds_divisor is not None:
        return cfg.range_test.bounds_divisor
    return 10.0


def _write(folder: Path, cfg: AdviseConfig, advice: Advice, device: torch.device,
           log: Callable[[str], None]) -> dict[str, Any]:
    io.write_csv(folder / "trials.csv", advice.trials)
    io.write_csv(folder / "suggestions.csv", advice.suggestions.reset_index())
    run = cfg.model_dump(mode="json", exclude={"range_test", "advise"})
    run["schedule"] = {**run["schedule"], "lr_bounds": "config", "bounds_rule": None,
                       "params": {**run["schedule"]["params"], "base_lr": advice.base_lr, "max_lr": advice.max_lr}}
    io.write_json(folder / "run.json", run)
    record = {"name": cfg.name, "max_lr": advice.max_lr, "base_lr": advice.base_lr,
              "schedule": {"policy": "smith_1cycle", "steps": advice.total_steps},
              "cost_iterations": advice.cost_iterations, "budget_iterations": advice.budget_iterations,
              "total_steps": advice.total_steps, "trial_iterations": advice.trial_iterations,
              "config": cfg.model_dump(mode="json"), "provenance": io.provenance(str(device), cfg.seed)}
    try:
        figure = advice.plot()
    except ModuleNotFoundError as error:  # matplotlib is onecycle[plots]'s
        log(f"advise: no figure ({error})")
    else:
        with io.atomic_path(folder / "advice.png") as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    io.write_json(folder / "advice.json", record)
    return record
