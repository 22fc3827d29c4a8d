"""Training end to end through the CIFAR and ImageFolder loaders, on fixtures in the real formats."""

import numpy as np
import pandas as pd
import pytest
import torch

from data_fixtures import random_uint8, write_cifar10, write_image_folder
from onecycle import data
from onecycle.experiments.config import RunConfig, parse
from onecycle.data.assembly import normalisation
from onecycle.training.run import train


def _run_config(dataset, root, arch, batch, augment="none", max_lr=0.1, optim=None, **data_keys):
    return parse(RunConfig, {
        "name": f"{dataset}-fixture", "seed": 0,
        "data": {"dataset": dataset, "root": str(root), "augment": augment, **data_keys},
        "model": {"arch": arch},
        "optim": optim or {},
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


def _write_cifar10_fixture(root):
    train_batches = [(random_uint8((16, 3072), seed), [i % 10 for i in range(16)]) for seed in range(5)]
    write_cifar10(root, train_batches, (random_uint8((23, 3072), 99), [i % 10 for i in range(23)]))


def test_caffe_mean_image_comes_from_the_whole_training_set(tmp_path):
    # Smith's prototxts name one mean file; SC's reduced-data runs keep it (onecycle.training.run).
    _write_cifar10_fixture(tmp_path)
    cfg = _run_config("cifar10", tmp_path, "cifar3", batch=16, normalize="caffe_mean_image", train_subset=32)
    subset = data.load_split("cifar10", "train", tmp_path, subset=32)
    transform = normalisation(cfg.data, subset, tmp_path)["caffe"]
    assert torch.equal(transform.mean_image, data.load_split("cifar10", "train", tmp_path).mean_image())
    assert not torch.equal(transform.mean_image, subset.mean_image())
    assert transform.scale == 1.0


def test_cifar3_trains_with_caffe_inputs_and_multipliers(tmp_path):
    # Smith's CIFAR protocol on the 3-layer net: 0..255 minus the mean image, the prototxt's
    # lr_mult / decay_mult (decay_mult 250 on the classifier), Caffe's Nesterov rule.
    _write_cifar10_fixture(tmp_path)
    optim = {"algorithm": "nesterov", "update_rule": "caffe", "weight_decay": 3.0e-3, "multipliers": "prototxt"}
    cfg = _run_config("cifar10", tmp_path, "cifar3", batch=16, augment="mirror", max_lr=0.005, optim=optim,
                      normalize="caffe_mean_image")
    metrics = train(cfg, tmp_path / "out")
    assert metrics["status"] == "completed" and metrics["iterations"] == 10
    assert metrics["config"]["optim"]["multipliers"] == "prototxt"


def test_imagefolder_fixture_trains_resnet50(tmp_path):
    classes = ["n01440764", "n02102040"]
    write_image_folder(tmp_path, classes, per_class=3, size=(40, 48), seed=0)
    # Batches of 3 through ResNet-50's batch norm: a small LR keeps the loss from blowing up.
    cfg = _run_config("imagefolder", tmp_path, "resnet50", batch=3, max_lr=1e-3, classes=classes)
    metrics = train(cfg, tmp_path / "out")
    assert metrics["status"] == "completed" and metrics["iterations"] == 4
    assert 0.0 <= metrics["final"]["test_accuracy"] <= 1.0


def test_imagefolder_crops_at_the_models_input_size(tmp_path):
    # AlexNet was built for Caffe's 227x227 crops; the folder pipeline must follow the model.
    classes = ["n01440764", "n02102040"]
    write_image_folder(tmp_path, classes, per_class=3, size=(40, 48), seed=0)
    cfg = _run_config("imagefolder", tmp_path, "alexnet", batch=3, max_lr=1e-3, classes=classes)
    metrics = train(cfg, tmp_path / "out")
    assert metrics["status"] == "completed" and metrics["iterations"] == 4


def test_train_step_minimises_caffes_total_loss_with_auxiliary_heads():
    # GoogLeNet's train_val.prototxt: loss3 + 0.3 * loss1 + 0.3 * loss2 (onecycle.models.outputs).
    from onecycle.models import WithAuxiliary
    from onecycle.schedules import make_schedule
    from onecycle.training.run import train_step

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.main, self.aux = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)

        def forward(self, x):
            return WithAuxiliary(self.main(x), ((0.3, self.aux(x)),)) if self.training else self.main(x)

    torch.manual_seed(0)
    model = TwoHeads()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        expected = (torch.nn.functional.cross_entropy(model.main(x), y)
                    + 0.3 * torch.nn.functional.cross_entropy(model.aux(x), y))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = train_step(model, optimizer, make_schedule("fixed", steps=1, base_lr=0.1), 0, x, y)
    # The same float32 operations on five samples of three classes, in possibly another order:
    # a few roundings of 2^-24 = 6e-8.
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert model.aux.weight.grad is not None  # the auxiliary head is trained too


def test_your_own_image_folder_with_any_class_names(tmp_path):
    # A user's dataset as the README describes it: train/<class>/ and val/<class>/ with any folder
    # names (spaces, capitals, not WordNet ids), every class taken with classes: all, through the CLI.
    import json

    import yaml

    from onecycle import cli

    classes = ["Red panda", "cat", "dog-2"]
    write_image_folder(tmp_path / "pets", classes, per_class=2, size=(20, 24), seed=0)
    config = {"name": "pets", "data": {"dataset": "imagefolder", "root": str(tmp_path / "pets"), "classes": "all"},
              "model": {"arch": "resnet20"},
              "schedule": {"policy": "fixed", "params": {"base_lr": 0.001}},
              "train": {"batch_size": 3, "epochs": 1, "eval_batch_size": 4, "device": "cpu"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iterations"] == 2  # 6 images, batches of 3
    # Class indices in sorted folder order (torchvision's ImageFolder order), the same for val;
    # all 6 val images scored: the accuracy is a count of 6.
    loaded = data.load_split("imagefolder", "test", tmp_path / "pets", class_list="all")
    assert loaded.classes == ("Red panda", "cat", "dog-2") and len(loaded) == 6
    assert abs(metrics["final"]["test_accuracy"] * 6 - round(metrics["final"]["test_accuracy"] * 6)) < 1e-9
