"""The CUDA paths, checked against the CPU: run by `make gpu-check` on a GPU machine, skipped
elsewhere. Each test compares a result on CUDA with the same computation on the CPU, so it
fails if a device path silently differs (a tensor left on the wrong device, a transform that
depends on where it runs)."""

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import FLOAT64_RTOL, coasting_schedule, float64_training
from onecycle import data
from onecycle.experiments.config import RunConfig, parse
from onecycle.models.layers import CaffeBatchNorm2d
from onecycle.training.run import train

pytestmark = [pytest.mark.gpu, pytest.mark.numerics,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def test_sharded_batch_norm_on_cuda_equals_the_cpu():
    # In float64: a channel's statistics of a shard sum 4 x 36 = 144 terms, which round to at
    # most 144 u = 1.6e-14 of their magnitudes on either device, in any order; the outputs
    # (|value| < 5 for these draws) agree to far better than 1e-12.
    torch.manual_seed(0)
    x = torch.randn(16, 8, 6, 6, dtype=torch.float64)
    layers = {}
    for device in ("cpu", "cuda"):
        bn = CaffeBatchNorm2d(8, moving_average_fraction=0.9).double().to(device)
        bn.shards = 4
        out = bn(x.to(device))
        layers[device] = (out.cpu(), bn.mean_sum.cpu(), bn.var_sum.cpu())
    for got, want in zip(layers["cuda"], layers["cpu"], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    reference = torch.cat([F.batch_norm(part, None, None, training=True, eps=1e-5) for part in x.split(4)])
    torch.testing.assert_close(layers["cpu"][0], reference, rtol=0, atol=1e-12)


def test_caffe_transform_batches_on_cuda_equal_the_cpu():
    images = torch.randint(0, 256, (40, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    dataset = data.ArrayDataset(images, torch.arange(40) % 10, 10)
    transform = data.CaffeTransform(mean_image=dataset.mean_image())
    outputs = {}
    for device in ("cpu", "cuda"):
        batches = data.Batches(dataset, 16, shuffle=True, drop_last=False, augment="mirror",
                               caffe=transform, seed=3, device=device)
        outputs[device] = [(x.cpu(), y.cpu()) for x, y in batches.epoch(2)]
    for (x_gpu, y_gpu), (x_cpu, y_cpu) in zip(outputs["cuda"], outputs["cpu"], strict=True):
        assert torch.equal(y_gpu, y_cpu)
        # Pixel minus mean on the 0..255 scale: one float32 subtraction (and the mean's own
        # rounding), each within half an ulp of 256, 2^-24 x 256 = 1.5e-5.
        torch.testing.assert_close(x_gpu, x_cpu, rtol=0, atol=1e-4)


def test_cached_imagenet_batches_on_cuda_equal_the_cpu(tmp_path, monkeypatch):
    # Caffe's ImageNet layer from the squashed cache: the same uint8 pixels minus the same
    # float32 mean values, one subtraction on either device, so the batches are equal exactly;
    # the prefetched uint8 rows go through pinned memory.
    from data_fixtures import write_image_folder
    from onecycle.data.caffe_batches import CaffeCachedBatches
    from onecycle.data.squash_cache import split_mean_image, squash_cache

    monkeypatch.delenv("ONECYCLE_MEAN_CACHE", raising=False)
    write_image_folder(tmp_path, ["n01440764", "n02102040"], per_class=6, size=(300, 400), seed=5)
    split = data.load_split("imagefolder", "train", tmp_path, class_list=["n01440764", "n02102040"])
    cache = squash_cache(split)
    mean = split_mean_image(split, cache)
    outputs = {}
    for device in ("cpu", "cuda"):
        batches = CaffeCachedBatches(split, cache, 4, shuffle=True, drop_last=True, seed=2, mean_image=mean,
                                     crop_size=227, train=True, mirror=True, device=device)
        outputs[device] = [(x.cpu(), y.cpu()) for x, y in batches.epoch(1)]
        assert {x.device.type for x, _ in batches.epoch(0)} == {device}
    for (x_gpu, y_gpu), (x_cpu, y_cpu) in zip(outputs["cuda"], outputs["cpu"], strict=True):
        assert torch.equal(y_gpu, y_cpu) and torch.equal(x_gpu, x_cpu)


def _digits_run(schedule: dict | None = None, **train_keys) -> RunConfig:
    """ResNet-20 on the 8x8 digits (scikit-learn's, no download) with every Caffe option on."""
    return parse(RunConfig, {
        "name": "cuda-check", "seed": 0,
        "data": {"dataset": "digits", "augment": "mirror", "normalize": "caffe_mean_image"},
        "model": {"arch": "resnet20", "init": "prototxt"},
        "optim": {"algorithm": "nesterov", "update_rule": "caffe", "multipliers": "prototxt",
                  "weight_decay": 1.0e-4},
        "schedule": schedule or {"policy": "smith_1cycle",
                                 "params": {"variant": "caffe", "base_lr": 0.001, "max_lr": 0.01, "stepsize": 10,
                                            "momentum": 0.95, "min_momentum": 0.85}},
        "train": {"batch_size": 64, "epochs": 1, "eval_batch_size": 360, "batch_norm_shards": 4, **train_keys},
    })


def test_training_on_cuda_follows_the_cpu_run(tmp_path):
    # The same batches, weights and schedule on both devices: the runs differ only in the order
    # of float sums. Compared in float64 after one step and then a coasting LR of 0, to
    # FLOAT64_RTOL (the derivation is in tests/conftest.py); a whole fp32 run on CUDA follows.
    with float64_training():
        runs = {device: train(_digits_run(coasting_schedule(0.001), device=device, log_every=1), tmp_path / device)
                for device in ("cpu", "cuda")}
    assert runs["cuda"]["provenance"]["device"].startswith("cuda")
    logs = {device: pd.read_csv(tmp_path / device / "train_log.csv") for device in runs}
    assert len(logs["cuda"]) == 22
    pd.testing.assert_series_equal(logs["cuda"].train_loss, logs["cpu"].train_loss, check_exact=False,
                                   rtol=FLOAT64_RTOL, atol=0)
    cpu, gpu = runs["cpu"]["final"], runs["cuda"]["final"]
    assert gpu["iteration"] == cpu["iteration"] == 22
    assert gpu["test_loss"] == pytest.approx(cpu["test_loss"], rel=FLOAT64_RTOL, abs=0)
    # A prediction flips only on an image whose top two logits lie within FLOAT64_RTOL.
    assert abs(gpu["test_accuracy"] - cpu["test_accuracy"]) * 360 <= 1 + 1e-9
    fp32 = train(_digits_run(device="cuda"), tmp_path / "fp32")
    assert fp32["status"] == "completed" and fp32["iterations"] == 22


def test_bf16_and_channels_last_on_cuda_train_and_are_recorded(tmp_path):
    metrics = train(_digits_run(device="cuda", precision="bf16", channels_last=True, mode="fast"), tmp_path)
    assert metrics["status"] == "completed"
    train_config = metrics["config"]["train"]
    assert (train_config["precision"], train_config["channels_last"], train_config["mode"]) == ("bf16", True, "fast")


def test_deterministic_mode_repeats_a_cuda_run_bit_for_bit(tmp_path):
    # train.mode deterministic on CUDA: cuBLAS's deterministic workspace, deterministic
    # algorithms without warn_only (an op without one would stop the run), no autotuning, no TF32.
    for name in ("first", "second"):
        train(_digits_run(device="cuda", log_every=1), tmp_path / name)
    for file in ("train_log.csv", "history.csv"):
        first, second = (pd.read_csv(tmp_path / name / file) for name in ("first", "second"))
        pd.testing.assert_frame_equal(first.drop(columns="wall_time_s", errors="ignore"),
                                      second.drop(columns="wall_time_s", errors="ignore"), check_exact=True)


def test_fused_batch_norm_on_cuda_keeps_caffes_sums_of_the_cpu():
    # The CUDA path's batch norm (onecycle.models.fused_batch_norm) against the CPU's sums, in
    # float64 after 10 steps: both within (n + 4 x steps + 1) u V of the exact estimate
    # (tests/test_lean_step.py derives it), n = 4 x 36 per shard, V = 400 bounds squared
    # deviations of these draws (|x| < 10).
    from onecycle.models.fused_batch_norm import use_fused_running_statistics

    torch.manual_seed(0)
    sums = CaffeBatchNorm2d(8, moving_average_fraction=0.9).double()
    sums.shards = 4
    fused = use_fused_running_statistics(torch.nn.Sequential(copy.deepcopy(sums))).to("cuda")[0]
    for step in range(10):
        x = torch.randn(16, 8, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(step)) * 2 + 1
        sums(x), fused(x.cuda())
    bound = 2 * (144 + 4 * 10 + 1) * 2.0**-53 * 400
    for got, want in zip(fused.running_mean_var(), sums.running_mean_var(), strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=bound)
