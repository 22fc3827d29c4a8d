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

`train` runs a TrainingRun through its phases: set up (data, schedule, model), resume (from a
checkpoint, if one is there), one epoch at a time (train_epoch, evaluate_epoch), finish (write
the results). The schedule comes from onecycle.training.schedule_setup, the checkpoint's format
from onecycle.training.checkpoints, the device from onecycle.training.device.
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
from onecycle.training import distributed, processes
from onecycle.experiments.config import ConfigError, RunConfig, TrainConfig
from onecycle.experiments.identity import DIGEST_KEY, config_digest
from onecycle.evaluation import evaluate, training_divergence
from onecycle.models import build_model, classification_loss
from onecycle.models.fused_batch_norm import use_fused_running_statistics
from onecycle.models.layers import set_batch_norm_shards
from onecycle.training.checkpoints import Checkpointer, restore_training_state, training_state
from onecycle.training.device import explain_mode_errors, fused_batch_norm, resolve_device, set_mode
from onecycle.training.optim import build_optimizer
from onecycle.training.schedule_setup import build_schedule, schedule_iterations_per_epoch
from onecycle.progress import SILENT, Progress
from onecycle.schedules import Schedule, apply_schedule
from onecycle.data.assembly import load_data

HISTORY_COLUMNS = ("epoch", "iteration", "lr", "momentum", "train_loss", "test_loss", "test_accuracy", "wall_time_s")
# With train.caffe_test: the same evaluation scored on Caffe's test sample (G5).
CAFFE_TEST_COLUMNS = ("caffe_test_loss", "caffe_test_accuracy")
LOG_COLUMNS = ("iteration", "epoch", "lr", "momentum", "train_loss")


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


def _summary(row: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("epoch", "iteration", "test_accuracy", "test_loss")
    summary = {k: (row[k] if row else None) for k in keys}
    if row and "caffe_test_accuracy" in row:
        summary["caffe_test_accuracy"] = row["caffe_test_accuracy"]
    return summary


def train(cfg: RunConfig, out_dir: str | Path, bounds: dict[str, Any] | None = None,
          progress: Progress = SILENT, set_aside_stale: bool = False) -> dict[str, Any]:
    """Run (or resume) one training run; write history.csv, train_log.csv, metrics.json.
    `progress` hears of every iteration and evaluation (onecycle.progress; silent by default).
    A checkpoint of another config in `out_dir` is refused, or with `set_aside_stale` moved
    aside (onecycle.training.checkpoints.Checkpointer) and the run starts afresh.

    Started by torchrun (WORLD_SIZE > 1), this process is one rank of a data-parallel run
    (onecycle.training.distributed): every rank returns the same metrics, rank 0 alone writes files
    and reports progress."""
    processes.check_batch_size(cfg.train.batch_size, processes.world_size_from_env(),
                                 cfg.train.batch_norm_shards)
    ctx, device = distributed.init(resolve_device(cfg.train.device))
    try:
        with explain_mode_errors(cfg.train.mode):
            if not ctx.is_main:  # rank 0 alone writes the run folder, and holds it
                return _train(cfg, Path(out_dir), bounds, ctx, device, SILENT, set_aside_stale)
            with io.run_folder(out_dir) as folder:
                return _train(cfg, folder, bounds, ctx, device, progress, set_aside_stale)
    finally:
        distributed.shutdown(ctx)


def _train(cfg: RunConfig, out_dir: Path, bounds: dict[str, Any] | None, ctx: distributed.Context,
           device: torch.device, progress: Progress, set_aside_stale: bool) -> dict[str, Any]:
    run = TrainingRun(cfg, out_dir, bounds, ctx, device, progress, set_aside_stale)
    run.resume()
    run.run_epochs()
    return run.finish()


class TrainingRun:
    """One run's objects (data, schedule, model, optimizer, checkpointer) and its progress (the
    iteration `it`, history, log rows, first loss, elapsed time: what a checkpoint keeps), with a
    method per phase. Built, it has set up data, schedule and model and written config.json."""

    def __init__(self, cfg: RunConfig, out_dir: Path, bounds: dict[str, Any] | None,
                 ctx: distributed.Context, device: torch.device, progress: Progress,
                 set_aside_stale: bool = False) -> None:
        self.cfg, self.out_dir, self.ctx, self.device, self.progress = cfg, out_dir, ctx, device, progress
        self.set_aside_stale = set_aside_stale
        self.train_cfg: TrainConfig = cfg.train
        out_dir.mkdir(parents=True, exist_ok=True)
        # Provenance of the code that starts the run (files edited while it runs do not count).
        self.provenance = io.provenance(str(device), cfg.seed)
        torch.manual_seed(cfg.seed)
        self._set_up_data_and_schedule(bounds)
        self._set_up_model()
        # The run's progress, from scratch (resume() reads it from a checkpoint instead).
        self.it, self.history, self.log_rows = 0, [], []
        self.first_loss, self.elapsed, self.resumed_loss_sum = None, 0.0, 0.0
        self.diverged: dict[str, Any] | None = None

    def _set_up_data_and_schedule(self, bounds: dict[str, Any] | None) -> None:
        """The data, the schedule in iterations, and the resolved config (written as config.json)."""
        cfg, ctx = self.cfg, self.ctx
        bundle = load_data(cfg, self.device)
        self.iters_per_epoch = len(bundle.train)  # of the data: one pass over the training images
        # Single process: the bundle's batches themselves. Data-parallel: this rank's shards.
        self.train_batches, self.test_batches = ctx.train_batches(bundle.train), ctx.test_batches(bundle.test)
        self.caffe_test = None if bundle.caffe_test is None else ctx.test_batches(bundle.caffe_test)
        self.num_classes, self.in_channels = bundle.num_classes, bundle.in_channels
        schedule_ipe = schedule_iterations_per_epoch(cfg.train, bundle.train_size)
        self.schedule, schedule_params = build_schedule(cfg, schedule_ipe, bounds)
        resolved = {**cfg.model_dump(mode="json"),
                    "schedule_resolved": {"policy": self.schedule.name, "steps": self.schedule.steps,
                                          "params": schedule_params},
                    "iterations_per_epoch": self.iters_per_epoch, "bounds": bounds}
        if cfg.train.epoch_batch_size is not None:
            # Epochs counted in another batch (only then: other runs' configs stay as they were).
            resolved["schedule_iterations_per_epoch"] = schedule_ipe
        if ctx.enabled:
            # Data-parallel processes; per-device batch = train.batch_size / world_size. Only then:
            # a one-process run's config (and so its checkpoints) stays as before.
            resolved["world_size"] = ctx.world_size
        if ctx.is_main:
            io.write_json(self.out_dir / "config.json", resolved)
        self.resolved = resolved

    def _set_up_model(self) -> None:
        """Model (its initial weights drawn from the seeded torch RNG), kernels, optimizer, checkpointer."""
        cfg, train_cfg, device = self.cfg, self.train_cfg, self.device
        model = build_model(cfg.model.arch, self.num_classes, self.in_channels, init=cfg.model.init,
                            **cfg.model.options).to(device)
        try:
            set_batch_norm_shards(model, processes.local_batch_norm_shards(train_cfg.batch_norm_shards,
                                                                           self.ctx.world_size))
        except ValueError as error:
            raise ConfigError(f"train.batch_norm_shards = {train_cfg.batch_norm_shards}: {error}") from None
        set_mode(train_cfg.mode, device)
        # 385 fewer ops per ResNet-56 step on a GPU. A compiled step fuses Caffe's own sums into
        # its kernels, and would recompile for every step's new momentum of the fused kernel.
        if fused_batch_norm(device) and not train_cfg.compile:
            use_fused_running_statistics(model)
        self.memory_format = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
        self.model = model.to(memory_format=self.memory_format)
        self.autocast_dtype = torch.bfloat16 if train_cfg.precision == "bf16" else None
        self.optimizer = build_optimizer(self.model, cfg.optim, lr=self.schedule.lr(0))
        self.checkpointer = Checkpointer(self.out_dir, json.dumps(self.resolved, sort_keys=True),
                                         train_cfg.checkpoint_every_s, set_aside_other=self.set_aside_stale,
                                         may_move=self.ctx.is_main)

    def resume(self) -> None:
        """Go on from the checkpoint if there is one; then wrap the model for training."""
        ctx = self.ctx
        state = self.checkpointer.load()
        if state is not None:
            restore_training_state(state, self.model, self.optimizer, ctx, self.cfg.seed)
            self.it, self.history, self.log_rows = state["iteration"], state["history"], state["log_rows"]
            self.first_loss, self.elapsed = state["first_loss"], state["elapsed"]
            self.resumed_loss_sum = state["epoch_loss_sum"]
        elif ctx.rank > 0:
            # Every rank built the same initial weights; from here on each rank draws its own
            # dropout masks (rank 0 keeps the one-process stream).
            torch.manual_seed(datasets.derived_seed("rank", self.cfg.seed, ctx.rank))
        # Data-parallel: DistributedDataParallel averages the shards' gradients. Evaluation and
        # checkpoints use the bare `model` (rank 0's weights and buffers).
        self.net = ctx.wrap(self.model, self.device)
        if self.train_cfg.compile:
            self.net = torch.compile(self.net)

    def save_checkpoint(self, epoch_loss_sum: float = 0.0, elapsed_now: float | None = None) -> None:
        """Every rank takes part (the RNG states are gathered); rank 0 writes."""
        state = training_state(self.model, self.optimizer, self.ctx, iteration=self.it, history=self.history,
                               log_rows=self.log_rows, first_loss=self.first_loss,
                               elapsed=self.elapsed if elapsed_now is None else elapsed_now,
                               epoch_loss_sum=epoch_loss_sum)
        if self.ctx.is_main:
            self.checkpointer.save(state)

    @property
    def data_epochs(self) -> int:
        # The schedule's steps are the run: whole passes over the data, the last one cut short when
        # the epochs are counted in another batch (train.epoch_batch_size).
        return math.ceil(self.schedule.steps / self.iters_per_epoch)

    def run_epochs(self) -> None:
        """The epochs left: train, evaluate when due, checkpoint between epochs; stop on divergence."""
        self.net.train()
        data_epochs = self.data_epochs
        start_epoch, skip = divmod(self.it, self.iters_per_epoch)
        threads = torch.get_num_threads()
        self.progress.start(self.schedule.steps, self.it,
                            note=f"{data_epochs} epochs of {self.iters_per_epoch}, {self.device}, "
                                 f"{threads} torch thread{'s' if threads > 1 else ''}")
        for epoch in range(start_epoch, data_epochs):
            loss_sum, epoch_iters = self.train_epoch(epoch, skip)
            skip = 0
            if self.diverged:
                break
            last_epoch = epoch + 1 == data_epochs
            if (epoch + 1) % self.train_cfg.eval_every_epochs == 0 or last_epoch:
                self.evaluate_epoch(epoch, loss_sum, epoch_iters)
                if self.diverged:
                    break
            if not last_epoch:
                self.save_checkpoint()

    def train_epoch(self, epoch: int, skip: int) -> tuple[torch.Tensor, int]:
        """One pass over the epoch's batches, past the first `skip` (a resumed epoch's, already
        trained on). Returns the sum of its batches' losses and its iterations; a diverging
        logged loss ends it early (`diverged`)."""
        ctx = self.ctx
        epoch_iters = min(self.iters_per_epoch, self.schedule.steps - epoch * self.iters_per_epoch)
        epoch_start = time.perf_counter()
        # Under DDP each rank sums its shards' losses; the mean over ranks is the global one
        # (a resumed sum, itself global, is carried by every rank and survives that mean).
        loss_sum = torch.tensor(self.resumed_loss_sum if skip else 0.0, device=self.device)
        for batch_index, (x, y) in enumerate(self.train_batches.epoch(epoch)):
            if batch_index == epoch_iters:
                break
            if batch_index < skip:  # resuming mid-epoch: the same batches, already trained on
                continue
            loss = train_step(self.net, self.optimizer, self.schedule, self.it,
                              x.contiguous(memory_format=self.memory_format), y, self.autocast_dtype)
            loss_sum += loss
            self.it += 1
            main_due, value = False, None
            if self.it % self.train_cfg.log_every == 0 or self.first_loss is None or batch_index == epoch_iters - 1:
                value, main_due = self._log_loss(loss, epoch)
                if self.diverged:
                    break
            self.progress.step(self.it, self.schedule.lr(self.it - 1), value)
            # Not after an epoch's last batch: the epoch-end checkpoint follows its evaluation,
            # and a resume from a snapshot taken before the evaluation would skip it.
            # Single process: the clock, every iteration; data-parallel: rank 0's, when logged.
            due = main_due if ctx.enabled else self.checkpointer.due()
            if due and batch_index < epoch_iters - 1:
                self.save_checkpoint(ctx.mean_over_ranks(loss_sum), self.elapsed + time.perf_counter() - epoch_start)
        self.elapsed += time.perf_counter() - epoch_start
        return loss_sum, epoch_iters

    def _log_loss(self, loss: torch.Tensor, epoch: int) -> tuple[float, bool]:
        """A logged iteration's row in train_log; its loss (global under DDP) and whether rank 0's
        checkpoint clock is due. Sets `diverged` if the loss diverges."""
        # .item() syncs the device: only on logged iterations. Under DDP one all-reduce
        # gives every rank the global batch's mean loss and rank 0's checkpoint clock,
        # so all ranks log, stop and checkpoint together.
        value, main_due = self.ctx.step_values(loss, self.checkpointer.due())
        self.first_loss = value if self.first_loss is None else self.first_loss
        self.log_rows.append({"iteration": self.it - 1, "epoch": epoch + 1, "lr": self.schedule.lr(self.it - 1),
                              "momentum": self.optimizer.param_groups[0].get("momentum"), "train_loss": value})
        reason = training_divergence(value, self.first_loss, self.train_cfg.divergence_factor)
        if reason:
            self.diverged = {"iteration": self.it - 1, "epoch": epoch + 1, "loss": value, "reason": reason}
        return value, main_due

    def evaluate_epoch(self, epoch: int, loss_sum: torch.Tensor, epoch_iters: int) -> None:
        """Score the full test set (and Caffe's test window) after `epoch`: a row of history.
        Sets `diverged` if the test loss is not finite."""
        ctx, model, it = self.ctx, self.model, self.it
        ctx.sync_buffers(model)  # rank 0's batch-norm statistics on every rank
        test_loss, test_accuracy = evaluate(model, self.test_batches.epoch(0), reduce=ctx.sum_over_ranks)
        row = {"epoch": epoch + 1, "iteration": it, "lr": self.schedule.lr(it - 1),
               "momentum": self.optimizer.param_groups[0].get("momentum"),
               "train_loss": ctx.mean_over_ranks(loss_sum) / epoch_iters, "test_loss": test_loss,
               "test_accuracy": test_accuracy, "wall_time_s": self.elapsed}
        if self.caffe_test is not None:  # the k-th evaluation reads Caffe's k-th test window
            row["caffe_test_loss"], row["caffe_test_accuracy"] = evaluate(
                model, self.caffe_test.epoch(len(self.history)), reduce=ctx.sum_over_ranks)
        self.history.append(row)
        self.progress.evaluation(iteration=it, lr=row["lr"], test_loss=test_loss, test_accuracy=test_accuracy,
                                 train_loss=row["train_loss"], epoch=epoch + 1, epochs=self.data_epochs)
        reason = training_divergence(test_loss, None, self.train_cfg.divergence_factor)
        if reason:
            self.diverged = {"iteration": it, "epoch": epoch + 1, "loss": test_loss, "reason": f"test {reason}"}

    def finish(self) -> dict[str, Any]:
        """The run's metrics; rank 0 writes history.csv, train_log.csv and metrics.json (last: it
        means "finished") and removes the checkpoint. Every rank returns the metrics."""
        cfg, ctx, history = self.cfg, self.ctx, self.history
        finished = [r for r in history if math.isfinite(r["test_accuracy"])]
        metrics = {
            "status": "diverged" if self.diverged else "completed",
            "name": cfg.name, "experiment": cfg.experiment, "group": cfg.group, "seed": cfg.seed,
            # The run's identity (onecycle.experiments.identity): which plan it belongs to.
            DIGEST_KEY: config_digest(cfg),
            "config": self.resolved,
            "iterations": self.it, "iterations_planned": self.schedule.steps,
            "epochs_completed": self.it // self.iters_per_epoch,
            "final": _summary(history[-1] if history else None),
            "best": _summary(max(finished, key=lambda r: r["test_accuracy"]) if finished else None),
            "diverged": self.diverged,
            "wall_time_s": self.elapsed,
            "provenance": {**self.provenance, "world_size": ctx.world_size,
                           "distributed_backend": ctx.backend},
        }
        if ctx.is_main:
            columns = list(HISTORY_COLUMNS) + (list(CAFFE_TEST_COLUMNS) if self.caffe_test is not None else [])
            io.write_csv(self.out_dir / "history.csv", pd.DataFrame(history, columns=columns))
            io.write_csv(self.out_dir / "train_log.csv", pd.DataFrame(self.log_rows, columns=list(LOG_COLUMNS)))
            io.write_json(self.out_dir / "metrics.json", metrics)
            self.checkpointer.remove()
        return metrics
