"""What Smith's Caffe semantics cost: the suite's training step as the paper config runs Part 1's
nets (Caffe's data layer, the prototxt multipliers, batch norm in 4 per-GPU shards, Caffe's
Nesterov rule) against a bare PyTorch loop on the same ResNet-20 and images (one batch norm over
the whole batch, torch SGD). No target: the ratio says what faithfulness costs per iteration.
"""

from __future__ import annotations

import copy

import pytest
import torch

from onecycle.experiments.config import OptimConfig
from onecycle.data import ArrayDataset, Batches, CaffeTransform
from onecycle.models import build_model
from onecycle.models.layers import set_batch_norm_shards
from onecycle.training.optim import build_optimizer
from onecycle.schedules import make_schedule
from onecycle.training.run import train_step

from .test_bench_loops import Run, bare_sgd, bare_step

BATCHES, BATCH_SIZE = 8, 32
SHARDS = 4  # Part 1's 4 GPUs (docs/paper_reference.md D6)
ITERATIONS, ROUNDS = 2, 20


@pytest.fixture(scope="module")
def cifar_batches(device):
    """CIFAR-shaped uint8 images through Caffe's data layer: 0..255 minus the mean image, mirror."""
    generator = torch.Generator().manual_seed(0)
    count = BATCHES * BATCH_SIZE
    dataset = ArrayDataset(torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8),
                           torch.randint(0, 10, (count,), generator=generator), 10)
    made = Batches(dataset, BATCH_SIZE, shuffle=True, drop_last=True, augment="mirror",
                   caffe=CaffeTransform(mean_image=dataset.mean_image()), seed=0, device=device)
    return list(made.epoch(0))


def test_caffe_semantics_step_vs_bare_loop(paired, device, cifar_batches):
    torch.manual_seed(0)
    bare_model = build_model("resnet20", 10, init="prototxt").to(device)
    suite_model = copy.deepcopy(bare_model)
    set_batch_norm_shards(suite_model, SHARDS)
    iterations = (ROUNDS + 1) * ITERATIONS
    schedule = make_schedule("smith_1cycle", iterations, variant="caffe", base_lr=0.001, max_lr=0.01,
                             stepsize=iterations // 2, momentum=0.95, min_momentum=0.85)
    config = OptimConfig(algorithm="nesterov", update_rule="caffe", multipliers="prototxt",
                         momentum=0.9, weight_decay=5e-4)
    suite_optimizer = build_optimizer(suite_model, config, lr=schedule.lr(0))
    bare = Run(bare_step(bare_model, bare_sgd(bare_model)), cifar_batches, ITERATIONS)
    suite = Run(lambda it, x, y: train_step(suite_model, suite_optimizer, schedule, it, x, y),
                cifar_batches, ITERATIONS)

    paired(baseline=bare.round, subject=suite.round,
           labels=("bare torch SGD loop, one batch norm", f"train_step, Caffe semantics, {SHARDS} BN shards"),
           work=ITERATIONS * BATCH_SIZE, unit="images", rounds=ROUNDS)

    assert len(bare.losses) == len(suite.losses) == iterations
    assert all(torch.isfinite(torch.tensor(bare.losses + suite.losses)))
    # The shards change the very first forward pass: batch norm over 8 images, not 32.
    assert suite.losses[0] != pytest.approx(bare.losses[0], rel=1e-6)
