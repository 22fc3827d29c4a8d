"""Per-GPU batch norm on one device (train.batch_norm_shards; docs/paper_reference.md D6), checked against
separate batch-norm passes over each shard, as each GPU of a Caffe multi-GPU run computes them."""

import pytest
import torch
import torch.nn.functional as F

from onecycle.experiments.config import ConfigError, TrainConfig
from onecycle.training.processes import check_batch_size, local_batch_norm_shards
from onecycle.models import build_model
from onecycle.models.layers import CaffeBatchNorm2d, set_batch_norm_shards

pytestmark = pytest.mark.numerics


def _bn(shards: int) -> CaffeBatchNorm2d:
    torch.manual_seed(0)
    bn = CaffeBatchNorm2d(3, moving_average_fraction=0.9)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    bn.shards = shards
    return bn


def test_each_shard_is_normalised_by_its_own_statistics():
    x = torch.randn(12, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    bn = _bn(4).double()
    out = bn(x)
    # Reference: four GPUs, each running batch norm in training mode on its 3 images. In float64
    # a shard's statistics sum 3 x 20 = 60 terms: rounding below 60 u = 7e-15 of values of order 1,
    # so the outputs and gradients of the two computations agree far inside 1e-12.
    reference = torch.cat([F.batch_norm(part, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
                           for part in x.split(3)])
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, bn.weight, bn.bias), upstream)
    expected = torch.autograd.grad(reference, (x, bn.weight, bn.bias), upstream)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # The whole batch's statistics would give another result: the shards matter.
    whole = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    assert not torch.allclose(out, whole)


def test_running_statistics_follow_the_first_shard_like_caffes_root_gpu():
    sharded, root_only = _bn(2), _bn(1)
    for step in range(3):
        x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(step))
        sharded(x)
        root_only(x[:4])
    for name in ("mean_sum", "var_sum", "sum_weight"):
        torch.testing.assert_close(getattr(sharded, name), getattr(root_only, name), rtol=0, atol=0)


def test_set_batch_norm_shards_reaches_every_caffe_batch_norm():
    model = build_model("resnet20", num_classes=10)
    set_batch_norm_shards(model, 8)
    layers = [m for m in model.modules() if isinstance(m, CaffeBatchNorm2d)]
    assert layers and all(m.shards == 8 for m in layers)
    model.train()(torch.randn(16, 3, 32, 32))  # 8 shards of 2
    with pytest.raises(ValueError, match="a batch of 12 does not split into 8 equal batch-norm shards"):
        model(torch.randn(12, 3, 32, 32))
    set_batch_norm_shards(build_model("lenet", num_classes=10), 4)  # no batch norm: nothing to split


def test_stock_batch_norm_is_refused():
    with pytest.raises(ValueError, match="batch-norm shards need Caffe's batch norm .* uses torch's at 'bn1'"):
        set_batch_norm_shards(build_model("resnet50", num_classes=10), 4)


def test_shards_must_divide_the_batch_and_the_processes():
    assert TrainConfig(batch_size=524, batch_norm_shards=4).batch_norm_shards == 4
    with pytest.raises(ValueError, match="batch_size 1000 does not split into batch_norm_shards = 3 equal parts"):
        TrainConfig(batch_size=1000, batch_norm_shards=3)
    check_batch_size(1000, 4, 8)
    with pytest.raises(ConfigError, match="batch_norm_shards = 6 does not share out over the 4"):
        check_batch_size(1200, 4, 6)
    assert local_batch_norm_shards(8, 4) == 2 and local_batch_norm_shards(8, 1) == 8
    assert local_batch_norm_shards(1, 4) == 1
