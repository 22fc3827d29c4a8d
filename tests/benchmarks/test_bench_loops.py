"""The suite's training step and range test against a bare PyTorch loop, and the range test
against torch-lr-finder: LeNet, batches of 128 28x28 images, the same initial weights and the
same pre-made batches on both sides.

Baseline: the loop anyone writes by hand, torch.optim.SGD at a fixed lr (momentum 0.9, weight
decay 5e-4, as the subjects use). Every loop keeps its losses as tensors and reads them once
per round, as `train()` reads them once per log line, so a round costs one device sync.

Rounds are short and many: on the shared CPU machines the same work's CPU time drifts by up to
+-25% over seconds, and an A/A run (the bare loop against itself) gave a median paired ratio
within 0.5% of 1 with rounds of 3 iterations x 40, but spread +-5% with 30 x 5.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from onecycle.experiments.config import OptimConfig
from onecycle.data import ArrayDataset, Batches
from onecycle.models import build_model
from onecycle.training.optim import build_optimizer
from onecycle.range_test import lr_range_test
from onecycle.schedules import make_schedule
from onecycle.training.run import train_step

BATCHES = 30
BATCH_SIZE = 128
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4
BARE_LR = 0.05
STEP_ITERATIONS, STEP_ROUNDS = 3, 40
# The target for the training loop: the suite keeps >= 97% of a bare loop's throughput.
TRAIN_STEP_TARGET = 0.97
# One float32 LeNet forward pass computed twice, possibly in another summation order (below).
FORWARD_RTOL = 2e-4
# A range test's fixed costs (state copy for the restore, history frame, bound heuristics: ~5 ms
# on CPU) are spread over this many iterations per call, ~1% of a call here and less in real
# range tests of hundreds of iterations.
RANGE_ITERATIONS, RANGE_ROUNDS = 10, 16


@pytest.fixture(scope="module")
def batches(device):
    """BATCHES batches of a learnable synthetic set, normalised by the suite's data path.

    Each class has a fixed random 28x28 template that an image shows in ~60% of its pixels
    (noise elsewhere): LeNet learns it within a few dozen iterations, so "both loops learn" is
    a real check, and no machine (the GPU one included) needs a dataset download. Timings do
    not depend on pixel values.
    """
    generator = torch.Generator().manual_seed(0)
    count = BATCHES * BATCH_SIZE
    labels = torch.randint(0, 10, (count,), generator=generator)
    templates = torch.randint(0, 256, (10, 1, 28, 28), generator=generator, dtype=torch.uint8)
    noise = torch.randint(0, 256, (count, 1, 28, 28), generator=generator, dtype=torch.uint8)
    shown = torch.rand(count, 1, 28, 28, generator=generator) < 0.6
    dataset = ArrayDataset(torch.where(shown, templates[labels], noise), labels, 10)
    made = Batches(dataset, BATCH_SIZE, shuffle=True, drop_last=True, mean=dataset.channel_mean(),
                   std=dataset.channel_std(), seed=0, device=device)
    return list(made.epoch(0))


def lenet(device) -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet", 10).to(device)


def bare_sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=BARE_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def bare_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[..., torch.Tensor]:
    def step(it: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


class Run:
    """One side's training run, continued round after round over the batches in a cycle, so the
    rounds together are one run whose losses can be checked."""

    def __init__(self, step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor], batches,
                 iterations_per_round: int) -> None:
        self.step, self.data, self.per_round = step, itertools.cycle(batches), iterations_per_round
        self.losses: list[float] = []

    def round(self) -> list[float]:
        start = len(self.losses)
        losses = torch.stack([self.step(start + i, *next(self.data)) for i in range(self.per_round)]).tolist()
        self.losses.extend(losses)
        return losses


def assert_learns(losses: list[float]) -> None:
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


@pytest.mark.parametrize("update_rule", ["pytorch", "caffe"])
def test_train_step_vs_bare_loop(paired, device, batches, update_rule):
    """`train_step` with Smith's 1cycle over the whole run (lr and cyclical momentum set every
    iteration) and the optimizer `onecycle train` builds for the rule: torch's SGD or CaffeSGD."""
    iterations = (STEP_ROUNDS + 1) * STEP_ITERATIONS  # the warm-up round included
    bare_model = lenet(device)
    suite_model = copy.deepcopy(bare_model)
    schedule = make_schedule("smith_1cycle", iterations, variant="caffe", base_lr=0.01, max_lr=0.05,
                             stepsize=iterations // 2, momentum=0.95, min_momentum=0.85)
    config = OptimConfig(update_rule=update_rule, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    suite_optimizer = build_optimizer(suite_model, config, lr=schedule.lr(0))
    bare = Run(bare_step(bare_model, bare_sgd(bare_model)), batches, STEP_ITERATIONS)
    suite = Run(lambda it, x, y: train_step(suite_model, suite_optimizer, schedule, it, x, y),
                batches, STEP_ITERATIONS)

    paired(baseline=bare.round, subject=suite.round,
           labels=("bare torch SGD loop", f"train_step+smith_1cycle ({update_rule} rule)"),
           work=STEP_ITERATIONS * BATCH_SIZE, unit="images", rounds=STEP_ROUNDS, target=TRAIN_STEP_TARGET)

    assert len(bare.losses) == len(suite.losses) == iterations
    # Same weights and first batch: the first loss (taken before any update) is the same, up to
    # a kernel taking another summation order (cuDNN autotuning): LeNet's forward dot products
    # sum 25 + 500 + 800 + 500 terms along the way, 1 825 x 2^-24 = 1.1e-4 at worst.
    assert suite.losses[0] == pytest.approx(bare.losses[0], rel=FORWARD_RTOL)
    assert_learns(bare.losses)
    assert_learns(suite.losses)


def test_range_test_vs_bare_loop(paired, device, batches):
    """`lr_range_test` (linear ramp, no evaluation, model and optimizer restored afterwards as a
    library call does by default) against the bare fixed-lr loop; torch SGD on both sides, so
    the ratio is the range test's own bookkeeping: per-iteration loss.item(), smoothing and
    divergence check, and its fixed costs per call."""
    bare_model = lenet(device)
    suite_model = copy.deepcopy(bare_model)
    suite_optimizer = bare_sgd(suite_model)
    start_weights = copy.deepcopy(suite_model.state_dict())
    bare = Run(bare_step(bare_model, bare_sgd(bare_model)), batches, RANGE_ITERATIONS)

    def range_test():
        return lr_range_test(suite_model, batches, suite_optimizer, start_lr=1e-3, end_lr=0.1,
                             iterations=RANGE_ITERATIONS)

    pair = paired(baseline=bare.round, subject=range_test, labels=("bare torch SGD loop", "lr_range_test"),
                  work=RANGE_ITERATIONS, unit="iterations", rounds=RANGE_ROUNDS)

    history = pair.subject.history
    assert pair.subject.diverged is None
    assert len(history) == len(pair.baseline) == RANGE_ITERATIONS
    assert history.lr.iloc[0] == 1e-3 and history.lr.is_monotonic_increasing
    # Both started from the same weights on the same first batch (up to FORWARD_RTOL, as above).
    assert history.train_loss.iloc[0] == pytest.approx(bare.losses[0], rel=FORWARD_RTOL)
    # Every call started from those weights: the range test's restore put them back each time.
    for name, value in suite_model.state_dict().items():
        assert torch.equal(value, start_weights[name]), name
    assert_learns(bare.losses)


def test_range_test_vs_torch_lr_finder(paired, device, batches):
    """`lr_range_test` against torch-lr-finder's `LRFinder.range_test` (issue 14 #7), both with
    the exponential ramp on the same LeNet, SGD and batches (one DataLoader that hands over the
    pre-made batches), each restoring model and optimizer afterwards (torch-lr-finder: its
    constructor caches the state, `reset()` puts it back). torch-lr-finder's tqdm bar and print
    are sent to a buffer: they are part of its cost, but not of the benchmark's output."""
    lr_finder = pytest.importorskip("torch_lr_finder", reason="torch-lr-finder comes with onecycle[test]")
    loader = DataLoader(batches, batch_size=None)
    theirs_model = lenet(device)
    ours_model = copy.deepcopy(theirs_model)
    theirs_optimizer, ours_optimizer = bare_sgd(theirs_model), bare_sgd(ours_model)
    start_lr, end_lr = 1e-3, 0.1

    def torch_lr_finder_round() -> list[float]:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            finder = lr_finder.LRFinder(theirs_model, theirs_optimizer, nn.CrossEntropyLoss(), device=device)
            finder.range_test(loader, start_lr=start_lr, end_lr=end_lr, num_iter=RANGE_ITERATIONS, step_mode="exp")
            finder.reset()
        return finder.history["loss"]

    def onecycle_round():
        return lr_range_test(ours_model, loader, ours_optimizer, start_lr=start_lr, end_lr=end_lr,
                             iterations=RANGE_ITERATIONS, ramp="exponential")

    pair = paired(baseline=torch_lr_finder_round, subject=onecycle_round,
                  labels=("torch-lr-finder range_test", "lr_range_test"), work=RANGE_ITERATIONS,
                  unit="iterations", rounds=RANGE_ROUNDS)

    ours = pair.subject.history
    assert pair.subject.diverged is None and len(ours) == len(pair.baseline) == RANGE_ITERATIONS
    # Both restored their weights after every round, so each round starts from the same model
    # on the same first batch: torch-lr-finder records that first loss raw.
    assert ours.train_loss.iloc[0] == pytest.approx(pair.baseline[0], rel=1e-5)
