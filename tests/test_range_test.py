"""The LR range test as a library call: ramps, recorded columns, divergence stop, restore."""

import faulthandler
import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import needs_fashion_mnist, tiny_run
from onecycle.experiments.config import RangeTestConfig, parse
from onecycle.bounds import Suggestion, combine_bounds, suggest_all
from onecycle.report.figures.range_test import RangeSeed, plot_range_test
from onecycle.range_test import lr_range_test, ramp_lr
from onecycle.training.range_test_job import bounds_record, run_range_test_job


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
    # The stop row is the first whose raw or smoothed loss is non-finite or above 4 x the best
    # smoothed loss of the rows before it.
    h = result.history
    best_before = h.smoothed_loss.cummin().shift(1, fill_value=math.inf)
    over = ~(h.train_loss.map(math.isfinite) & h.smoothed_loss.map(math.isfinite)) | \
        (h.train_loss > 4 * best_before) | (h.smoothed_loss > 4 * best_before)
    assert over.tolist() == [False] * (len(h) - 1) + [True]


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
    paths = plot_range_test([RangeSeed(0, result.history)], record, tmp_path / "momentum", "Part 1 Fig 7b", x="momentum")
    assert all(p.stat().st_size > 1000 for p in paths)


def test_momentum_range_test_config_needs_a_momentum_ramp():
    from onecycle.experiments.config import ConfigError, RangeTestSpec, parse

    assert parse(RangeTestSpec, {"start_lr": 0.01, "end_lr": 0.01, "iterations": 100,
                                 "momentum_range": [0.7, 1.0]}).momentum_range == [0.7, 1.0]
    with pytest.raises(ConfigError, match="give momentum_range for a momentum range test"):
        parse(RangeTestSpec, {"start_lr": 0.01, "end_lr": 0.01, "iterations": 100})


# --------------------------------------------------------------------------- issue 14: the
# library in anyone's loop. Each test names the defect it pins (#1 .. #8 of issue 14).


@pytest.fixture
def no_hang():
    """Fail instead of hanging: #1's range test never returned on a generator or an empty
    iterable, looping inside itertools.chain, where no Python signal handler runs. faulthandler's
    watchdog thread ends the whole test process instead, with every thread's traceback."""
    # The problems below take well under a second; 120 s allows a loaded machine.
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _counting(batches, served):
    for batch in batches:
        served.append(1)
        yield batch


def test_1_a_generator_is_read_once_and_the_test_ends_when_it_runs_out(no_hang):
    model, optimizer, loader = _problem()
    batches, served = list(loader), []  # 8 batches
    with pytest.warns(UserWarning, match="train_batches ran out after 8 batches"):
        result = lr_range_test(model, _counting(batches, served), optimizer, start_lr=0.0, end_lr=0.5,
                               iterations=20)
    assert len(served) == 8 and len(result.history) == 8
    assert result.diverged is None and "cache_batches=True" in result.stop_reason
    # The 8 iterations it ran are the first 8 of the planned ramp.
    assert result.history.lr.tolist() == [0.5 * i / 20 for i in range(8)]


def test_1_cache_batches_replays_a_generator_like_the_list_it_yields(no_hang):
    model, optimizer, loader = _problem()
    batches, served = list(loader), []
    replayed = lr_range_test(model, _counting(batches, served), optimizer, start_lr=0.0, end_lr=0.5,
                             iterations=20, cache_batches=True)
    from_list = lr_range_test(model, batches, optimizer, start_lr=0.0, end_lr=0.5, iterations=20)
    assert len(served) == 8 and replayed.stop_reason is None
    # Same weights (restored in between), same batches in the same order, same operations.
    assert replayed.history.train_loss.tolist() == from_list.history.train_loss.tolist()


@pytest.mark.parametrize("empty", [[], iter([]), (b for b in []),
                                   DataLoader(TensorDataset(torch.zeros(0, 10), torch.zeros(0)), batch_size=4)],
                         ids=["list", "iterator", "generator", "DataLoader"])
def test_1_an_empty_iterable_is_a_value_error_naming_it(no_hang, empty):
    model, optimizer, _ = _problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="train_batches yielded no batch"):
        lr_range_test(model, empty, optimizer, start_lr=0.0, end_lr=0.5, iterations=10)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_1_a_one_shot_eval_iterable_is_scored_at_every_evaluation(no_hang):
    model, optimizer, loader = _problem()
    held_out = list(loader)[:2]
    result = lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=0.5, iterations=20,
                           eval_batches=iter(held_out), eval_every=5)
    listed = lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=0.5, iterations=20,
                           eval_batches=held_out, eval_every=5)
    assert result.history.test_loss.dropna().tolist() == listed.history.test_loss.dropna().tolist()
    assert len(result.history.test_loss.dropna()) == 4


def _recording_step_hook(optimizer, seen):
    def hook(opt, args, kwargs):
        group = opt.param_groups[0]
        seen.append((group.get("momentum"), group.get("betas")))
    optimizer.register_step_pre_hook(hook)


@pytest.mark.parametrize("name, make", [
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
    ("nesterov", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True)),
    ("adam", lambda p: torch.optim.Adam(p, lr=0.01)),
    ("adamw", lambda p: torch.optim.AdamW(p, lr=0.01)),
])
def test_2_momentum_range_test_drives_what_each_optimizer_uses_and_records_it(name, make):
    model, _, loader = _problem()
    optimizer = make(model.parameters())
    seen = []
    _recording_step_hook(optimizer, seen)
    result = lr_range_test(model, loader, optimizer, start_lr=0.01, end_lr=0.01, iterations=10,
                           momentum_range=(0.7, 1.0))
    ramp = [0.7 + (1.0 - 0.7) * it / 10 for it in range(10)]
    adam = name.startswith("adam")
    # What the optimizer held when it stepped: beta1 for Adam/AdamW (beta2 untouched), momentum else.
    used = [betas[0] if adam else momentum for momentum, betas in seen]
    assert used == ramp
    if adam:
        assert {betas[1] for _, betas in seen} == {0.999} and all(m is None for m, _ in seen)
    assert result.history.momentum.tolist() == used
    # Restored afterwards.
    group = optimizer.param_groups[0]
    assert (group["betas"] == (0.9, 0.999)) if adam else (group["momentum"] == 0.9)


def test_2_an_lr_range_test_records_adams_beta1_and_momentum_needs_an_optimizer_with_one():
    model, _, loader = _problem()
    result = lr_range_test(model, loader, torch.optim.Adam(model.parameters(), betas=(0.85, 0.99)),
                           start_lr=1e-4, end_lr=1e-2, iterations=5, ramp="exponential")
    assert result.history.momentum.tolist() == [0.85] * 5
    with pytest.raises(ValueError, match="momentum_range sets momentum, but param group 0 of Adagrad"):
        lr_range_test(model, loader, torch.optim.Adagrad(model.parameters()), start_lr=0.01, end_lr=0.01,
                      iterations=5, momentum_range=(0.7, 1.0))


def _scripted_loss(values):
    """A loss_fn returning the given values one by one (with a zero gradient), to stage a curve."""
    values = iter(values)

    def loss_fn(output, target):
        return output.sum() * 0.0 + next(values)
    return loss_fn


def test_3_a_raw_loss_blow_up_that_the_smoothed_loss_rides_out_stops_the_test():
    # #3: the raw loss reached 36 while the smoothed loss stayed under 4 x its best, and the test
    # ran on. 20 iterations at loss 2, one at 36, then the dead net's ln 10.
    losses = [2.0] * 20 + [36.0] + [math.log(10)] * 9
    model, optimizer, loader = _problem()
    result = lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=1.0, iterations=30,
                           loss_fn=_scripted_loss(losses))
    h = result.history
    assert len(h) == 21 and result.diverged["iteration"] == 20
    # The smoothed loss alone would not have stopped it: bias-corrected EMA (beta 0.98) of twenty
    # 2s and one 36 is 2 + 0.02 * 34 / (1 - 0.98**21) = 3.97 < 4 x 2 = 8.
    assert h.smoothed_loss.iloc[20] == pytest.approx(2 + 0.02 * 34 / (1 - 0.98**21))
    assert h.smoothed_loss.iloc[20] < 4 * h.smoothed_loss.iloc[:20].min()
    assert "loss 36 exceeds 4 x the best smoothed loss 2" in result.diverged["reason"]
    assert "diverged at iteration 20" in result.stop_reason


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_3_a_non_finite_loss_stops_the_test(bad):
    model, optimizer, loader = _problem()
    result = lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=1.0, iterations=30,
                           loss_fn=_scripted_loss([2.0] * 5 + [bad] + [2.0] * 24))
    assert len(result.history) == 6 and result.diverged["reason"] == f"loss is {bad}"


def _fashion_mnist_batches(count, batch_size, split="train", seed=0):
    """`count` batches of real Fashion-MNIST, normalised with the training set's mean and std."""
    from onecycle.data import load_split

    train = load_split("fashion_mnist", "train", subset=count * batch_size if split == "train" else None,
                       subset_seed=seed)
    data = train if split == "train" else load_split("fashion_mnist", "test")
    mean, std = train.channel_mean()[0], train.channel_std()[0]
    images = (data.images[:count * batch_size].float() / 255 - mean) / std
    labels = data.labels[:count * batch_size]
    return [(images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size)]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 100), torch.nn.ReLU(),
                               torch.nn.Linear(100, 10))


@needs_fashion_mnist
def test_3_on_fashion_mnist_no_rule_suggests_an_lr_from_past_the_blow_up():
    # Smith's linear ramp far past any usable LR (0 -> 20, SGD momentum 0.9) blows the net up.
    train = _fashion_mnist_batches(50, 64)
    held_out = _fashion_mnist_batches(4, 250, split="test")
    runs = {}
    for factor in (4.0, math.inf):  # math.inf: record past the blow-up, stop only on NaN/inf
        model = _mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
        runs[factor] = lr_range_test(model, train, optimizer, start_lr=0.0, end_lr=20.0, iterations=200,
                                     eval_batches=held_out, eval_every=5, divergence_factor=factor)
    stopped, recorded_on = runs[4.0], runs[math.inf]
    assert stopped.diverged is not None
    blow_up = stopped.diverged["iteration"]
    assert len(recorded_on.history) > blow_up + 1
    # Up to the stop both runs did the same computation (same process, same operations).
    assert recorded_on.history.train_loss.iloc[:blow_up + 1].tolist() == stopped.history.train_loss.tolist()
    blow_up_lr = stopped.history.lr.iloc[blow_up]
    # Suggestions from the run that went on, recomputed with the stop rule: none from past it.
    for run in (stopped, recorded_on):
        for name, suggestion in suggest_all(run.history).items():
            assert suggestion.max_lr is None or suggestion.max_lr < blow_up_lr, name
    # Smith's rules read the same evaluations before the blow-up in both histories.
    for name in ("smith_accuracy_peak", "smith_loss_turn_up"):
        assert suggest_all(recorded_on.history)[name].max_lr == stopped.suggestions[name].max_lr


def _call(**changes):
    model, optimizer, loader = _problem()
    arguments = {"model": model, "train_batches": loader, "optimizer": optimizer, "start_lr": 1e-4,
                 "end_lr": 1.0, "iterations": 10, "ramp": "exponential", **changes}
    return lr_range_test(**arguments)


@pytest.mark.parametrize("changes, error, name", [
    ({"start_lr": 0.0}, ValueError, "start_lr must be > 0 for an exponential ramp"),
    ({"iterations": 1}, ValueError, "iterations must be an integer >= 2"),
    ({"iterations": 2.5}, ValueError, "iterations must be an integer"),
    ({"iterations": True}, ValueError, "iterations must be an integer"),
    ({"start_lr": -0.1, "ramp": "linear"}, ValueError, "start_lr must be a finite number >= 0"),
    ({"end_lr": math.nan}, ValueError, "end_lr must be a finite number >= 0"),
    ({"start_lr": 1.0, "end_lr": 0.1}, ValueError, "end_lr (0.1) must be above start_lr (1.0)"),
    ({"end_lr": 1e-4}, ValueError, "end_lr equals start_lr (0.0001): give momentum_range"),
    ({"start_lr": "1e-4"}, ValueError, "start_lr must be a finite number"),
    ({"ramp": "exp"}, ValueError, "ramp must be 'linear', 'exponential' or None"),
    ({"momentum_range": (0.7, 1.2)}, ValueError, "momentum_range must be a (start, end) pair"),
    ({"momentum_range": 0.9}, ValueError, "momentum_range must be a (start, end) pair"),
    ({"eval_every": 0}, ValueError, "eval_every must be an integer >= 1"),
    ({"smoothing": 1.0}, ValueError, "smoothing must be a number in [0, 1)"),
    ({"divergence_factor": 1.0}, ValueError, "divergence_factor must be a number > 1"),
    ({"device": "gpu7"}, ValueError, "device 'gpu7' is not a torch device"),
    ({"train_batches": torch.zeros(4, 10)}, TypeError, "train_batches must be an iterable of (inputs, targets)"),
    ({"train_batches": [torch.zeros(4, 10)]}, TypeError,
     "train_batches must yield (inputs, targets) pairs, got Tensor"),
    ({"eval_batches": 5}, TypeError, "eval_batches must be an iterable"),
    ({"eval_batches": []}, ValueError, "eval_batches is empty"),
    ({"model": "lenet"}, TypeError, "model must be a torch.nn.Module, got str"),
    ({"optimizer": "sgd"}, TypeError, "optimizer must be a torch.optim.Optimizer, got str"),
    ({"loss_fn": "cross_entropy"}, TypeError, "loss_fn must be callable"),
])
def test_6_every_bad_argument_is_a_one_line_error_naming_it(changes, error, name):
    with pytest.raises(error) as caught:
        _call(**changes)
    assert str(caught.value).startswith(name.split(" (")[0]) and name in str(caught.value)
    assert "\n" not in str(caught.value)


def test_8_batches_go_to_the_models_device_meta_check():
    # A model on the `meta` device: its forward sees the batches moved there (the CPU batches of
    # the loader). meta tensors have no values, so the test then fails at loss.item(); the model
    # and optimizer are restored all the same.
    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(10, 2)
            self.devices = []

        def forward(self, x):
            self.devices.append(x.device)
            return self.linear(x)

    _, _, loader = _problem()
    model = Recorder().to("meta")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    with pytest.raises(RuntimeError, match="meta"):
        lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=1.0, iterations=5)
    assert model.devices == [torch.device("meta")]
    assert optimizer.param_groups[0]["lr"] == 0.5 and model.training


def test_8_an_explicit_device_overrides_the_models():
    # A CPU model with device="meta": the batches go to meta, where the CPU weights refuse them.
    model, optimizer, loader = _problem()
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].device))
    with pytest.raises(RuntimeError, match="meta"):
        lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=0.1, iterations=3, device="meta")
    assert seen == [torch.device("meta")]


def test_8_the_plot_draws_on_the_axes_given_or_returns_a_figure_and_writes_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    model, optimizer, loader = _problem()
    result = lr_range_test(model, loader, optimizer, start_lr=1e-3, end_lr=10.0, iterations=40,
                           ramp="exponential", eval_batches=list(loader)[:2], eval_every=5)
    ax = Figure().subplots()
    assert result.plot(ax=ax) is ax
    labels = ax.get_legend().get_texts()
    drawn = {t.get_text().split(":")[0] for t in labels}
    found = {name for name, s in result.suggestions.items() if s.max_lr is not None}
    assert found and found <= drawn and {"smoothed train loss", "test loss", "test accuracy"} <= drawn
    assert ax.get_xscale() == "log"  # 1e-3 .. 10: four decades
    figure = result.plot()
    assert isinstance(figure, Figure) and len(figure.axes) == 2  # loss axes and accuracy twin
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        result.plot(ax="left")


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
    monkeypatch.setattr(bounds, "suggest_all", lambda *args, **kwargs: {
        **real(*args, **kwargs), "smith_accuracy_peak": Suggestion("smith_accuracy_peak", 0.0, None, "peak at lr=0")})
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


@needs_fashion_mnist
def test_a_range_test_job_records_its_wall_time(tmp_path):
    # The report's runs table and tables/wall_time.csv read it, as they read a training's.
    run = tiny_run()
    shared = {k: run[k] for k in ("experiment", "seed", "data", "model", "optim", "train")}
    config = parse(RangeTestConfig, {**shared, "name": "tiny/seed0", "range_test": {
        "start_lr": 0.0, "end_lr": 0.1, "iterations": 6, "eval_every": 3, "eval_subset": 200}})
    metrics = run_range_test_job(config, tmp_path)
    assert metrics["wall_time_s"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["wall_time_s"] == metrics["wall_time_s"]


# --------------------------------------------------------------------------- issue 30: the
# range test's defects and familiar defaults.


def _lrs_each_step(optimizer):
    """Every param group's lr at each optimizer step, recorded by a step pre-hook."""
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append([g["lr"] for g in opt.param_groups]))
    return seen


def test_targets_of_shape_n_1_are_class_indices_for_the_loss_and_the_accuracy():
    # A column of labels (e.g. a DataFrame's df[["label"]]) reported test accuracy 29.5 before.
    model, optimizer, loader = _problem()
    pairs = list(loader)
    columns = [(x, y[:, None]) for x, y in pairs]
    flat = lr_range_test(model, pairs, optimizer, start_lr=0.0, end_lr=0.5, iterations=16,
                         eval_batches=pairs[:2], eval_every=4)
    column = lr_range_test(model, columns, optimizer, start_lr=0.0, end_lr=0.5, iterations=16,
                           eval_batches=columns[:2], eval_every=4)
    # The same computation on the same numbers: the same curve, exactly.
    assert column.history.equals(flat.history)
    assert column.history.test_accuracy.dropna().between(0, 1).all()


def test_targets_that_are_no_class_indices_are_refused_in_one_line_by_the_accuracy():
    model, optimizer, loader = _problem()
    pairs = list(loader)
    # Float targets of shape (N, 1) are a regression's: squeezing them would broadcast the loss.
    regression = [(x, y[:, None].float()) for x, y in pairs]
    with pytest.raises(ValueError) as caught:
        lr_range_test(model, pairs, optimizer, start_lr=0.0, end_lr=0.5, iterations=4,
                      eval_batches=regression[:1], eval_every=2, loss_fn=lambda out, y: out.sum() * 0 + 1.0)
    assert str(caught.value) == ("eval_batches: the accuracy compares outputs.argmax(1), shape (32,), with the "
                                 "targets, got (32, 1): give class indices of shape (N,) or (N, 1)")


def test_eval_batches_yielding_triples_are_a_one_line_error_naming_the_pairs_expected():
    model, optimizer, loader = _problem()
    triples = [(x, y, torch.ones(len(y))) for x, y in loader]
    with pytest.raises(TypeError) as caught:
        lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=0.5, iterations=4, eval_batches=triples,
                      eval_every=2)
    assert str(caught.value) == "eval_batches must yield (inputs, targets) pairs, got tuple of length 3"
    assert model.training and optimizer.param_groups[0]["lr"] == 0.01  # restored all the same


def test_each_param_group_keeps_its_lr_ratio_to_group_0():
    model, _, loader = _problem()
    first, second = model[0], model[2]
    optimizer = torch.optim.SGD([{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.001}],
                                lr=0.01, momentum=0.9)
    seen = _lrs_each_step(optimizer)
    result = lr_range_test(model, loader, optimizer, start_lr=1e-4, end_lr=1.0, iterations=12, ramp="exponential")
    assert [lrs[0] for lrs in seen] == result.history.lr.tolist()
    # Group 1 ran at a tenth of group 0's LR at every step, as its LR stood to group 0's before
    # (two float64 operations apart from lr * 0.1: pytest.approx's default, conftest).
    assert [lrs[1] for lrs in seen] == pytest.approx([lr * 0.1 for lr in result.history.lr])
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.001]  # restored


def test_a_group_0_at_lr_0_beside_a_group_that_is_not_is_refused():
    model, _, loader = _problem()
    optimizer = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.0},
                                 {"params": model[2].parameters(), "lr": 0.01}], lr=0.1)
    with pytest.raises(ValueError, match="param group 0 has lr 0 but group 1 has 0.01"):
        lr_range_test(model, loader, optimizer, start_lr=0.0, end_lr=0.5, iterations=4)


def test_start_lr_defaults_to_the_optimizers_lr():
    model, optimizer, loader = _problem()  # SGD at lr 0.01
    result = lr_range_test(model, loader, optimizer, end_lr=0.5, iterations=10)
    assert result.start_lr == 0.01 and result.history.lr.iloc[0] == 0.01
    assert result.ramp == "linear"  # 0.01 -> 0.5 spans 1.7 decades


@pytest.mark.parametrize("start_lr, end_lr, ramp", [
    (1e-4, 10.0, "exponential"),  # five decades: fastai's and torch-lr-finder's kind of range
    (0.001, 0.1001, "exponential"),  # just over two decades
    (0.001, 0.1, "linear"),  # two decades exactly: not more than two
    (0.0, 0.3, "linear"),  # Smith's ramp from 0 (no exponential ramp starts at 0)
])
def test_the_ramp_defaults_to_exponential_over_more_than_two_decades_and_says_which(start_lr, end_lr, ramp):
    model, optimizer, loader = _problem()
    result = lr_range_test(model, loader, optimizer, start_lr=start_lr, end_lr=end_lr, iterations=10)
    assert result.ramp == ramp
    assert result.history.lr.tolist() == [ramp_lr(ramp, start_lr, end_lr, 10, it) for it in range(10)]
