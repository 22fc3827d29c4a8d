"""Training end to end through the CIFAR and ImageFolder loaders, on fixtures in the real formats."""

import numpy as np
import pandas as pd

from data_fixtures import random_uint8, write_cifar10, write_image_folder
from onecycle.config import RunConfig, parse
from onecycle.train import train


def _run_config(dataset, root, arch, batch, augment="none", max_lr=0.1, **data):
    return parse(RunConfig, {
        "name": f"{dataset}-fixture", "seed": 0,
        "data": {"dataset": dataset, "root": str(root), "augment": augment, **data},
        "model": {"arch": arch},
        "schedule": {"policy": "smith_1cycle", "params": {"base_lr": max_lr / 10, "max_lr": max_lr, "stepsize": 1}},
        "train": {"batch_size": batch, "epochs": 2, "eval_batch_size": 7},
    })


def test_cifar10_fixture_trains_and_evaluates_every_test_image(tmp_path):
    train_batches = [(random_uint8((16, 3072), seed), [i % 10 for i in range(16)]) for seed in range(5)]
    test = (random_uint8((23, 3072), 99), [i % 10 for i in range(23)])
    write_cifar10(tmp_path, train_batches, test)
    metrics = train(_run_config("cifar10", tmp_path, "cifar3", batch=16, augment="mirror"), tmp_path / "out")
    assert metrics["status"] == "completed" and metrics["iterations"] == 2 * (80 // 16)
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    # Accuracy is a count over all 23 test images (eval batches of 7: 7+7+7+2).
    assert np.allclose((history.test_accuracy * 23) % 1, 0)


def test_imagefolder_fixture_trains_resnet50(tmp_path):
    classes = ["n01440764", "n02102040"]
    write_image_folder(tmp_path, classes, per_class=3, size=(40, 48), seed=0)
    # Batches of 3 through ResNet-50's batch norm: a small LR keeps the loss from blowing up.
    cfg = _run_config("imagefolder", tmp_path, "resnet50", batch=3, max_lr=1e-3, classes=classes)
    metrics = train(cfg, tmp_path / "out")
    assert metrics["status"] == "completed" and metrics["iterations"] == 4
    assert 0.0 <= metrics["final"]["test_accuracy"] <= 1.0
