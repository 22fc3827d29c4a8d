"""The peers' own test cases, run against onecycle (issue 30): the OneCycleLR cases of PyTorch's
test/optim/test_lrscheduler.py on `torch_1cycle` and `OneCycleScheduler`, and the range-test
cases of torch-lr-finder's tests that apply, on `lr_range_test` (torch-lr-finder itself, from
onecycle[test], runs beside ours where a case compares the two). Written from each case's
documented behaviour in our words; where onecycle differs by design, the test says so and pins
what onecycle does, and docs/library.md ("Against the peers' own tests") gives the reason.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from onecycle.bounds import steepest_slope_log_lr
from onecycle.range_test import lr_range_test
from onecycle.schedules import OneCycleScheduler, make_schedule, total_steps

# ---------------------------------------------------------------------------------------------
# PyTorch's OneCycleLR cases. Their settings: max_lr 25 over 10 steps, momenta cycling between
# base 1 and max 22. onecycle refuses momenta outside [0, 1) (a momentum of 1 or more never
# forgets a gradient; schedules/params.py), so the momentum targets are checked at a hundredth
# of those values, which the interpolation maps to a hundredth of PyTorch's targets.


def _annealing_cos(start, end, pct):
    """PyTorch's cosine between start and end (its test defines the same)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _momentum_targets(targets):
    return [m / 100 for m in targets]


def _sgd(groups=None):
    return torch.optim.SGD(groups or [torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)


def _walk(schedule, optimizer, momentum_of=lambda group: group["momentum"]):
    """(lr, momentum) of group 0 at each of the schedule's steps, through OneCycleScheduler."""
    scheduler = OneCycleScheduler(optimizer, schedule)
    seen = []
    for _ in range(schedule.steps):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], momentum_of(group)))
        optimizer.step()
        scheduler.step()
    return [lr for lr, _ in seen], [m for _, m in seen]


PYTORCH_CASES = {
    # test_onecycle_lr_linear_annealing: two phases, linear.
    "linear": ({"max_lr": 25, "final_div_factor": 2, "anneal_strategy": "linear"},
               [1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5],
               [22, 11.5, 1, 4, 7, 10, 13, 16, 19, 22]),
    # test_onecycle_lr_linear_annealing_three_phases.
    "three_phases": ({"max_lr": 25, "div_factor": 25, "pct_start": 0.4, "final_div_factor": 4,
                      "three_phase": True, "anneal_strategy": "linear"},
                     [1, 9, 17, 25, 17, 9, 1, 0.75, 0.5, 0.25],
                     [22, 15, 8, 1, 8, 15, 22, 22, 22, 22]),
    # test_onecycle_lr_cosine_annealing: two phases, cosine.
    "cosine": ({"max_lr": 25, "final_div_factor": 2},
               [1, 13, 25, *(_annealing_cos(25, 0.5, k / 7) for k in range(1, 7)), 0.5],
               [22, 11.5, 1, *(_annealing_cos(1, 22, k / 7) for k in range(1, 7)), 22]),
}


@pytest.mark.parametrize("case", sorted(PYTORCH_CASES))
def test_pytorch_onecyclelr_case_targets_are_onecyclelrs(case):
    # The targets as PyTorch's test states them, against live OneCycleLR with its own momenta.
    params, lr_targets, momentum_targets = PYTORCH_CASES[case]
    optimizer = _sgd()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, total_steps=10, base_momentum=1, max_momentum=22,
                                                    **params)
    seen = []
    for _ in range(10):
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
        optimizer.step()
        scheduler.step()
    assert [lr for lr, _ in seen] == pytest.approx(lr_targets)
    assert [m for _, m in seen] == pytest.approx(momentum_targets)


@pytest.mark.parametrize("case", sorted(PYTORCH_CASES))
def test_pytorch_onecyclelr_case_lr_and_momentum(case):
    params, lr_targets, momentum_targets = PYTORCH_CASES[case]
    schedule = make_schedule("torch_1cycle", 10, base_momentum=0.01, max_momentum=0.22, **params)
    lrs, momenta = _walk(schedule, _sgd())
    # PyTorch's test compares with its default tolerance; these are float64 interpolations of a
    # few operations, within pytest.approx's default (conftest).
    assert lrs == pytest.approx(lr_targets)
    assert momenta == pytest.approx(_momentum_targets(momentum_targets))


@pytest.mark.parametrize("case", sorted(PYTORCH_CASES))
def test_pytorch_onecyclelr_case_with_adam_cycles_beta1(case):
    # test_cycle_lr_with_adam: OneCycleLR on Adam cycles beta1 as the momentum.
    params, lr_targets, momentum_targets = PYTORCH_CASES[case]
    schedule = make_schedule("torch_1cycle", 10, base_momentum=0.01, max_momentum=0.22, **params)
    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lrs, betas = _walk(schedule, adam, momentum_of=lambda group: group["betas"][0])
    assert lrs == pytest.approx(lr_targets) and betas == pytest.approx(_momentum_targets(momentum_targets))
    assert adam.param_groups[0]["betas"][1] == 0.999  # beta2 untouched


@pytest.mark.xfail(strict=True, raises=ValueError,
                   reason="PyTorch's cases cycle momenta between 1 and 22; onecycle refuses momenta outside "
                          "[0, 1) (docs/library.md, 'Against the peers' own tests')")
def test_pytorch_onecyclelr_case_with_its_own_momenta():
    make_schedule("torch_1cycle", 10, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22)


@pytest.mark.parametrize("params, message", [
    # test_onecycle_lr_invalid_anneal_strategy and test_onecycle_lr_invalid_pct_start.
    ({"anneal_strategy": "CATS"}, "anneal_strategy"),
    ({"pct_start": 1.1}, "pct_start"),
    ({"pct_start": -0.1}, "pct_start"),
])
def test_pytorch_onecyclelr_invalid_settings_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        torch.optim.lr_scheduler.OneCycleLR(_sgd(), total_steps=10, max_lr=1.0, **params)
    with pytest.raises(ValueError, match=message):
        make_schedule("torch_1cycle", 10, max_lr=1.0, **params)


def test_pytorch_onecyclelr_total_steps_from_epochs_and_steps_per_epoch():
    # test_onecycle_lr_cannot_calculate_total_steps and OneCycleLR(epochs=, steps_per_epoch=):
    # total_steps(epochs, loader) is that product, and refuses what has no length.
    loader = DataLoader(list(range(10)), batch_size=3)  # 4 batches, the last one short
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(_sgd(), max_lr=1.0, epochs=5, steps_per_epoch=len(loader))
    assert total_steps(5, loader) == torch_schedule.total_steps == 20
    with pytest.raises(ValueError, match="You must define either total_steps OR"):
        torch.optim.lr_scheduler.OneCycleLR(_sgd(), max_lr=1.0)
    with pytest.raises(TypeError, match="loader must have a len"):
        total_steps(5, (batch for batch in loader))
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        total_steps(0, loader)


def test_pytorch_onecyclelr_stepping_past_total_steps_raises():
    schedule = make_schedule("torch_1cycle", 10, max_lr=1.0)
    theirs_opt, ours_opt = _sgd(), _sgd()
    for optimizer, scheduler in ((theirs_opt, torch.optim.lr_scheduler.OneCycleLR(theirs_opt, max_lr=1.0,
                                                                                  total_steps=10)),
                                 (ours_opt, OneCycleScheduler(ours_opt, schedule))):
        for _ in range(10):
            optimizer.step()
            scheduler.step()
        with pytest.raises(ValueError, match=r"(?i)tried to step 11 times"):
            scheduler.step()


def test_pytorch_onecyclelr_max_lr_per_param_group():
    # OneCycleLR(max_lr=[...]) gives each group its own peak; onecycle's group_scales do.
    def groups():
        return [{"params": [torch.nn.Parameter(torch.zeros(1))]}, {"params": [torch.nn.Parameter(torch.zeros(1))]}]

    theirs_opt, ours_opt = _sgd(groups()), _sgd(groups())
    theirs = torch.optim.lr_scheduler.OneCycleLR(theirs_opt, max_lr=[1.0, 0.25], total_steps=12)
    ours = OneCycleScheduler(ours_opt, make_schedule("torch_1cycle", 12, max_lr=1.0), group_scales=[1.0, 0.25])
    for _ in range(11):
        assert [g["lr"] for g in ours_opt.param_groups] == pytest.approx([g["lr"] for g in theirs_opt.param_groups])
        for optimizer, scheduler in ((theirs_opt, theirs), (ours_opt, ours)):
            optimizer.step()
            scheduler.step()


@pytest.mark.parametrize("anneal_strategy, three_phase", [("cos", False), ("linear", False), ("linear", True)])
def test_onecyclelr_after_the_trailing_step(anneal_strategy, three_phase):
    # What OneCycleScheduler's docstring says of OneCycleLR's trailing step: the cosine climbs
    # back to step steps-2's LR; linear annealing goes below the minimum, here below zero (the
    # last phase's 7 or 5 steps are far fewer than start/min - 1).
    steps = 10
    optimizer = _sgd()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=steps,
                                                    anneal_strategy=anneal_strategy, three_phase=three_phase)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    trailing = optimizer.param_groups[0]["lr"]
    if anneal_strategy == "cos":
        assert trailing == pytest.approx(lrs[steps - 2]) and trailing > lrs[-1]
    else:
        assert trailing < 0 < lrs[-1]
    ours_opt = _sgd()
    ours = OneCycleScheduler(ours_opt, make_schedule("torch_1cycle", steps, max_lr=1.0,
                                                     anneal_strategy=anneal_strategy, three_phase=three_phase))
    for _ in range(steps):
        ours_opt.step()
        ours.step()
    assert ours.get_last_lr() == [pytest.approx(lrs[-1])]  # ours holds the last step's LR


# ---------------------------------------------------------------------------------------------
# torch-lr-finder's range-test cases (its tests/test_lr_finder.py), with torch-lr-finder run
# beside ours on the same model, weights and batches.


@pytest.fixture
def lr_finder():
    return pytest.importorskip("torch_lr_finder", reason="torch-lr-finder comes with onecycle[test]")


def _problem(seed=0, lr=1e-3):
    torch.manual_seed(seed)
    x = torch.randn(320, 10)
    y = (x[:, :2].sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), \
        DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)


def _twins(seed=0, lr=1e-3):
    """Two copies of the same problem: (model, optimizer) each, and one loader."""
    model, optimizer, loader = _problem(seed, lr)
    twin = _problem(seed, lr)[0]
    twin.load_state_dict(model.state_dict())
    return (model, optimizer), (twin, torch.optim.SGD(twin.parameters(), lr=lr, momentum=0.9)), loader


def test_lr_finder_start_lr_defaults_to_the_optimizers_and_ramps_exponentially(lr_finder):
    (ours_model, ours_opt), (theirs_model, theirs_opt), loader = _twins()
    finder = lr_finder.LRFinder(theirs_model, theirs_opt, torch.nn.CrossEntropyLoss())
    finder.range_test(loader, end_lr=10, num_iter=20)
    result = lr_range_test(ours_model, loader, ours_opt, end_lr=10, iterations=20)
    assert result.start_lr == 1e-3 and result.ramp == "exponential"  # four decades
    # The same ramp, the same expression: equal LRs while both ran (each stops on its own
    # divergence rule, below), reaching end_lr at the last iteration.
    ran = min(len(result.history), len(finder.history["lr"]))
    assert ran >= 10 and result.history.lr.tolist()[:ran] == finder.history["lr"][:ran]
    assert result.history.lr.tolist() == [1e-3 * (10 / 1e-3) ** (it / 19) for it in range(len(result.history))]


def test_lr_finder_validation_loss_after_every_step_is_our_test_loss_at_eval_every_1(lr_finder):
    # "Leslie Smith's approach": the loss on val_loader after each iteration. smooth_f=0 leaves
    # it raw; below divergence both run all 15 iterations with the same weights and batches.
    (ours_model, ours_opt), (theirs_model, theirs_opt), loader = _twins()
    val = DataLoader(TensorDataset(torch.randn(64, 10), torch.randint(0, 2, (64,))), batch_size=16)
    finder = lr_finder.LRFinder(theirs_model, theirs_opt, torch.nn.CrossEntropyLoss())
    finder.range_test(loader, val_loader=val, start_lr=1e-3, end_lr=0.1, num_iter=15, smooth_f=0, step_mode="exp")
    result = lr_range_test(ours_model, loader, ours_opt, start_lr=1e-3, end_lr=0.1, iterations=15,
                           ramp="exponential", eval_batches=val, eval_every=1)
    assert result.diverged is None and len(finder.history["loss"]) == 15
    assert result.history.test_loss.tolist() == finder.history["loss"]


def test_lr_finder_linear_ramp_differs_by_design(lr_finder):
    # torch-lr-finder's linear ramp reaches end_lr at the last iteration (it / (n - 1)); ours is
    # Smith's Caffe `triangular` (it / n, docs/paper_reference.md C1), one step short of end_lr.
    (ours_model, ours_opt), (theirs_model, theirs_opt), loader = _twins()
    finder = lr_finder.LRFinder(theirs_model, theirs_opt, torch.nn.CrossEntropyLoss())
    finder.range_test(loader, start_lr=0.001, end_lr=0.011, num_iter=10, step_mode="linear")
    result = lr_range_test(ours_model, loader, ours_opt, start_lr=0.001, end_lr=0.011, iterations=10)
    assert finder.history["lr"] == pytest.approx([0.001 + 0.01 * it / 9 for it in range(10)])
    assert result.history.lr.tolist() == pytest.approx([0.001 + 0.01 * it / 10 for it in range(10)])


def test_lr_finder_suggestion_is_our_steepest_slope_against_log_lr(lr_finder):
    # LRFinder.plot(suggest_lr=True): the steepest np.gradient of its recorded losses, index-spaced,
    # after skipping 10 and 5 points. On its exponential ramp log LR is evenly spaced, so the
    # steepest slope against log LR (ours) is the same point, read off the same losses.
    from matplotlib.figure import Figure

    _, (model, optimizer), loader = _twins()
    finder = lr_finder.LRFinder(model, optimizer, torch.nn.CrossEntropyLoss())
    finder.range_test(loader, start_lr=1e-4, end_lr=1.0, num_iter=40)
    _, suggested = finder.plot(skip_start=10, skip_end=5, ax=Figure().subplots(), suggest_lr=True)
    losses = finder.history["loss"]
    history = pd.DataFrame({"lr": finder.history["lr"], "train_loss": losses, "smoothed_loss": losses,
                            "test_loss": math.nan, "test_accuracy": math.nan})
    assert steepest_slope_log_lr(history, divergence_factor=math.inf).max_lr == suggested
    # Too short a curve: torch-lr-finder raises; our rule declines and says why.
    with pytest.raises(RuntimeError, match="Need at least 17 iterations"):
        lr_finder.LRFinder(*_problem()[:2], torch.nn.CrossEntropyLoss()).plot(ax=Figure().subplots())
    short = steepest_slope_log_lr(history.iloc[:16], divergence_factor=math.inf)
    assert short.max_lr is None and "too few" in short.note


def test_lr_finder_divergence_stop_differs_by_design(lr_finder):
    # torch-lr-finder stops when its smoothed loss passes 5 x its best; ours when the raw or the
    # smoothed loss passes 4 x the best smoothed loss (fastai's factor, onecycle.bounds): one
    # spike to 18 x stops ours and not theirs, whose EMA moves by 0.05 of it.
    losses = iter([2.0] * 10 + [36.0] + [2.0] * 9)
    scripted = lambda outputs, targets: outputs.sum() * 0.0 + next(losses)  # noqa: E731
    (ours_model, ours_opt), (theirs_model, theirs_opt), loader = _twins()
    finder = lr_finder.LRFinder(theirs_model, theirs_opt, scripted)
    finder.range_test(loader, start_lr=1e-3, end_lr=0.01, num_iter=20, diverge_th=5)
    assert len(finder.history["loss"]) == 20
    losses = iter([2.0] * 10 + [36.0] + [2.0] * 9)
    result = lr_range_test(ours_model, loader, ours_opt, start_lr=1e-3, end_lr=0.01, iterations=20,
                           loss_fn=lambda outputs, targets: outputs.sum() * 0.0 + next(losses))
    assert result.diverged["iteration"] == 10 and len(result.history) == 11


def test_lr_finder_param_groups_differ_by_design(lr_finder):
    # Both start each group at its own LR; torch-lr-finder then ramps every group to the same
    # end_lr, ours keeps each group's ratio to group 0's to the end.
    def two_groups(model):
        return torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 1e-4}],
                               lr=1e-3, momentum=0.9)

    (ours_model, _), (theirs_model, _), loader = _twins()
    ours_opt, theirs_opt = two_groups(ours_model), two_groups(theirs_model)
    seen = {"ours": [], "theirs": []}
    for name, optimizer in (("ours", ours_opt), ("theirs", theirs_opt)):
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs, name=name: seen[name].append([g["lr"] for g in opt.param_groups]))
    lr_finder.LRFinder(theirs_model, theirs_opt, torch.nn.CrossEntropyLoss()).range_test(
        loader, end_lr=0.1, num_iter=10)
    lr_range_test(ours_model, loader, ours_opt, end_lr=0.1, iterations=10, ramp="exponential")
    assert seen["theirs"][0] == pytest.approx(seen["ours"][0]) and seen["ours"][0] == pytest.approx([1e-3, 1e-4])
    assert seen["theirs"][-1] == pytest.approx([0.1, 0.1])
    assert seen["ours"][-1] == pytest.approx([0.1, 0.01])


def test_lr_finder_batches_of_three_differ_by_design(lr_finder):
    # torch-lr-finder reads (inputs, labels, *rest) and drops the rest; ours refuses anything but
    # pairs in one line, so that a (inputs, targets, weights) batch is not half-read silently.
    (ours_model, ours_opt), (theirs_model, theirs_opt), loader = _twins()
    triples = DataLoader(TensorDataset(*loader.dataset.tensors, torch.ones(320)), batch_size=32)
    finder = lr_finder.LRFinder(theirs_model, theirs_opt, torch.nn.CrossEntropyLoss())
    finder.range_test(triples, start_lr=1e-3, end_lr=0.01, num_iter=3)
    assert len(finder.history["loss"]) == 3
    with pytest.raises(TypeError, match=r"^train_batches must yield \(inputs, targets\) pairs, got list of length 3$"):
        lr_range_test(ours_model, triples, ours_opt, start_lr=1e-3, end_lr=0.01, iterations=3)


def test_lr_finder_state_comes_back(lr_finder):
    # torch-lr-finder's reset() puts model and optimizer back; ours does so itself (restore=True).
    (ours_model, ours_opt), (theirs_model, theirs_opt), loader = _twins()
    before = {k: v.clone() for k, v in ours_model.state_dict().items()}
    finder = lr_finder.LRFinder(theirs_model, theirs_opt, torch.nn.CrossEntropyLoss())
    finder.range_test(loader, end_lr=1.0, num_iter=10)
    finder.reset()
    lr_range_test(ours_model, loader, ours_opt, end_lr=1.0, iterations=10)
    for model, optimizer in ((ours_model, ours_opt), (theirs_model, theirs_opt)):
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert optimizer.param_groups[0]["lr"] == 1e-3 and not optimizer.state


def test_lr_finder_refuses_an_optimizer_with_a_scheduler_and_ours_leaves_it_working(lr_finder):
    # torch-lr-finder refuses an optimizer a scheduler was attached to (`initial_lr` in its
    # groups); ours runs and restores the optimizer, and the scheduler goes on as before.
    (ours_model, ours_opt), (theirs_model, theirs_opt), loader = _twins()
    torch.optim.lr_scheduler.OneCycleLR(theirs_opt, max_lr=0.1, total_steps=10)
    with pytest.raises(RuntimeError, match="already has a scheduler attached"):
        lr_finder.LRFinder(theirs_model, theirs_opt, torch.nn.CrossEntropyLoss())
    scheduler = torch.optim.lr_scheduler.OneCycleLR(ours_opt, max_lr=0.1, total_steps=10)
    lr_at_step_0 = ours_opt.param_groups[0]["lr"]
    lr_range_test(ours_model, loader, ours_opt, start_lr=1e-4, end_lr=1.0, iterations=10)
    assert ours_opt.param_groups[0]["lr"] == lr_at_step_0
    ours_opt.step()
    scheduler.step()
    assert ours_opt.param_groups[0]["lr"] == pytest.approx(_one_cycle_lr_at(1, 0.1, 10))


def _one_cycle_lr_at(step, max_lr, steps):
    """OneCycleLR's default two-phase cosine LR at `step` (first phase: 0.3 * steps - 1 steps)."""
    return _annealing_cos(max_lr / 25, max_lr, step / (0.3 * steps - 1))


@pytest.mark.xfail(strict=True, raises=TypeError,
                   reason="torch-lr-finder's gradient accumulation (accumulation_steps) is not offered: "
                          "docs/library.md, 'Against the peers' own tests'")
def test_lr_finder_gradient_accumulation():
    model, optimizer, loader = _problem()
    lr_range_test(model, loader, optimizer, end_lr=1.0, iterations=10, accumulation_steps=2)


def test_lr_finder_dict_batches_are_refused_by_both(lr_finder):
    # Both need (inputs, targets); torch-lr-finder asks for a TrainDataLoaderIter subclass, ours
    # for any iterable that yields pairs (a generator mapping the dicts will do).
    (ours_model, ours_opt), (theirs_model, theirs_opt), _ = _twins()
    dicts = DataLoader([{"x": torch.randn(10), "y": 0} for _ in range(64)], batch_size=32)
    with pytest.raises(ValueError, match="Your batch type is not supported"):
        lr_finder.LRFinder(theirs_model, theirs_opt, torch.nn.CrossEntropyLoss()).range_test(dicts, num_iter=2)
    with pytest.raises(TypeError, match="train_batches must yield \\(inputs, targets\\) pairs, got dict"):
        lr_range_test(ours_model, dicts, ours_opt, end_lr=1.0, iterations=2)
    mapped = ((batch["x"], batch["y"]) for batch in dicts)
    assert len(lr_range_test(ours_model, mapped, ours_opt, end_lr=1.0, iterations=2).history) == 2


def test_the_ramps_are_evenly_spaced_where_the_suggestion_relies_on_it():
    # On an exponential ramp log LR steps by log(end/start)/(n-1): np.gradient's index spacing
    # and log-LR spacing then differ by that constant factor only.
    lr = np.array([1e-4 * (1.0 / 1e-4) ** (it / 39) for it in range(40)])
    assert np.diff(np.log(lr)) == pytest.approx(np.full(39, math.log(1e4) / 39))
