"""The two SGD update rules (paper_tables.md D6), pinned by hand and against torch.optim.SGD."""

import pytest
import torch

from onecycle.config import OptimConfig
from onecycle.optim import CaffeSGD, build_optimizer, parameter_groups


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
