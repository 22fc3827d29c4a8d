"""Shared fixtures, and how the suite's numeric tolerances are chosen.

Every tolerance follows from the computation, never from a measurement on one machine (CI runs
on AMD or Intel, at 1 or 2 torch threads; `make test-threads` reruns the `numerics` tests at
another count):
- `pytest.approx` with its default (rel 1e-6) only compares float64 arithmetic of a few
  operations on hand-made numbers (schedules, statistics, aggregation): its rounding is near
  1e-15, far inside the default. Every other tolerance says at its line where it comes from.
- Float32 against float64 references of a few operations: a few roundings of 2^-24 = 6e-8 of
  the values involved (pixels on the 0..255 scale: 2^-24 x 256 = 1.5e-5).
- Statistical checks of seeded random draws: a multiple of the sample statistic's standard error.
- Two runs of a training that must differ only in the order of float sums: in float64, after one
  step and a coasting LR of 0, to FLOAT64_RTOL (below).
- A comparison of two runs of the same computation in the same process: exact.
"""

import contextlib
import os
from pathlib import Path

import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]

# Every wait of a test on another process (subprocess.run, Popen.wait, a queue, a barrier, a
# pipe) is a hang guard and nothing more: it ends a test that would otherwise never end, and is
# set far above any expected time (the longest, a real Snakemake DAG, takes minutes on a busy
# 2-core machine), so a slow or shared machine never fails a test. What a test asserts is what
# the process did, never how long it took.
HANG_GUARD_S = 3600

# Real Fashion-MNIST comes from Debian's dataset-fashion-mnist (`make test` installs it).
needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST.is_dir() and not os.environ.get("ONECYCLE_DATA"),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def tiny_run() -> dict:
    """A LeNet run on 1 024 Fashion-MNIST images: seconds on one core, evaluated on all 10k."""
    return {
        "name": "tiny/onecycle/seed0", "experiment": "tiny", "group": "onecycle", "seed": 0,
        "data": {"dataset": "fashion_mnist", "train_subset": 1024, "normalize": "mean"},
        "model": {"arch": "lenet"},
        "optim": {"update_rule": "caffe", "weight_decay": 5.0e-4, "momentum": 0.9},
        "schedule": {"policy": "smith_1cycle",
                     "params": {"variant": "caffe", "base_lr": 0.01, "max_lr": 0.1, "stepsize_epochs": 0.9,
                                "momentum": 0.95, "min_momentum": 0.8}},
        "train": {"batch_size": 128, "epochs": 2, "eval_batch_size": 2000, "log_every": 2},
    }


@pytest.fixture
def tiny_run_config():
    return tiny_run()


# Comparing two training runs that must differ only in the order of float sums (one process
# against several, CPU against CUDA, one thread count against another), with a bound that holds
# on any CPU and thread count rather than one measured on one machine:
#
# - Both run in float64 (`float64_training`). A sum of n terms rounds to at most n u of its
#   terms' magnitudes, u = 2^-53 = 1.1e-16, whatever order the device and its threads take. The
#   largest sums of these runs have n = 64 x 28 x 28 = 50 176 terms (a convolution's weight
#   gradient over the batch and the pixels); all the sums along ResNet-20's forward and backward
#   pass add up to under 10^6 terms, so a step's rounding stays below 10^6 u = 1.1e-10 of the
#   magnitudes involved (LeNet's: far less).
# - Training would amplify that chaotically over many steps (ResNet-20 in float32 on
#   tests/test_ddp.py's config: 4e-7 apart at iteration 2, 4e-3 on the test loss after 4 steps),
#   and no bound on that amplification holds in general. So the runs take one step at a small
#   LR and then LR 0 (COASTING_SCHEDULE): with momentum, every later step adds a multiple of the
#   first step and nothing of a new gradient (Caffe's rule: v = m v + lr (g + wd w) = m v), so
#   every weight is w0 - c_k v0. A rounding difference in the first gradient reaches every later
#   loss to first order only, never fed back through another gradient: the losses differ by at
#   most the forward pass's rounding plus the step's rounding times the step's effect on the
#   loss, each of order 1e-10 of the loss. FLOAT64_RTOL keeps a factor 10 above that.
#
# The first step is what a data-parallel or device path must get right; the later steps still
# exercise the schedule, evaluations, checkpoints and resumes.
FLOAT64_RTOL = 1e-9


def coasting_schedule(lr: float) -> dict:
    """One step at `lr`, then LR 0 (Caffe multistep with gamma 0 at iteration 1)."""
    return {"policy": "multistep", "params": {"base_lr": lr, "gamma": 0.0, "stepvalue": [1]}}


@contextlib.contextmanager
def float64_training():
    """Train in float64: models are built in float64 and every in-memory batch (training, test
    and Caffe test sample) is cast to it after the data pipeline's float32 normalisation, so a
    float64 run sees the input values of a float32 one (see FLOAT64_RTOL above)."""
    import torch

    from onecycle import data

    epoch, select = data.Batches.epoch, data.Batches.select

    def float64_epoch(self, index):
        for x, y in epoch(self, index):
            yield x.double(), y

    def float64_select(self, indices, flips):
        x, y = select(self, indices, flips)
        return x.double(), y

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    data.Batches.epoch, data.Batches.select = float64_epoch, float64_select
    try:
        yield
    finally:
        data.Batches.epoch, data.Batches.select = epoch, select
        torch.set_default_dtype(default)
