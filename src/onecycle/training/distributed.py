"""Data-parallel training across the devices of one job, launched by torchrun.

    torchrun --standalone --nproc_per_node N -m onecycle.cli train --config RUN.yaml --out DIR

What it keeps equal to a single-process run (docs/paper_reference.md D6):
- `train.batch_size` is the TOTAL batch (the papers' TBS = per-device batch x devices). Every
  rank walks the same (seed, epoch)-ordered global batches and takes its contiguous shard,
  batch_size / N images, so one iteration sees exactly the images of a one-process iteration.
  A batch size that N does not divide is refused.
- DistributedDataParallel averages the gradients of equal shards, which equals the gradient of
  the global batch's mean loss: for models without batch norm the update is the one-process
  update up to float summation order. With batch norm, statistics are per device (each rank
  normalises its own shard), as in Smith's multi-GPU Caffe runs; the running statistics used
  for evaluation and checkpoints are rank 0's.
- The logged train loss is the mean over ranks (= the global batch's mean loss), and every
  decision (divergence, mid-epoch checkpoint) is taken on values all ranks share, so no rank
  waits in a collective that the others skipped.
- Evaluation: each rank scores a disjoint part of the test set with rank 0's weights and
  buffers; the sums are all-reduced, so every test image counts exactly once.
- Only rank 0 writes files. Every rank resumes from the same checkpoint, which holds each
  rank's torch RNG state (dropout draws differ between ranks).

A process started without torchrun (no WORLD_SIZE, or WORLD_SIZE=1) is a plain
single-process run: `Context()` with `world_size` 1, and every helper here is a no-op.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from onecycle import data as datasets
from onecycle.experiments.config import ConfigError
from onecycle.training.processes import check_batch_size, env_int, world_size_from_env


@dataclass
class Context:
    """This process's place in the job. The default is a single-process run."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    # Group for host-side values (RNG states, evaluation sums): gloo, also under NCCL.
    cpu_group: Any = None
    # Whether init() started the process group (and shutdown() may destroy it).
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- values every rank must agree on ---------------------------------------------------

    def step_values(self, loss: torch.Tensor, main_wants_checkpoint: bool) -> tuple[float, bool]:
        """The global batch's mean loss and rank 0's checkpoint decision, the same on every
        rank (one all-reduce; it syncs the device, like the .item() it replaces)."""
        if not self.enabled:
            return loss.item(), main_wants_checkpoint
        flag = float(main_wants_checkpoint and self.is_main)
        packed = torch.stack([loss.detach().float(), torch.tensor(flag, device=loss.device)])
        dist.all_reduce(packed)
        mean_loss, flags = packed.tolist()
        return mean_loss / self.world_size, flags > 0

    def mean_over_ranks(self, value: torch.Tensor) -> float:
        """Sum over ranks / world size of a device scalar (identical on every rank)."""
        if not self.enabled:
            return value.item()
        total = value.detach().clone()
        dist.all_reduce(total)
        return total.item() / self.world_size

    def sum_over_ranks(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks of host numbers, in float64 (evaluation sums)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(tensor, group=self.cpu_group)
        return tensor.tolist()

    def rng_states(self, mine: torch.Tensor | None = None) -> list[torch.Tensor] | None:
        """Every rank's torch CPU RNG state (or `mine`, another per-rank CPU tensor of the same
        size on every rank, e.g. its CUDA generator's state), rank order; None in a
        single-process run."""
        if not self.enabled:
            return None
        mine = torch.get_rng_state() if mine is None else mine
        states = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(states, mine, group=self.cpu_group)
        return states

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm running statistics). DDP broadcasts them
        before each training forward, but each rank then updates its own copy from its shard."""
        if not self.enabled:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    # -- wrapping --------------------------------------------------------------------------

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def train_batches(self, batches: Any) -> Any:
        return batches if not self.enabled else ShardedTrainBatches(batches, self.rank, self.world_size)

    def test_batches(self, batches: Any) -> Any:
        return batches if not self.enabled else ShardedTestBatches(batches, self.rank, self.world_size)


def init(device: torch.device) -> tuple[Context, torch.device]:
    """Join the job's process group when torchrun started this process; returns the context and
    the device this rank trains on (cuda:LOCAL_RANK on GPUs). Call `shutdown(context)` at the end."""
    world_size = world_size_from_env()
    if world_size <= 1:
        return Context(), device
    rank, local_rank = env_int("RANK", 0), env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA "
                              f"devices are visible (CUDA_VISIBLE_DEVICES="
                              f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"data-parallel training runs on cuda or cpu, not {device.type}")
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    cpu_group = dist.new_group(backend="gloo") if backend == "nccl" else None
    return Context(rank, world_size, local_rank, backend, cpu_group, owns_group), device


def shutdown(context: Context) -> None:
    """Destroy the process group if `init` created it (not one the caller set up)."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class ShardedTrainBatches:
    """Rank `rank`'s contiguous 1/world_size of every global batch of `batches`
    (a data.Batches or a folder loader, data.FolderEpochs, with drop_last: full batches only)."""

    def __init__(self, batches: Any, rank: int, world_size: int) -> None:
        check_batch_size(batches.batch_size, world_size)
        if not batches.drop_last:
            raise ValueError("training batches must drop the last partial batch to be sharded")
        self.batches, self.rank, self.world_size = batches, rank, world_size
        self.shard_size = batches.batch_size // world_size

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch_index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        lo, hi = self.rank * self.shard_size, (self.rank + 1) * self.shard_size
        if isinstance(self.batches, datasets.FolderEpochs):
            # Images are read only for this rank's shard. The order is the epoch's, and sample i
            # of the epoch is augmented under its own seed (seed, epoch, i) whichever process
            # reads it, so the shards put together are the one-process batch.
            folder = self.batches
            count = len(folder)
            order = folder.pass_order(epoch_index)[: count * folder.batch_size]
            mine = order.view(count, folder.batch_size)[:, lo:hi].reshape(-1)
            yield from folder.batches_of(mine, self.shard_size, epoch_index)
            return
        # In memory: the global batch is indexed and augmented on every rank (cheap next to
        # the model), then cut, so order, flips and crops are those of the one-process run.
        for x, y in self.batches.epoch(epoch_index):
            yield x[lo:hi], y[lo:hi]


class ShardedTestBatches:
    """A disjoint part of the test set per rank; together the ranks cover every image once.
    In memory: every world_size-th batch. Folders: a contiguous block of the images, so each
    rank reads only its own."""

    def __init__(self, batches: Any, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def epoch(self, epoch_index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.batches, datasets.FolderEpochs):
            folder = self.batches
            if folder.shuffle:
                raise ValueError("sharded evaluation expects unshuffled test batches")
            block = math.ceil(len(folder.dataset) / self.world_size)
            part = torch.arange(len(folder.dataset))[self.rank * block: (self.rank + 1) * block]
            if len(part):
                yield from folder.batches_of(part, folder.batch_size, epoch_index)
            return
        for index, batch in enumerate(self.batches.epoch(epoch_index)):
            if index % self.world_size == self.rank:
                yield batch
