import os
from pathlib import Path

import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]

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
