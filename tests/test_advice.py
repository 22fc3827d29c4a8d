"""`onecycle.advise`: range tests over seeds, every rule's suggestion checked by short 1cycle
trainings on a held-out part of the data, within the user's budget (issue 30)."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import onecycle
from onecycle import bounds
from onecycle.advice import (CANDIDATE_MERGE_RATIO, GRID_FACTOR, RANGE_TEST_DEFAULTS, advise, candidates, grid,
                             rule_suggestions)
from onecycle.advice_data import split_data

EPOCHS, BATCH = 4, 50  # the "real training": 4 epochs of 40 batches, 160 iterations
RANGE = {"start_lr": 1e-3, "end_lr": 30.0, "iterations": 30, "eval_every": 3}


def _problem(seed=0):
    """Ten classes of a linear teacher on 2 000 examples; a small MLP with momentum SGD."""
    torch.manual_seed(seed)
    x = torch.randn(2000, 20)
    y = (x @ torch.randn(20, 10)).argmax(1)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), loader


@pytest.fixture(scope="module")
def advised():
    model, optimizer, loader = _problem()
    before = ({k: v.clone() for k, v in model.state_dict().items()}, optimizer.state_dict())
    lines, rng = [], torch.random.get_rng_state()
    advice = advise(model, optimizer, loader, epochs=EPOCHS, budget_iterations=700, range_test=RANGE,
                    log=lines.append)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the seeds it set are undone
    return advice, model, optimizer, loader, before, lines


def test_every_distinct_suggestion_and_a_grid_point_either_side_is_tried(advised):
    advice, *_ = advised
    trials = advice.trials
    assert list(trials.max_lr) == sorted(trials.max_lr)
    found = candidates(advice.suggestions)
    assert [lr for lr, _ in found] == list(trials[trials.source == "rule"].max_lr)
    # Each rule's median is within the merge ratio of the candidate that stands for it.
    for lr, rules in found:
        for rule in rules:
            assert lr / CANDIDATE_MERGE_RATIO <= advice.suggestions.loc[rule, "median"] <= lr * CANDIDATE_MERGE_RATIO
    assert trials[trials.source == "grid"].max_lr.min() == pytest.approx(found[0][0] / GRID_FACTOR)
    # The medians are the median over the three range tests of each rule's suggestion.
    assert len(advice.range_tests) == 3
    for rule, row in advice.suggestions.iterrows():
        per_seed = [s.suggestions[rule].max_lr for s in advice.range_tests]
        decided = [lr for lr in per_seed if lr is not None and lr > 0]
        assert row["median"] == pd.Series(decided).median() if decided else math.isnan(row["median"])


def test_the_pick_is_the_best_held_out_score_within_the_budget(advised):
    advice, *_ = advised
    trials = advice.trials
    scored = trials[~trials.diverged]
    best = scored.held_out_accuracy.max()
    assert advice.max_lr == scored[scored.held_out_accuracy == best].max_lr.min()  # a tie goes lower
    assert trials.chosen.sum() == 1 and trials.loc[trials.chosen, "max_lr"].item() == advice.max_lr
    spent = sum(len(test.history) for test in advice.range_tests)
    assert advice.cost_iterations == spent + trials.iterations.sum() <= advice.budget_iterations == 700
    # The trials share what the range tests left, each at least a range test long, at most the run.
    assert advice.trial_iterations == min(advice.total_steps, (700 - spent) // len(trials))
    assert RANGE["iterations"] <= advice.trial_iterations <= advice.total_steps == EPOCHS * 40
    assert (trials[~trials.diverged].iterations == advice.trial_iterations).all()


def test_the_schedule_is_smiths_1cycle_at_the_pick_for_the_real_training(advised):
    advice, _, optimizer, loader, *_ = advised
    schedule = advice.schedule
    assert (schedule.name, schedule.steps) == ("smith_1cycle", EPOCHS * len(loader))
    assert schedule.max_lr == advice.max_lr and advice.base_lr == schedule.base_lr == advice.max_lr / 10
    # The defaults for an optimizer with momentum: the climb over 45 % and cyclical momentum 0.95-0.85.
    assert schedule.stepsize == round(0.45 * schedule.steps)
    assert schedule.momentum(0) == 0.95 and schedule.momentum(schedule.stepsize) == pytest.approx(0.85)
    optimizer = torch.optim.SGD(copy.deepcopy(optimizer.param_groups[0]["params"]), lr=0.01, momentum=0.9)
    scheduler = advice.scheduler(optimizer)  # on a copy: the fixture's optimizer stays as advise left it
    for _ in range(schedule.steps):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == schedule.lr(schedule.steps - 1)
    with pytest.raises(ValueError, match="tried to step"):
        scheduler.step()


def test_the_model_and_optimizer_come_back_as_they_were(advised):
    _, model, optimizer, _, before, lines = advised
    assert all(torch.equal(value, before[0][key]) for key, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())  # as before: no trial's gradient left
    assert optimizer.state_dict()["param_groups"][0]["lr"] == 0.01
    # The log said what ran: three range tests, each trial, the pick.
    assert sum(line.startswith("advise: range test seed") for line in lines) == 3
    assert lines[-1].startswith("advise: max_lr ")


def test_a_suggestion_that_wrecks_training_is_caught(monkeypatch):
    # One rule suggests an LR far past divergence (torch-lr-finder's did, issue 30): its trial
    # diverges and the pick is elsewhere.
    real = bounds.suggest_all

    def with_a_wreck(*args, **kwargs):
        return {**real(*args, **kwargs), "fastai_slide": bounds.Suggestion("fastai_slide", 500.0, 500.0, "")}

    monkeypatch.setattr(bounds, "suggest_all", with_a_wreck)
    model, optimizer, loader = _problem()
    advice = advise(model, optimizer, loader, epochs=EPOCHS, budget_iterations=700, range_test=RANGE)
    wreck = advice.trials[advice.trials.max_lr == 500.0]
    assert wreck.diverged.item() and "loss" in wreck.divergence.item()
    assert advice.max_lr < 500.0 and not advice.trials.loc[advice.trials.chosen, "diverged"].item()


def test_the_held_out_part_is_never_trained_on_and_each_seed_has_its_order():
    x = torch.arange(100.0)[:, None]
    data = split_data(TensorDataset(x, torch.zeros(100, dtype=torch.long)), holdout=0.2, batch_size=10)
    held = torch.cat([batch[0] for batch in data.held_out]).flatten().tolist()
    trained = [torch.cat([batch[0] for batch in data.train(seed)]).flatten().tolist() for seed in (0, 0, 1)]
    assert len(held) == 20 and sorted(held + trained[0]) == list(range(100))
    assert trained[0] == trained[1] != trained[2] and sorted(trained[0]) == sorted(trained[2])
    assert data.steps_per_epoch == 10  # the real training's batches over all 100 examples


@pytest.mark.parametrize("arguments, message", [
    ({}, "give budget (a fraction of the real training's 160 iterations, e.g. 0.1) or budget_iterations"),
    ({"budget": 0.5, "budget_iterations": 100}, "or budget_iterations, exactly one"),
    ({"budget": 0.5}, "a budget of 80 iterations cannot pay for 3 range tests of 30 and two trials as long: "
                      "give at least 150 iterations (0.938 of the real training's 160)"),
    ({"budget": 2, "schedule_params": {"stepsize": 10}}, "schedule_params: 'stepsize' is set by advise"),
    ({"budget": 2, "schedule_params": {"pct_start": 0.7}}, "smith_1cycle: pct_start must be <= 0.5"),
    ({"budget": 2, "range_test": {**RANGE, "eval_batches": []}}, "range_test: 'eval_batches' is advise's own"),
    ({"budget": 2, "seeds": []}, "seeds must be a non-empty list"),
    ({"budget": 2, "divisor": 1}, "divisor must be a number > 1"),
])
def test_bad_arguments_are_one_line_errors_before_any_work(arguments, message):
    model, optimizer, loader = _problem()
    arguments = {"range_test": RANGE, **arguments}
    with pytest.raises(ValueError) as caught:
        advise(model, optimizer, loader, epochs=EPOCHS, **arguments)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_candidates_merge_suggestions_within_the_ratio_and_the_grid_stops_below_the_ceiling():
    medians = {"a": 0.01, "b": 0.0115, "c": 0.012, "d": 0.05, "e": 0.1, "f": 0.124, "g": math.nan}
    table = pd.DataFrame({"median": medians})
    # 0.012 <= 1.25 x 0.01 joins the first group, which its lower median 0.0115 stands for.
    assert candidates(table) == [(0.0115, ["a", "b", "c"]), (0.05, ["d"]), (0.1, ["e", "f"])]
    assert grid(0.01, 0.1, 0.3, 2) == [0.01 / 4, 0.01 / 2, 0.2]  # 0.4 is past the ceiling
    assert grid(0.01, 0.1, 0.15, 1) == [0.005]


def test_rule_suggestions_leave_out_rules_that_proposed_no_positive_lr():
    from onecycle.range_test import RangeTestResult

    def result(peak):
        suggestions = {"smith_accuracy_peak": bounds.Suggestion("smith_accuracy_peak", peak, None, "")}
        return RangeTestResult(pd.DataFrame(), suggestions, None, ramp="linear", start_lr=0.0)

    table = rule_suggestions([result(0.2), result(0.0), result(None), result(0.4)])
    assert table.loc["smith_accuracy_peak", "median"] == pytest.approx(0.3)  # of 0.2 and 0.4


def test_onecycle_advise_is_the_library_function_and_its_defaults_are_fastais_lr_find():
    assert onecycle.advise is advise
    assert RANGE_TEST_DEFAULTS["start_lr"] == 1e-7 and RANGE_TEST_DEFAULTS["end_lr"] == 10.0


def test_the_advice_figure_marks_the_pick(advised):
    from matplotlib.figure import Figure

    advice, *_ = advised
    figure = advice.plot()
    assert isinstance(figure, Figure)
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert f"chosen: max_lr {advice.max_lr:.3g}" in labels


@pytest.mark.slow
def test_onecycle_advise_on_a_run_config_writes_the_run_at_its_pick(tmp_path, capsys):
    # The 8x8 digits (scikit-learn's, no download) with SC's ResNet-20, as tests/test_range_test.py.
    from onecycle import cli, io
    from onecycle.experiments.config import load_run_config

    run = {"name": "digits/advise", "seed": 0, "data": {"dataset": "digits"}, "model": {"arch": "resnet20"},
           "optim": {"momentum": 0.9},
           "train": {"batch_size": 32, "epochs": 3, "eval_batch_size": 500},
           "schedule": {"policy": "smith_1cycle",
                        "params": {"variant": "caffe", "stepsize_epochs": 1.35, "momentum": 0.95,
                                   "min_momentum": 0.85}},
           "range_test": {"ramp": "linear", "start_lr": 0.0, "end_lr": 0.5, "iterations": 24, "eval_every": 3}}
    io.write_json(tmp_path / "run.json", run)
    out = tmp_path / "advice"
    assert cli.main(["advise", "--config", str(tmp_path / "run.json"), "--out", str(out),
                     "--budget-iterations", "400", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    record = io.read_json(out / "advice.json")
    trials = pd.read_csv(out / "trials.csv")
    assert record["max_lr"] == trials.loc[trials.chosen, "max_lr"].item()
    assert record["cost_iterations"] <= 400 and record["total_steps"] == 3 * (1437 // 32)
    assert f"max_lr {record['max_lr']:.4g}" in printed and (out / "advice.png").stat().st_size > 1000
    # run.json is the run config at the pick, ready for `onecycle train`.
    ready = load_run_config(out / "run.json")
    assert ready.schedule.params["max_lr"] == record["max_lr"] and ready.schedule.lr_bounds == "config"
    assert ready.schedule.params["stepsize_epochs"] == 1.35
    assert {"range_test", "advise"}.isdisjoint(json.loads((out / "run.json").read_text()))
