"""One training run, top to bottom: data, model, schedule, SGD, full-test-set evaluation.

Faithfulness and safety rules this loop keeps:
- the LR (and momentum) of iteration `it` comes from a closed-form schedule, so a resumed run
  needs only the iteration count (docs/design.md §4);
- evaluation is on the full test set after every epoch (a partial test set changes results);
- batch order and augmentation are a pure function of (seed, epoch), and the checkpoint keeps
  model, optimizer, iteration and the torch RNG (dropout), so a killed run resumes bit for bit
  on CPU;
- a diverging run (NaN/inf loss, or loss beyond `divergence_factor` x the first loss) ends
  early and still writes its result with status "diverged": the DAG goes on;
- every file is written atomically; metrics.json last, so its presence means "finished";
- under torchrun the run is data-parallel (onecycle.training.distributed): train.batch_size stays the
  total batch, each rank trains on its shard of every global batch, all ranks take the same
  decisions, and rank 0 alone writes files.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from onecycle import data as datasets
from onecycle import io
from onecycle.training import distributed
from onecycle.experiments.config import ConfigError, RunConfig, TrainConfig
from onecycle.evaluation import evaluate
from onecycle.models import build_model, classification_loss
from onecycle.models.layers import set_batch_norm_shards
from onecycle.training.checkpoints import Checkpointer, restore_training_state, training_state
from onecycle.training.device import resolve_device, set_mode
from onecycle.training.optim import build_optimizer
from onecycle.training.schedule_setup import build_schedule, schedule_iterations_per_epoch
from onecycle.progress import SILENT, Progress
from onecycle.schedules import Schedule, apply_schedule
from onecycle.data.assembly import load_data

def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule, it: int,
               x: torch.Tensor, y: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """One SGD iteration at the schedule's LR and momentum for `it`; returns the (detached)
    loss without syncing the device. `autocast_dtype` (bf16) runs forward and loss under
    autocast; weights, gradients and the optimizer stay fp32."""
    apply_schedule(optimizer, schedule, it)
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        # Caffe's total loss: with GoogLeNet's auxiliary heads, main + 0.3 x each auxiliary.
        loss = classification_loss(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def divergence_reason(loss: float, first_loss: float | None, factor: float) -> str | None:
    if not math.isfinite(loss):
        return f"loss is {loss}"
    if first_loss is not None and loss > factor * first_loss:
        return f"loss {loss:.4g} exceeds {factor:g} x the first loss {first_loss:.4g}"
    return None


def _summary(row: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("epoch", "iteration", "test_accuracy", "test_loss")
    summary = {k: (row[k] if row else None) for k in keys}
    if row and "caffe_test_accuracy" in row:
        summary["caffe_test_accuracy"] = row["caffe_test_accuracy"]
    return summary


def train(cfg: RunConfig, out_dir: str | Path, bounds: dict[str, Any] | None = None,
          progress: Progress = SILENT) -> dict[str, Any]:
    """Run (or resume) one training run; write history.csv, train_log.csv, metrics.json.
    `progress` hears of every iteration and evaluation (onecycle.progress; silent by default).

    Started by torchrun (WORLD_SIZE > 1), this process is one rank of a data-parallel run
    (onecycle.training.distributed): every rank returns the same metrics, rank 0 alone writes files
    and reports progress."""
    distributed.check_batch_size(cfg.train.batch_size, distributed.world_size_from_env(),
                                 cfg.train.batch_norm_shards)
    ctx, device = distributed.init(resolve_device(cfg.train.device))
    try:
        if not ctx.is_main:  # rank 0 alone writes the run folder, and holds it
            return _train(cfg, Path(out_dir), bounds, ctx, device, SILENT)
        with io.run_folder(out_dir) as folder:
            return _train(cfg, folder, bounds, ctx, device, progress)
    finally:
        distributed.shutdown(ctx)


def _train(cfg: RunConfig, out_dir: Path, bounds: dict[str, Any] | None,
           ctx: distributed.Context, device: torch.device, progress: Progress) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # Provenance of the code that starts the run (files edited while it runs do not count).
    provenance = io.provenance(str(device), cfg.seed)
    torch.manual_seed(cfg.seed)
    bundle = load_data(cfg, device)
    iters_per_epoch = len(bundle.train)  # of the data: one pass over the training images
    # Single process: the bundle's batches themselves. Data-parallel: this rank's shards.
    train_batches, test_batches = ctx.train_batches(bundle.train), ctx.test_batches(bundle.test)
    caffe_test = None if bundle.caffe_test is None else ctx.test_batches(bundle.caffe_test)
    schedule_ipe = schedule_iterations_per_epoch(cfg.train, bundle.train_size)
    schedule, schedule_params = build_schedule(cfg, schedule_ipe, bounds)
    resolved = {**cfg.model_dump(mode="json"),
                "schedule_resolved": {"policy": schedule.name, "steps": schedule.steps,
                                      "params": schedule_params},
                "iterations_per_epoch": iters_per_epoch, "bounds": bounds}
    if cfg.train.epoch_batch_size is not None:
        # Epochs counted in another batch (only then: other runs' configs stay as they were).
        resolved["schedule_iterations_per_epoch"] = schedule_ipe
    if ctx.enabled:
        # Data-parallel processes; per-device batch = train.batch_size / world_size. Only then:
        # a one-process run's config (and so its checkpoints) stays as before.
        resolved["world_size"] = ctx.world_size
    if ctx.is_main:
        io.write_json(out_dir / "config.json", resolved)

    model = build_model(cfg.model.arch, bundle.num_classes, bundle.in_channels, init=cfg.model.init,
                        **cfg.model.options).to(device)
    train_cfg: TrainConfig = cfg.train
    try:
        set_batch_norm_shards(model, distributed.local_batch_norm_shards(train_cfg.batch_norm_shards, ctx.world_size))
    except ValueError as error:
        raise ConfigError(f"train.batch_norm_shards = {train_cfg.batch_norm_shards}: {error}") from None
    set_mode(train_cfg.mode, device)
    memory_format = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    autocast_dtype = torch.bfloat16 if train_cfg.precision == "bf16" else None
    optimizer = build_optimizer(model, cfg.optim, lr=schedule.lr(0))
    checkpointer = Checkpointer(out_dir, json.dumps(resolved, sort_keys=True), train_cfg.checkpoint_every_s)

    it, history, log_rows, first_loss, elapsed, resumed_loss_sum = 0, [], [], None, 0.0, 0.0
    state = checkpointer.load()
    if state is not None:
        restore_training_state(state, model, optimizer, ctx)
        it, history, log_rows = state["iteration"], state["history"], state["log_rows"]
        first_loss, elapsed = state["first_loss"], state["elapsed"]
        resumed_loss_sum = state["epoch_loss_sum"]
    elif ctx.rank > 0:
        # Every rank built the same initial weights; from here on each rank draws its own
        # dropout masks (rank 0 keeps the one-process stream).
        torch.manual_seed(datasets.derived_seed("rank", cfg.seed, ctx.rank))
    # Data-parallel: DistributedDataParallel averages the shards' gradients. Evaluation and
    # checkpoints use the bare `model` (rank 0's weights and buffers).
    net = ctx.wrap(model, device)

    def snapshot(epoch_loss_sum: float = 0.0, elapsed_now: float | None = None) -> dict[str, Any]:
        return training_state(model, optimizer, ctx, iteration=it, history=history, log_rows=log_rows,
                              first_loss=first_loss, elapsed=elapsed if elapsed_now is None else elapsed_now,
                              epoch_loss_sum=epoch_loss_sum)

    def save_checkpoint(epoch_loss_sum: float = 0.0, elapsed_now: float | None = None) -> None:
        state = snapshot(epoch_loss_sum, elapsed_now)
        if ctx.is_main:
            checkpointer.save(state)

    diverged = None
    net.train()
    # The schedule's steps are the run: whole passes over the data, the last one cut short when
    # the epochs are counted in another batch (train.epoch_batch_size).
    data_epochs = math.ceil(schedule.steps / iters_per_epoch)
    start_epoch, skip = divmod(it, iters_per_epoch)
    threads = torch.get_num_threads()
    progress.start(schedule.steps, it, note=f"{data_epochs} epochs of {iters_per_epoch}, {device}, "
                                            f"{threads} torch thread{'s' if threads > 1 else ''}")
    for epoch in range(start_epoch, data_epochs):
        epoch_iters = min(iters_per_epoch, schedule.steps - epoch * iters_per_epoch)
        epoch_start = time.perf_counter()
        # Under DDP each rank sums its shards' losses; the mean over ranks is the global one
        # (a resumed sum, itself global, is carried by every rank and survives that mean).
        loss_sum = torch.tensor(resumed_loss_sum if skip else 0.0, device=device)
        for batch_index, (x, y) in enumerate(train_batches.epoch(epoch)):
            if batch_index == epoch_iters:
                break
            if batch_index < skip:  # resuming mid-epoch: the same batches, already trained on
                continue
            loss = train_step(net, optimizer, schedule, it, x.contiguous(memory_format=memory_format), y,
                              autocast_dtype)
            loss_sum += loss
            it += 1
            main_due, value = False, None
            if it % train_cfg.log_every == 0 or first_loss is None or batch_index == epoch_iters - 1:
                # .item() syncs the device: only on logged iterations. Under DDP one all-reduce
                # gives every rank the global batch's mean loss and rank 0's checkpoint clock,
                # so all ranks log, stop and checkpoint together.
                value, main_due = ctx.step_values(loss, checkpointer.due())
                first_loss = value if first_loss is None else first_loss
                log_rows.append({"iteration": it - 1, "epoch": epoch + 1, "lr": schedule.lr(it - 1),
                                 "momentum": optimizer.param_groups[0].get("momentum"), "train_loss": value})
                reason = divergence_reason(value, first_loss, train_cfg.divergence_factor)
                if reason:
                    diverged = {"iteration": it - 1, "epoch": epoch + 1, "loss": value, "reason": reason}
                    break
            progress.step(it, schedule.lr(it - 1), value)
            # Not after an epoch's last batch: the epoch-end checkpoint follows its evaluation,
            # and a resume from a snapshot taken before the evaluation would skip it.
            # Single process: the clock, every iteration; data-parallel: rank 0's, when logged.
            due = main_due if ctx.enabled else checkpointer.due()
            if due and batch_index < epoch_iters - 1:
                save_checkpoint(ctx.mean_over_ranks(loss_sum), elapsed + time.perf_counter() - epoch_start)
        skip = 0
        elapsed += time.perf_counter() - epoch_start
        if diverged:
            break
        last_epoch = epoch + 1 == data_epochs
        if (epoch + 1) % train_cfg.eval_every_epochs == 0 or last_epoch:
            ctx.sync_buffers(model)  # rank 0's batch-norm statistics on every rank
            test_loss, test_accuracy = evaluate(model, test_batches.epoch(0), reduce=ctx.sum_over_ranks)
            row = {"epoch": epoch + 1, "iteration": it, "lr": schedule.lr(it - 1),
                   "momentum": optimizer.param_groups[0].get("momentum"),
                   "train_loss": ctx.mean_over_ranks(loss_sum) / epoch_iters, "test_loss": test_loss,
                   "test_accuracy": test_accuracy, "wall_time_s": elapsed}
            if caffe_test is not None:  # the k-th evaluation reads Caffe's k-th test window
                row["caffe_test_loss"], row["caffe_test_accuracy"] = evaluate(
                    model, caffe_test.epoch(len(history)), reduce=ctx.sum_over_ranks)
            history.append(row)
            progress.evaluation(iteration=it, lr=row["lr"], test_loss=test_loss, test_accuracy=test_accuracy,
                                train_loss=row["train_loss"], epoch=epoch + 1, epochs=data_epochs)
            reason = divergence_reason(test_loss, None, train_cfg.divergence_factor)
            if reason:
                diverged = {"iteration": it, "epoch": epoch + 1, "loss": test_loss, "reason": f"test {reason}"}
                break
        if not last_epoch:
            save_checkpoint()

    finished = [r for r in history if math.isfinite(r["test_accuracy"])]
    metrics = {
        "status": "diverged" if diverged else "completed",
        "name": cfg.name, "experiment": cfg.experiment, "group": cfg.group, "seed": cfg.seed,
        "config": resolved,
        "iterations": it, "iterations_planned": schedule.steps,
        "epochs_completed": it // iters_per_epoch,
        "final": _summary(history[-1] if history else None),
        "best": _summary(max(finished, key=lambda r: r["test_accuracy"]) if finished else None),
        "diverged": diverged,
        "wall_time_s": elapsed,
        "provenance": {**provenance, "world_size": ctx.world_size,
                       "distributed_backend": ctx.backend},
    }
    if ctx.is_main:
        columns = list(HISTORY_COLUMNS) + (list(CAFFE_TEST_COLUMNS) if caffe_test is not None else [])
        io.write_csv(out_dir / "history.csv", pd.DataFrame(history, columns=columns))
        io.write_csv(out_dir / "train_log.csv", pd.DataFrame(log_rows, columns=list(LOG_COLUMNS)))
        io.write_json(out_dir / "metrics.json", metrics)
        checkpointer.remove()
    return metrics


HISTORY_COLUMNS = ("epoch", "iteration", "lr", "momentum", "train_loss", "test_loss", "test_accuracy", "wall_time_s")
# With train.caffe_test: the same evaluation scored on Caffe's test sample (G5).
CAFFE_TEST_COLUMNS = ("caffe_test_loss", "caffe_test_accuracy")
LOG_COLUMNS = ("iteration", "epoch", "lr", "momentum", "train_loss")
