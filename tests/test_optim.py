"""The two SGD update rules (docs/paper_reference.md D6), pinned by hand and against torch.optim.SGD."""

import pytest
import torch

from onecycle.experiments.config import OptimConfig
from onecycle.training.optim import CaffeSGD, build_optimizer, parameter_groups

pytestmark = pytest.mark.numerics


def _quadratic_steps(optimizer_factory, lrs, start=1.0):
    """Minimise f(w) = w^2 / 2 (gradient g = w) with a per-step LR; return w after each step."""
    w = torch.nn.Parameter(torch.tensor([start], dtype=torch.float64))
    optimizer = optimizer_factory([w])
    values = []
    for lr in lrs:
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        (0.5 * w * w).sum().backward()
        optimizer.step()
        values.append(w.item())
    return values


def test_caffe_sgd_matches_hand_computation_with_changing_lr():
    # m = 0.9, wd = 0.1, lrs 0.1 then 0.2, w0 = 1, gradient g = w.
    # step 1: v = 0.1 * (1 + 0.1*1) = 0.11;            w = 0.89
    # step 2: v = 0.9*0.11 + 0.2*(0.89 + 0.089) = 0.2948; w = 0.5952
    values = _quadratic_steps(lambda p: CaffeSGD(p, lr=0.1, momentum=0.9, weight_decay=0.1), [0.1, 0.2])
    # Float64, a dozen operations on values below 1: rounding near 1e-15, far inside 1e-12.
    assert values == pytest.approx([0.89, 0.5952], abs=1e-12)


def test_caffe_nesterov_matches_hand_computation():
    # step 1: v_prev 0, v = 0.1*1 = 0.1; w = 1 - (1.9*0.1 - 0.9*0) = 0.81
    # step 2: v_prev 0.1, v = 0.9*0.1 + 0.2*0.81 = 0.252; w = 0.81 - (1.9*0.252 - 0.9*0.1) = 0.4212
    values = _quadratic_steps(lambda p: CaffeSGD(p, lr=0.1, momentum=0.9, nesterov=True), [0.1, 0.2])
    assert values == pytest.approx([0.81, 0.4212], abs=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_caffe_rule_equals_pytorch_rule_at_constant_lr(nesterov):
    lrs = [0.05] * 20
    caffe = _quadratic_steps(lambda p: CaffeSGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=nesterov), lrs)
    torch_sgd = _quadratic_steps(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01,
                                                           nesterov=nesterov), lrs)
    # Float64 over 20 steps of a contraction (|w| shrinks): the two orders of the same operations
    # differ by a few u = 1.1e-16 per step, never amplified.
    assert caffe == pytest.approx(torch_sgd, rel=1e-12, abs=1e-15)


def test_rules_differ_once_the_lr_changes():
    lrs = [0.1, 0.3, 0.05]
    caffe = _quadratic_steps(lambda p: CaffeSGD(p, lr=0.1, momentum=0.9), lrs)
    torch_sgd = _quadratic_steps(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), lrs)
    assert caffe[0] == pytest.approx(torch_sgd[0])
    assert abs(caffe[2] - torch_sgd[2]) > 1e-3


def test_weight_decay_groups():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    all_groups = parameter_groups(model, 1e-4, "all")
    assert len(all_groups) == 1 and len(all_groups[0]["params"]) == 4
    decay, no_decay = parameter_groups(model, 1e-4, "weights_only")
    assert [p.shape for p in decay["params"]] == [torch.Size([2, 1, 3, 3])]
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 3  # conv bias, BN weight, BN bias


def test_build_optimizer_picks_the_rule():
    model = torch.nn.Linear(2, 2)
    caffe = build_optimizer(model, OptimConfig(update_rule="caffe", algorithm="nesterov"), lr=0.1)
    assert isinstance(caffe, CaffeSGD) and caffe.param_groups[0]["nesterov"]
    plain = build_optimizer(model, OptimConfig(momentum=0.95, weight_decay=5e-4), lr=0.1)
    assert isinstance(plain, torch.optim.SGD)
    assert plain.param_groups[0]["momentum"] == 0.95 and plain.param_groups[0]["weight_decay"] == 5e-4
    with pytest.raises(ValueError, match="nesterov"):
        build_optimizer(model, OptimConfig(algorithm="nesterov", momentum=0.0), lr=0.1)


# --- Caffe's per-parameter multipliers (optim.multipliers: prototxt) -------------------------

def _group_of(groups, parameter):
    (group,) = [g for g in groups if any(p is parameter for p in g["params"])]
    return group


def test_prototxt_multipliers_give_cifar3_its_caffe_rates_and_decays():
    # hyperParam1 cifar3.prototxt (docs/models.md): conv1/conv2 biases lr_mult 2, conv3 bias 1,
    # classifier weight decay_mult 250, classifier bias lr_mult 2 and decay_mult 0.
    from onecycle.models import build_model

    model = build_model("cifar3", num_classes=10)
    groups = parameter_groups(model, 3.0e-3, "all", "prototxt")
    named = dict(model.named_parameters())
    expected = {"conv1.weight": (1, 3.0e-3), "conv1.bias": (2, 3.0e-3), "conv3.bias": (1, 3.0e-3),
                "ip1.weight": (1, 250 * 3.0e-3), "ip1.bias": (2, 0.0)}
    for name, (lr_mult, decay) in expected.items():
        group = _group_of(groups, named[name])
        assert (group["lr_mult"], group["weight_decay"]) == pytest.approx((lr_mult, decay)), name
    assert sum(len(g["params"]) for g in groups) == len(named)
    # Without multipliers: one group, Caffe's defaults 1 and 1 everywhere.
    (plain,) = parameter_groups(model, 3.0e-3, "all", "none")
    assert plain["lr_mult"] == 1.0 and plain["weight_decay"] == 3.0e-3


def test_weights_only_exempts_1d_tensors_on_top_of_the_multipliers():
    from onecycle.models import build_model

    model = build_model("lenet", num_classes=10)
    groups = parameter_groups(model, 5.0e-4, "weights_only", "prototxt")
    bias = _group_of(groups, model.ip1.bias)
    weight = _group_of(groups, model.ip1.weight)
    assert (bias["lr_mult"], bias["weight_decay"]) == (2.0, 0.0)
    assert (weight["lr_mult"], weight["weight_decay"]) == (1.0, 5.0e-4)


def test_prototxt_multipliers_need_a_caffe_port():
    with pytest.raises(ValueError, match="optim.multipliers 'prototxt' needs a Caffe port; Linear"):
        parameter_groups(torch.nn.Linear(2, 2), 1.0e-4, "all", "prototxt")


def test_caffe_step_with_multipliers_matches_the_solver_formula():
    # sgd_solver.cpp: v = m*v + (lr*lr_mult) * (g + (wd*decay_mult)*w); w -= v, per parameter,
    # with the LR changing between the two steps. The schedule sets group lr = lr * lr_mult.
    from onecycle.models import build_model, param_multipliers
    from onecycle.schedules import apply_schedule, make_schedule

    torch.manual_seed(0)
    model = build_model("cifar3", num_classes=10, input_size=12)
    optimizer = build_optimizer(model, OptimConfig(update_rule="caffe", weight_decay=3.0e-3, momentum=0.9,
                                                   multipliers="prototxt"), lr=0.0)
    schedule = make_schedule("triangular", steps=4, base_lr=0.001, max_lr=0.005, stepsize=2)
    mults = param_multipliers(model)
    x, y = torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 3])
    expected = {name: p.detach().clone() for name, p in model.named_parameters()}
    history = {name: torch.zeros_like(p) for name, p in expected.items()}
    for it in range(2):
        apply_schedule(optimizer, schedule, it)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for name, p in model.named_parameters():
            m = mults[name]
            rate, decay = schedule.lr(it) * m.lr_mult, 3.0e-3 * m.decay_mult
            history[name] = 0.9 * history[name] + rate * (p.grad + decay * p.detach())
            expected[name] = p.detach() - history[name]
        optimizer.step()
        # Float32, the same gradient tensor on both sides and ~4 operations in another order:
        # within 8 x 2^-24 = 4.8e-7 of the values involved, and cifar3's weights under torch's
        # default init (uniform within 1/sqrt(fan_in), fan_in >= 64) stay within 0.125: 6e-8.
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), expected[name], rtol=0, atol=1e-7, msg=name)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx(
        sorted(schedule.lr(1) * g["lr_mult"] for g in optimizer.param_groups))
    assert {g["lr_mult"] for g in optimizer.param_groups} == {1.0, 2.0}
