"""Ops per iteration: what a GPU pays in kernel launches for SC's ResNet-56 with Caffe's semantics.

Each op the dispatcher hands to a device is at least one kernel launch on a GPU, a few
microseconds of host time whatever the batch, so at small batches the host's op count, not the
GPU's arithmetic, sets the pace (issue 28). The count does not depend on the machine or the batch
size (tests/op_counting.py), so it is measured with a batch of 8 on the benchmarks' device (the
CPU unless ONECYCLE_BENCH_DEVICE says otherwise) and recorded as extra_info beside the same count
for the code before issue 28 (tests/reference_paths.py) and for a bare PyTorch loop on the same
net (stock nn.BatchNorm2d, torch.optim.SGD with foreach): the floor an eager loop cannot go
below. Nothing is timed: pytest-benchmark runs each count once, so that `make bench`
(--benchmark-only) collects it.

SC's ResNet-56 (models registry "resnet56") as the paper config trains it (configs/paper.yaml,
SC Table 1): prototxt fillers and multipliers, Caffe's update rule (SGD, momentum 0.9, weight
decay 1e-4), Caffe's batch norm, once over the batch and once in SC's 8 per-GPU shards.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from onecycle.evaluation import evaluate, model_device
from onecycle.experiments.config import OptimConfig
from onecycle.models import build_model
from onecycle.models.fused_batch_norm import use_fused_running_statistics
from onecycle.models.layers import CaffeBatchNorm2d, set_batch_norm_shards
from onecycle.schedules import make_schedule
from onecycle.training.optim import build_optimizer, parameter_groups
from onecycle.training.run import train_step
from op_counting import ops_per_call
from .conftest import record_line
from reference_paths import PerParameterCaffeSGD, evaluate_syncing_every_batch, with_recomputing_batch_norm

BATCH, COUNTED_ITERATIONS, EVAL_BATCHES = 8, 3, 3
SC_OPTIM = OptimConfig(algorithm="sgd", update_rule="caffe", multipliers="prototxt", weight_decay=1.0e-4,
                       momentum=0.9)
# The target for the lean step without shards: at most about 250 ops per iteration.
TARGET_OPS = 250


def resnet56(shards: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet56", 10, init="prototxt")
    set_batch_norm_shards(model, shards)
    return model.to(device)


def batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, 3, 32, 32, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator)
    return x.to(device), y.to(device)


def stock_batch_norm(model: nn.Module) -> nn.Module:
    """The net with torch's nn.BatchNorm2d in place of Caffe's: the bare loop's model."""
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, CaffeBatchNorm2d):
                setattr(parent, name, nn.BatchNorm2d(child.num_features).to(child.weight.device))
    return model


def step_counter(model: nn.Module, optimizer: torch.optim.Optimizer):
    schedule = make_schedule("fixed", steps=10**6, base_lr=0.1)
    x, y = batch(model_device(model))
    iteration = iter(range(10**6))
    return lambda: train_step(model, optimizer, schedule, next(iteration), x, y)


def today_step(shards: int, device: torch.device):
    """Before issue 28: Caffe's batch norm keeping its sums itself, the per-parameter CaffeSGD."""
    model = resnet56(shards, device)
    groups = parameter_groups(model, SC_OPTIM.weight_decay, SC_OPTIM.weight_decay_on, SC_OPTIM.multipliers)
    return step_counter(model, PerParameterCaffeSGD(groups, lr=0.1, momentum=SC_OPTIM.momentum))


def lean_step(shards: int, device: torch.device):
    """The suite's step on an accelerator: fused running statistics, foreach CaffeSGD."""
    model = use_fused_running_statistics(resnet56(shards, device))
    return step_counter(model, build_optimizer(model, SC_OPTIM, lr=0.1))


def bare_step(device: torch.device):
    model = stock_batch_norm(resnet56(1, device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True)
    x, y = batch(device)

    def step() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def count(benchmark, call, calls: int) -> tuple[float, float]:
    """(ops, kernel-launching ops) per call, counted once under pytest-benchmark (its timing is
    not the measurement)."""
    return benchmark.pedantic(lambda: ops_per_call(call, calls)[:2], rounds=1, iterations=1)


def counts(label: str, values: tuple[float, float]) -> str:
    return f"{label} {values[0]:.0f} ops ({values[1]:.0f} launch kernels)"


@pytest.mark.parametrize("shards", [1, 8])
def test_ops_per_training_iteration(benchmark, device, shards, request):
    today = ops_per_call(today_step(shards, device), COUNTED_ITERATIONS)[:2]
    bare = ops_per_call(bare_step(device), COUNTED_ITERATIONS)[:2]
    lean = count(benchmark, lean_step(shards, device), COUNTED_ITERATIONS)
    benchmark.extra_info.update({
        "unit": "aten ops per training iteration (all; launching a kernel: neither view nor allocation)",
        "model": "resnet56, SC Caffe semantics", "batch_norm_shards": shards,
        "lean": lean[0], "lean_kernels": lean[1], "before_issue_28": today[0], "before_issue_28_kernels": today[1],
        "bare_torch_loop_one_batch_norm": bare[0], "bare_torch_loop_kernels": bare[1],
        "target": TARGET_OPS if shards == 1 else None})
    record_line(request, f"resnet56 training iteration, {shards} batch-norm shard(s): {counts('lean', lean)}; "
                         f"{counts('before issue 28', today)}; {counts('bare torch loop', bare)}")
    # Whole iterations: every counted call did the same work.
    assert all(value == int(value) for value in (*lean, *today))
    # What the lean step removed: 5 ops per parameter (the update rule), 7 per batch-norm layer.
    parameters = sum(1 for _ in resnet56(1, device).parameters())
    assert lean[1] < today[1] - 5 * parameters


def test_ops_per_evaluation_batch(benchmark, device, request):
    trained = resnet56(1, device)
    step_counter(trained, build_optimizer(trained, SC_OPTIM, lr=0.1))()  # running statistics to read
    batches = [batch(device)] * EVAL_BATCHES
    before = with_recomputing_batch_norm(copy.deepcopy(trained))
    today = [value / EVAL_BATCHES for value in
             ops_per_call(lambda: evaluate_syncing_every_batch(before, batches), 2)[:2]]
    lean_model = use_fused_running_statistics(copy.deepcopy(trained))
    lean = [value / EVAL_BATCHES for value in count(benchmark, lambda: evaluate(lean_model, batches), 2)]
    sums_model = copy.deepcopy(trained)  # the CPU path: the sums, their test statistics kept
    sums = [value / EVAL_BATCHES for value in ops_per_call(lambda: evaluate(sums_model, batches), 2)[:2]]
    benchmark.extra_info.update({"unit": "aten ops per evaluation batch", "model": "resnet56, SC Caffe semantics",
                                 "evaluation_batches": EVAL_BATCHES, "lean": lean[0], "lean_kernels": lean[1],
                                 "lean_cpu_batch_norm": sums[0], "before_issue_28": today[0],
                                 "before_issue_28_kernels": today[1]})
    record_line(request, f"resnet56 evaluation, per batch of {EVAL_BATCHES}: {counts('lean', lean)}; "
                         f"{counts('CPU batch norm', sums)}; {counts('before issue 28', today)}")
    # Statistics computed once per evaluation and one read of the device, not 6 ops per layer
    # and 2 reads per batch.
    assert today[1] - lean[1] > 5 * 55
