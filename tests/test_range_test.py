"""The LR range test as a library call: ramps, recorded columns, divergence stop, restore."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from onecycle.bounds import Suggestion
from onecycle.plots import plot_range_test
from onecycle.range_test import bounds_record, combine_bounds, lr_range_test, ramp_lr


def _problem(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(256, 10)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    return model, optimizer, loader


def test_ramps_match_their_definitions():
    # Smith's linear ramp = Caffe triangular with base 0, stepsize = max_iter (docs/paper_reference.md C1).
    assert ramp_lr("linear", 0.0, 3.0, 20000, 5000) == 0.75
    assert ramp_lr("linear", 0.1, 1.1, 10, 0) == 0.1
    # torch-lr-finder's exponential ramp reaches end_lr at the last iteration.
    assert ramp_lr("exponential", 1e-4, 1.0, 5, 0) == pytest.approx(1e-4)
    assert ramp_lr("exponential", 1e-4, 1.0, 5, 2) == pytest.approx(1e-2)
    assert ramp_lr("exponential", 1e-4, 1.0, 5, 4) == pytest.approx(1.0)


def test_records_every_column_and_restores_model_and_optimizer():
    model, optimizer, loader = _problem()
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_lr = optimizer.param_groups[0]["lr"]
    result = lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=0.5, iterations=20,
                           eval_batches=loader, eval_every=5, momentum_range=(0.95, 0.85))
    h = result.history
    assert list(h.iteration) == list(range(20)) and result.diverged is None
    assert h.lr.tolist() == pytest.approx([0.5 * i / 20 for i in range(20)])
    assert h.momentum.iloc[0] == pytest.approx(0.95) and h.momentum.iloc[10] == pytest.approx(0.90)
    # Bias-corrected EMA: the first smoothed value is the first loss itself.
    assert h.smoothed_loss.iloc[0] == pytest.approx(h.train_loss.iloc[0])
    evaluated = h.dropna(subset=["test_accuracy"]).iteration.tolist()
    assert evaluated == [4, 9, 14, 19]
    assert h.test_accuracy.dropna().between(0, 1).all()
    assert set(result.suggestions) >= {"smith_accuracy_peak", "fastai_valley", "steepest_slope_log_lr"}
    for key, value in model.state_dict().items():
        assert torch.equal(value, before_model[key]), key
    assert optimizer.param_groups[0]["lr"] == before_lr and not optimizer.state


def test_divergence_stops_the_test_and_is_recorded():
    model, optimizer, loader = _problem()
    result = lr_range_test(model, loader, optimizer, start_lr=1.0, end_lr=1e6, iterations=60,
                           ramp="exponential", divergence_factor=4.0)
    assert result.diverged is not None
    assert len(result.history) == result.diverged["iteration"] + 1 < 60
    last = result.history.iloc[-1]
    assert not math.isfinite(last.train_loss) or last.smoothed_loss > 4 * result.history.smoothed_loss.iloc[:-1].min()


def test_same_seed_same_curve():
    curves = []
    for _ in range(2):
        model, optimizer, loader = _problem(seed=3)
        curves.append(lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=0.3, iterations=15).history)
    assert curves[0].train_loss.tolist() == curves[1].train_loss.tolist()


def test_combined_bounds_take_the_median_over_seeds():
    records = [{"chosen_rule": "r", "policy_kind": "1cycle", "base_lr": b / 10, "max_lr": b} for b in (0.2, 0.1, 0.4)]
    records.append({"chosen_rule": "r", "policy_kind": "1cycle", "base_lr": None, "max_lr": None})
    combined = combine_bounds(records)
    assert combined["max_lr"] == pytest.approx(0.2) and combined["base_lr"] == pytest.approx(0.02)
    assert (combined["n_seeds"], combined["n_seeds_with_bounds"]) == (4, 3)


def test_momentum_range_test_holds_lr_and_ramps_momentum(tmp_path):
    # Part 1 §4.3, Fig 7b: LR 0.01 held, momentum 0.7 -> 1 over the test.
    model, optimizer, loader = _problem()
    result = lr_range_test(model, loader, optimizer, start_lr=0.01, end_lr=0.01, iterations=10,
                           momentum_range=(0.7, 1.0), eval_batches=loader, eval_every=5)
    assert set(result.history.lr) == {0.01}
    assert result.history.momentum.tolist() == pytest.approx([0.7 + 0.03 * i for i in range(10)])
    assert result.suggestions == {}
    record = bounds_record(result.suggestions, "smith_accuracy_peak", "1cycle", None)
    assert record["max_lr"] is None and record["base_lr"] is None
    paths = plot_range_test([result.history], record, tmp_path / "momentum", "Part 1 Fig 7b", x="momentum")
    assert all(p.stat().st_size > 1000 for p in paths)


def test_momentum_range_test_config_needs_a_momentum_ramp():
    from onecycle.config import ConfigError, RangeTestSpec, parse

    assert parse(RangeTestSpec, {"start_lr": 0.01, "end_lr": 0.01, "iterations": 100,
                                 "momentum_range": [0.7, 1.0]}).momentum_range == [0.7, 1.0]
    with pytest.raises(ConfigError, match="give momentum_range for a momentum range test"):
        parse(RangeTestSpec, {"start_lr": 0.01, "end_lr": 0.01, "iterations": 100})


def test_a_max_lr_of_zero_records_no_bounds_with_the_reason():
    # Smith's accuracy peak on the first evaluation of a ramp from 0 proposes max_lr = 0: no LR.
    at_zero = {"smith_accuracy_peak": Suggestion("smith_accuracy_peak", 0.0, None, "max of test_accuracy at lr=0")}
    record = bounds_record(at_zero, "smith_accuracy_peak", "1cycle", None)
    assert (record["base_lr"], record["max_lr"]) == (None, None)
    assert "max_lr=0.0, which is not a positive LR" in record["no_bounds"]
    undecided = {"smith_accuracy_peak": Suggestion("smith_accuracy_peak", None, None, "too few evaluations")}
    assert bounds_record(undecided, "smith_accuracy_peak", "1cycle", None)["no_bounds"] == (
        "rule 'smith_accuracy_peak' proposed no max_lr: too few evaluations")
    assert "momentum range test" in bounds_record({}, "smith_accuracy_peak", "1cycle", None)["no_bounds"]
    combined = combine_bounds([record, record])
    assert combined["max_lr"] is None and "not a positive LR" in combined["no_bounds"]


def test_a_range_test_without_bounds_writes_them_and_its_training_fails_in_one_line(tmp_path, monkeypatch, capsys):
    # The job end to end (digits: no download): bounds.json and metrics.json are written, the
    # combined bounds say why there are none, and the training that needs them stops in one line.
    from onecycle import bounds, cli, io

    real = bounds.suggest_all
    monkeypatch.setattr(bounds, "suggest_all", lambda history: {
        **real(history), "smith_accuracy_peak": Suggestion("smith_accuracy_peak", 0.0, None, "peak at lr=0")})
    job = {"name": "e/seed0", "experiment": "e", "seed": 0,
           "data": {"dataset": "digits"}, "model": {"arch": "resnet20"},
           "train": {"batch_size": 32},
           "range_test": {"start_lr": 0.0, "end_lr": 0.1, "iterations": 12, "eval_every": 3, "eval_subset": 100}}
    io.write_json(tmp_path / "range.json", job)
    assert cli.main(["range-test", "--config", str(tmp_path / "range.json"), "--out", str(tmp_path / "rt")]) == 0
    assert "no bounds: rule 'smith_accuracy_peak' proposed max_lr=0.0" in capsys.readouterr().out
    assert io.read_json(tmp_path / "rt" / "metrics.json")["bounds"]["max_lr"] is None
    assert cli.main(["combine-bounds", "--out", str(tmp_path / "bounds.json"), str(tmp_path / "rt" / "bounds.json")]) == 0
    run = {**{k: v for k, v in job.items() if k != "range_test"}, "name": "e/g/seed0", "group": "g",
           "schedule": {"policy": "smith_1cycle", "lr_bounds": "range_test", "params": {"stepsize": 4}},
           "train": {"batch_size": 32, "epochs": 1}}
    io.write_json(tmp_path / "run.json", run)
    capsys.readouterr()
    assert cli.main(["train", "--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "train"),
                     "--bounds", str(tmp_path / "bounds.json")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("onecycle: error: the range test gave no bounds (no seed's range test gave bounds")
    assert "not a positive LR" in error and "\n" not in error
    assert not (tmp_path / "train" / "metrics.json").exists()
