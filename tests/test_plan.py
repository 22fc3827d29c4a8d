"""`onecycle plan`: jobs, iterations, images, FLOPs and device-hours, checked against counts by hand."""

import json

import pytest

from onecycle import cli
from onecycle.experiments import cost as plan
from onecycle.experiments import rates
from onecycle.experiments.config import ConfigError
from onecycle.experiments.expansion import expand

# Caffe's LeNet (lenet_train_test.prototxt) on a 28x28 image, multiply-adds by hand:
# conv1 20 x 5x5 -> 24x24x20 outputs x 25 = 288 000; pool -> 12x12x20; conv2 50 x 5x5x20 ->
# 8x8x50 outputs x 500 = 1 600 000; pool -> 4x4x50 = 800; ip1 800 x 500 = 400 000; ip2 500 x 10
# = 5 000. FLOPs = 2 x multiply-adds.
LENET_FORWARD = 2 * (288_000 + 1_600_000 + 400_000 + 5_000)  # 4 586 000
# Backward: every layer's weight gradient (its forward FLOPs again), and the input gradient of
# every layer but conv1 (the images need none).
LENET_TRAIN = 3 * LENET_FORWARD - 2 * 288_000  # 13 182 000

LENET = {"data": {"dataset": "mnist"}, "model": {"arch": "lenet"}, "train": {"batch_size": 100}}
SMALL = {
    "results_dir": "out", "seeds": [0],
    "experiments": {
        # 60 000 // 100 = 600 it/epoch, 2 epochs; range test 10 it, evaluated at it 5 and 10 on 1 000.
        "plain": {
            "base": LENET, "published": {"g": "some_row"},
            "range_test": {"start_lr": 0.0, "end_lr": 0.1, "iterations": 10, "eval_every": 5, "eval_subset": 1000},
            "groups": {"g": {"schedule": {"policy": "fixed", "params": {"base_lr": 0.01}}, "train": {"epochs": 2}}},
        },
        # Part 1's protocol, seed 0: batch 100 + 4 x 3 = 112 fed, epochs counted in 100: 1 200 it;
        # 60 000 // 112 = 535 it per pass -> 3 passes; evaluated after pass 2 and the last
        # (eval_every_epochs 2), each on the 10 000 test images + Caffe's sample of 2 x 50.
        "protocol": {
            "seed_protocol": "part1",
            "base": {**LENET, "train": {"batch_size": 100, "eval_every_epochs": 2,
                                        "caffe_test": {"test_iter": 2, "batch": 50}}},
            "groups": {"g": {"schedule": {"policy": "fixed", "params": {"base_lr": 0.01}}, "train": {"epochs": 2}}},
        },
    },
}


def test_lenet_flops_are_the_hand_count():
    assert plan.model_flops("lenet", "{}", 1, 28, 10) == (LENET_TRAIN, LENET_FORWARD)


def test_job_counts_by_hand():
    small = expand(SMALL)
    costs = {c.job_id: c for jobs in plan.experiment_costs(small).values() for c in jobs}
    assert costs["plain/g/seed0"] == plan.JobCost("plain/g/seed0", "plain", "train", "in_memory", 1200, 120_000,
                                                  2 * 10_000, 120_000 * LENET_TRAIN, 20_000 * LENET_FORWARD)
    assert costs["plain/seed0"] == plan.JobCost("plain/seed0", "plain", "range_test", "in_memory", 10, 1000,
                                                2 * 1000, 1000 * LENET_TRAIN, 2000 * LENET_FORWARD)
    assert costs["protocol/g/seed0"] == plan.JobCost("protocol/g/seed0", "protocol", "train", "in_memory", 1200,
                                                     1200 * 112, 2 * 10_100, 1200 * 112 * LENET_TRAIN,
                                                     20_200 * LENET_FORWARD)


def test_printed_plan_totals_and_order(capsys, tmp_path):
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    # 1 MFLOP/s, so that the hand-counted FLOPs (3.4 TFLOP) make hours to compare.
    assert cli.main(["plan", "--config", str(config), "--tflops", "1e-6", "--devices", "2"]) == 0
    out = capsys.readouterr().out
    flops = (121_000 + 134_400) * LENET_TRAIN + (22_000 + 20_200) * LENET_FORWARD
    hours = flops / 1e6 / 3600
    assert "at 1e-06 TFLOP/s per device (--tflops)" in out
    total = next(line for line in out.splitlines() if line.startswith("total "))
    # jobs; 1 200 + 10 + 1 200 iterations; 121 000 + 22 000 + 134 400 + 20 200 = 297 600 images
    assert total.split()[1:4] == ["3", "2.41k", "298k"] and total.split()[-1] == f"{hours:.2f}"
    assert f"on 2 device(s) about {hours / 2 / 24:,.1f} days" in out
    order = [line.split()[1] for line in out.splitlines() if line[:5].strip().endswith(".")]
    assert order == ["plain", "protocol"]
    assert f"--configfile {config} out/tables/plain.md" in out


def test_order_puts_published_experiments_first_cheapest_first():
    small = expand(SMALL)
    costs = plan.experiment_costs(small)
    # "protocol" has no published rows: last, whatever its cost.
    assert plan.suggested_order(small, costs) == ["plain", "protocol"]
    cheap_unpublished = {**costs, "protocol": costs["protocol"][:0]}
    assert plan.suggested_order(small, cheap_unpublished) == ["plain", "protocol"]


def test_rate_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(rates, "RATES_FILE", tmp_path / "absent.json")
    default = rates.load_rates("gpu", None, None)
    assert set(default.families) == {"in_memory", "image_folder"}
    assert all(r == rates.FamilyRate(rates.DEVICE_TFLOPS["gpu"], rates.DEVICE_TFLOPS["gpu"],
                                     "the default for a gpu, onecycle.experiments.rates.DEVICE_TFLOPS")
               for r in default.families.values())
    assert rates.load_rates("cpu", 2.5, None).families["image_folder"].train_tflops == 2.5
    with pytest.raises(ConfigError, match="--tflops -1.0: expected a positive number"):
        rates.load_rates("gpu", -1.0, None)
    with pytest.raises(ConfigError, match="--device-class 'tpu'"):
        rates.load_rates("tpu", None, None)
    with pytest.raises(ConfigError, match="nope.json: file not found"):
        rates.load_rates("gpu", None, tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"device_class": "gpu", "families": {"in_memory": {"train_tflops": 0,
                                                                                    "eval_tflops": 1}}}))
    with pytest.raises(ConfigError, match=r"broken.json: not a gpu-check rates record .*in_memory.train_tflops = 0"):
        rates.load_rates("gpu", None, broken)


def test_plan_prices_each_family_at_its_own_rates(tmp_path, capsys):
    # One family measured (training 2 MFLOP/s, evaluation 4: the hand-counted LeNet FLOPs then
    # take hours), the other left at the default.
    record = tmp_path / "rates.json"
    record.write_text(json.dumps({"device_class": "gpu", "device": "Fake GPU", "families": {
        "in_memory": {"train_tflops": 2e-6, "eval_tflops": 4e-6, "measured_with": "resnet56"}}}))
    measured = rates.load_rates("gpu", None, record)
    assert measured.families["in_memory"] == rates.FamilyRate(2e-6, 4e-6, f"{record}: Fake GPU, resnet56")
    assert measured.families["image_folder"].train_tflops == rates.DEVICE_TFLOPS["gpu"]
    # 7.2e9 FLOPs at 2e6 per second: 1 h; 3.6e9 at 4e6: a quarter of an hour.
    job = plan.JobCost("j", "e", "train", "in_memory", 1, 1, 1, train_flops=7.2e9, eval_flops=3.6e9)
    assert job.device_hours(measured) == pytest.approx(1.25, rel=1e-12)
    # Another device class's record is not this one's: the defaults.
    assert rates.load_rates("cpu", None, record).families["in_memory"].train_tflops == rates.DEVICE_TFLOPS["cpu"]
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    assert cli.main(["plan", "--config", str(config), "--calibration", str(record)]) == 0
    out = capsys.readouterr().out
    assert "in_memory: 2e-06 TFLOP/s training, 4e-06 evaluation" in out
    flops_train, flops_eval = (121_000 + 134_400) * LENET_TRAIN, (22_000 + 20_200) * LENET_FORWARD
    hours = (flops_train / 2e6 + flops_eval / 4e6) / 3600
    total = next(line for line in out.splitlines() if line.startswith("total "))
    assert total.split()[-1] == f"{hours:.2f}"
