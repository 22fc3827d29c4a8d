"""scripts/gpu_check.py where a CPU can run it: each family's real path (TrainingRun's epochs,
evaluation, checkpoint and resume on data in the real formats), the bare anchors, and the rates
record that `onecycle plan` reads. The CUDA steps themselves run only on a GPU machine."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from conftest import REPO
from onecycle.experiments import cost, rates


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


@pytest.mark.slow
def test_each_family_runs_its_real_path_and_resumes_exactly(gpu_check):
    threads = torch.get_num_threads()
    lines: list[str] = []
    try:
        measured, failures = gpu_check.families_step(gpu_check.CPU_FAMILIES, ("deterministic",),
                                                     torch.device("cpu"), lines)
    finally:
        torch.set_num_threads(threads)
    assert failures == 0
    assert set(measured) == {("in_memory", "deterministic"), ("image_folder", "deterministic")}
    for family, result in measured.values():
        assert result.resumed and result.train_images_per_s > 0 and result.eval_images_per_s > 0
    assert [line.split(":")[0] for line in lines] == ["in_memory", "image_folder"]
    assert all(line.endswith("resume exact") for line in lines)


@pytest.mark.slow
def test_anchors_run(gpu_check):
    lines, measured = gpu_check.anchor_lines(0.02, torch.device("cpu"))
    assert len(lines) == 2 and all(rate > 0 for rate in measured.values())


def test_rates_record_is_what_plan_reads(gpu_check, tmp_path):
    # Made-up measurements: the record turns images/s into TFLOP/s as plan counts FLOPs.
    family = gpu_check.IN_MEMORY
    deterministic = gpu_check.FamilyRates(train_images_per_s=1000.0, eval_images_per_s=5000.0, checkpoint_s=0.1,
                                          resumed=True)
    fast = gpu_check.FamilyRates(3000.0, 9000.0, 0.1, True)
    record = gpu_check.rates_record({("in_memory", "deterministic"): (family, deterministic),
                                     ("in_memory", "fast"): (family, fast)}, {"anchor": 1.0}, "Fake GPU")
    path = tmp_path / "rates.json"
    path.write_text(json.dumps(record))
    read = rates.load_rates("gpu", None, path)
    train_flops, eval_flops = cost.model_flops("resnet56", "{}", 3, 32, 10)
    assert read.families["in_memory"].train_tflops == pytest.approx(1000.0 * train_flops / 1e12, rel=1e-12)
    assert read.families["in_memory"].eval_tflops == pytest.approx(5000.0 * eval_flops / 1e12, rel=1e-12)
    assert "Fake GPU" in read.families["in_memory"].source
    assert record["families"]["in_memory"]["fast_train_images_per_s"] == 3000.0
    # The family not measured keeps the default.
    assert read.families["image_folder"].train_tflops == rates.DEVICE_TFLOPS["gpu"]
