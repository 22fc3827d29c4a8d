"""The lean training step (issue 28) computes today's numbers: each new path against the code it
replaced (tests/reference_paths.py), bit for bit where the operations are the same and in the
same order, else within a bound derived at the assertion.

u = 2^-53 = 1.1e-16 is float64's unit roundoff; a sum of n terms rounds to at most n u of the
sum of their magnitudes, in any order.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from onecycle.evaluation import evaluate
from onecycle.experiments.config import OptimConfig
from onecycle.models import build_model
from onecycle.models.fused_batch_norm import FusedCaffeBatchNorm2d, use_fused_running_statistics
from onecycle.models.layers import CaffeBatchNorm2d, WithinChannelLRN, global_average_pool, set_batch_norm_shards
from onecycle.training.optim import CaffeSGD, build_optimizer, parameter_groups
from op_counting import ops_per_call
from reference_paths import PerParameterCaffeSGD, evaluate_syncing_every_batch, with_recomputing_batch_norm

pytestmark = pytest.mark.numerics
U64 = 2.0**-53


# --- CaffeSGD: foreach ops, one per formula step and group --------------------------------

def _sgd_run(optimizer_class, dtype: torch.dtype, nesterov: bool, weight_decay: float) -> list[torch.Tensor]:
    """ResNet-20's weights after 4 steps with changing LRs, prototxt groups (lr_mult 1 and 2),
    one parameter without a gradient (it must stay as it is)."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10, init="prototxt").to(dtype)
    groups = parameter_groups(model, weight_decay, "all", "prototxt")
    optimizer = optimizer_class(groups, lr=0.1, momentum=0.9, nesterov=nesterov)
    x = torch.randn(4, 3, 32, 32, dtype=dtype, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3, 5, 9])
    for step, lr in enumerate([0.1, 0.3, 0.05, 0.2]):
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if step == 2:
            model.fc.bias.grad = None
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_foreach_caffe_sgd_is_the_per_parameter_loop_bit_for_bit(dtype, nesterov, weight_decay):
    # The same element-wise operations in the same order (on CPU the foreach ops run the same
    # kernels tensor by tensor), so the same bits, in float32 as in float64.
    lean = _sgd_run(CaffeSGD, dtype, nesterov, weight_decay)
    before = _sgd_run(PerParameterCaffeSGD, dtype, nesterov, weight_decay)
    assert all(torch.equal(a, b) for a, b in zip(lean, before, strict=True))


@pytest.mark.parametrize("nesterov", [False, True])
def test_caffe_sgd_dispatches_ops_per_group_not_per_parameter(nesterov):
    # SC's ResNet-56 with its prototxt groups: 222 parameters in a few groups. Per group: the
    # step (add, mul_; a single mul without weight decay), the history (mul_, add_), the weights
    # (sub_), and with Nesterov the copy of the history and one more add_.
    model = build_model("resnet56", 10, init="prototxt")
    optimizer = build_optimizer(model, OptimConfig(update_rule="caffe", multipliers="prototxt", momentum=0.9,
                                                   weight_decay=1e-4, algorithm="nesterov" if nesterov else "sgd"),
                                lr=0.1)
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    optimizer.step()  # creates the history blobs
    _, kernels, _ = ops_per_call(optimizer.step, calls=1, warmup=0)  # the profiler's markers aside
    expected = sum((5 if group["weight_decay"] else 4) + 2 * nesterov for group in optimizer.param_groups)
    assert kernels == expected and len(optimizer.param_groups) < 5


def test_caffe_sgd_state_survives_a_checkpoint():
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model, OptimConfig(update_rule="caffe", momentum=0.9), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    restored = CaffeSGD(model.parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(optimizer.state_dict())
    assert torch.equal(restored.state[model.weight]["history"], optimizer.state[model.weight]["history"])


# --- Caffe's batch norm: the fused kernel keeps the running statistics ----------------------

def _layers(shards: int, maf: float) -> tuple[CaffeBatchNorm2d, FusedCaffeBatchNorm2d]:
    torch.manual_seed(0)
    sums = CaffeBatchNorm2d(3, moving_average_fraction=maf).double()
    with torch.no_grad():
        sums.weight.uniform_(0.5, 1.5)
        sums.bias.uniform_(-0.5, 0.5)
    sums.shards = shards
    fused = use_fused_running_statistics(torch.nn.Sequential(copy.deepcopy(sums)))[0]
    return sums, fused


def _batches(steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    # |x| < 10 with overwhelming probability: N(mean in [-3, 3], std in [0.5, 2]).
    return [torch.randn(8, 3, 4, 5, dtype=torch.float64, generator=generator) * (0.5 + 1.5 * step / steps)
            + (-3 + 6 * step / steps) for step in range(steps)]


@pytest.mark.parametrize("shards", [1, 4])
@pytest.mark.parametrize("maf", [0.9, 0.999, 0.0])
def test_fused_running_statistics_are_caffes_sums(shards, maf):
    sums, fused = _layers(shards, maf)
    assert isinstance(fused, FusedCaffeBatchNorm2d) and fused.shards == shards
    steps = 20
    for x in _batches(steps):
        # Training output: the same batch_norm kernel normalising with the batch's statistics.
        assert torch.equal(fused(x), sums(x))
    # Bound. Each step both compute the batch mean and corrected variance of n = 8 x 20 / shards
    # <= 160 values, |x| < 10, so squared deviations < 400: V = 400 bounds every magnitude. Two
    # routines (var_mean; the kernel's) round differently, each within n u V. Today's sums
    # S_t = maf S_{t-1} + value_t round twice a step, each time within u S_t <= u w_t V, which the
    # final division by w_T >= w_t (one more rounding) turns into <= 2 u V per step of the
    # estimate; the kernel's r_t = (1 - 1/w_t) r_{t-1} + (1/w_t) value_t is a convex blend with 4
    # roundings of at most u V. So each is within (160 + 4 x 20 + 1) u V of the exact estimate.
    bound = 2 * (160 + 4 * steps + 1) * U64 * 400
    for got, want in zip(fused.running_mean_var(), sums.running_mean_var(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=bound)
    state, reference = fused.state_dict(), sums.state_dict()
    assert list(state) == list(reference)  # same keys, same order: checkpoints move freely
    # The sums are the estimates times w_t <= 1 / (1 - maf): the bound times that, plus one
    # rounding of the product.
    weight = 1 / (1 - maf)
    for name in ("mean_sum", "var_sum", "sum_weight"):
        torch.testing.assert_close(state[name], reference[name], rtol=4 * U64, atol=bound * weight)
    fused.eval(), sums.eval()
    x = _batches(1)[0]
    # Evaluation: (x - mean) / sqrt(var + eps) x weight + bias, mean and var apart by the bound.
    # The batches' stds are >= 0.5, so var > 0.1 (checked); with weight < 1.5 and |x - mean| < 20
    # the output moves by at most 1.5 / sqrt(0.1) = 4.8 per unit of mean and
    # 20 x 1.5 / 2 x 0.1^-1.5 = 474 per unit of variance: under 500 x bound.
    assert sums.running_mean_var()[1].min() > 0.1
    torch.testing.assert_close(fused(x), sums(x), rtol=0, atol=500 * bound)


def test_fused_layer_before_any_step_uses_caffes_scale_factor_zero():
    sums, fused = _layers(1, 0.999)
    sums.eval(), fused.eval()
    x = _batches(1)[0]
    assert torch.equal(fused(x), sums(x))  # mean 0, variance 0: both x / sqrt(eps) x weight + bias


def test_fused_layer_loads_a_checkpoint_of_the_sums_and_back():
    sums, fused = _layers(2, 0.9)
    for x in _batches(3):
        sums(x)
    fused.load_state_dict(sums.state_dict())
    again = CaffeBatchNorm2d(3, moving_average_fraction=0.9).double()
    again.load_state_dict(fused.state_dict())
    # mean_sum -> mean_sum x fl(1 / w) -> that x w: three roundings of at most u each.
    for name in ("mean_sum", "var_sum", "sum_weight"):
        torch.testing.assert_close(getattr(again, name), getattr(sums, name), rtol=4 * U64, atol=0)
    with pytest.raises(RuntimeError, match="Missing key.*var_sum"):
        fused.load_state_dict({k: v for k, v in sums.state_dict().items() if k != "var_sum"})


def test_fused_model_trains_like_the_sums_model():
    torch.manual_seed(0)
    sums_model = build_model("resnet20", 10).double()
    set_batch_norm_shards(sums_model, 2)
    fused_model = use_fused_running_statistics(copy.deepcopy(sums_model))
    assert sum(isinstance(m, FusedCaffeBatchNorm2d) for m in fused_model.modules()) == 19
    assert [n for n, _ in fused_model.named_parameters()] == [n for n, _ in sums_model.named_parameters()]
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    # Training mode: the running statistics take no part in the output.
    assert torch.equal(fused_model(x), sums_model(x))


# --- Evaluation: statistics kept, the device read once ------------------------------------

def _trained_resnet20() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20", 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(2):
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        F.cross_entropy(model(x), torch.arange(8) % 10).backward()
        optimizer.step()
    return model


def _test_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(7)
    return [(torch.randn(5, 3, 32, 32, generator=generator), torch.randint(0, 10, (5,), generator=generator))
            for _ in range(3)]


def test_evaluation_is_the_per_batch_evaluation_bit_for_bit():
    # Same float32 forward passes; the loss sum in float64 as on the host, in the same order.
    model = _trained_resnet20()
    before = with_recomputing_batch_norm(copy.deepcopy(model))
    assert evaluate(model, _test_batches()) == evaluate_syncing_every_batch(before, _test_batches())


def test_kept_test_statistics_follow_every_change_of_the_sums():
    layer = next(m for m in _trained_resnet20().modules() if isinstance(m, CaffeBatchNorm2d))
    layer.eval()
    first = layer.running_mean_var()
    assert layer.running_mean_var() is first  # kept, not recomputed
    recomputed = with_recomputing_batch_norm(copy.deepcopy(layer)).running_mean_var()
    assert all(torch.equal(a, b) for a, b in zip(first, recomputed, strict=True))
    with torch.no_grad():
        layer.mean_sum.add_(1.0)  # an in-place write: a training step, a broadcast
    assert not torch.equal(layer.running_mean_var()[0], first[0])
    layer.load_state_dict({**layer.state_dict(), "var_sum": layer.var_sum * 2})
    assert torch.equal(layer.running_mean_var()[1], first[1] * 2)  # x 2 is exact
    layer.double()  # new tensors
    assert layer.running_mean_var()[0].dtype == torch.float64


def test_evaluation_reduces_once_over_ranks():
    seen = []
    model = _trained_resnet20()

    def reduce(values):
        seen.append(list(values))
        return [2 * v for v in values]  # as if a second rank scored the same images

    loss, accuracy = evaluate(model, _test_batches(), reduce=reduce)
    assert len(seen) == 1 and seen[0][2] == 15 and isinstance(seen[0][1], int)
    assert (loss, accuracy) == evaluate(model, _test_batches())


# --- bf16 autocast: LRN and batch-norm statistics in fp32 ---------------------------------

def test_within_channel_lrn_under_bf16_is_not_the_identity():
    # cifar3's LRN (alpha 5e-5, beta 0.75) on activations of magnitude ~10: alpha x mean square
    # ~ 5e-3, below bf16's spacing at 1 (2^-7), so in bf16 1 + alpha x ms rounds to 1.
    lrn = WithinChannelLRN(3, alpha=5e-5, beta=0.75)
    x = (torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * 10).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lrn(x)
    assert y.dtype == torch.bfloat16
    expected = lrn(x.float())  # fp32 arithmetic on the same bf16 inputs
    # Only the output's rounding to bf16 remains: half its spacing, 2^-9 relative.
    torch.testing.assert_close(y.float(), expected, rtol=2.0**-8, atol=0)
    assert not torch.equal(y.float(), x.float())


def test_batch_norm_statistics_under_bf16_are_taken_in_fp32():
    layer = CaffeBatchNorm2d(3, moving_average_fraction=0.9)
    x = (torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 3 + 100).bfloat16()
    layer(x)
    var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), correction=0)
    assert torch.equal(layer.mean_sum, mean)  # 0.9 x 0 + mean
    assert torch.equal(layer.var_sum, var * (200 / 199))  # Caffe's m / (m - 1), m = 8 x 5 x 5


# --- Global average pooling with a deterministic backward ----------------------------------

@pytest.mark.parametrize("side", [7, 8])
def test_global_average_pool_is_adaptive_avg_pool_bit_for_bit(side):
    x = torch.randn(4, 6, side, side, generator=torch.Generator().manual_seed(side), requires_grad=True)
    upstream = torch.randn(4, 6, 1, 1, generator=torch.Generator().manual_seed(1))
    ours = global_average_pool(x)
    theirs = F.adaptive_avg_pool2d(x, 1)
    assert torch.equal(ours, theirs)
    (grad_ours,) = torch.autograd.grad(ours, x, upstream)
    (grad_theirs,) = torch.autograd.grad(theirs, x, upstream)
    assert torch.equal(grad_ours, grad_theirs)
    assert math.isclose(grad_ours[0, 0, 0, 0].item(), upstream[0, 0, 0, 0].item() / side**2, rel_tol=1e-6)
