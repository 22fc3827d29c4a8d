"""The SC ResNets' model option `batch_norm` (issue 26): "caffe", the default, is Caffe's BatchNorm
+ Scale exactly as before; "torch" is nn.BatchNorm2d with PyTorch's running statistics and
momentum 1 - moving_average_fraction, everything else (fillers, multipliers) equal."""

import pytest
import torch
from torch import nn

from onecycle.experiments.config import ConfigError, OptimConfig, RunConfig, parse
from onecycle.models import build_model, classification_loss, param_multipliers
from onecycle.models.fused_batch_norm import use_fused_running_statistics
from onecycle.models.layers import CaffeBatchNorm2d, set_batch_norm_shards
from onecycle.training.optim import build_optimizer

SC_RESNETS = ("resnet20", "resnet56", "resnet110")
U32 = 2.0**-24  # float32 unit roundoff


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (CaffeBatchNorm2d, nn.modules.batchnorm._BatchNorm))]


def _seeded(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, 10, 1, init="prototxt", **options)


@pytest.mark.parametrize("name", SC_RESNETS)
def test_default_is_caffes_batch_norm_as_before(name):
    default, caffe = _seeded(name, moving_average_fraction=0.95), _seeded(name, moving_average_fraction=0.95,
                                                                             batch_norm="caffe")
    layers = _batch_norms(default)
    assert layers and all(type(m) is CaffeBatchNorm2d and m.moving_average_fraction == 0.95 for m in layers)
    # Caffe's three running sums and the Scale layer's weight and bias, and nothing else.
    assert [k for k in default.state_dict() if k.startswith("pre_bn.")] == [
        "pre_bn.weight", "pre_bn.bias", "pre_bn.mean_sum", "pre_bn.var_sum", "pre_bn.sum_weight"]
    expected = default.state_dict()
    assert list(caffe.state_dict()) == list(expected)
    for key, value in caffe.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize("name", SC_RESNETS)
def test_torch_batch_norm_with_caffes_horizon_and_the_same_initial_weights(name):
    caffe, stock = _seeded(name, moving_average_fraction=0.95), _seeded(name, moving_average_fraction=0.95,
                                                                           batch_norm="torch")
    layers = _batch_norms(stock)
    assert len(layers) == len(_batch_norms(caffe))
    for layer in layers:
        assert type(layer) is nn.BatchNorm2d and layer.track_running_stats and layer.affine
        # 1 - 0.95 in binary: 0.050000000000000044, within one double rounding of 0.05.
        assert layer.momentum == 1.0 - 0.95 and abs(layer.momentum - 0.05) < 1e-16
        assert layer.eps == 1e-5
        # The Scale layer's fillers (constant 1, constant 0); torch's running state starts at 0/1.
        assert torch.equal(layer.weight, torch.ones_like(layer.weight))
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        assert torch.equal(layer.running_mean, torch.zeros_like(layer.running_mean))
        assert torch.equal(layer.running_var, torch.ones_like(layer.running_var))
    # Batch norm draws nothing from the RNG: every conv and FC starts from the same weights.
    for (key, ours), (_, theirs) in zip(stock.named_modules(), caffe.named_modules(), strict=True):
        if isinstance(ours, (nn.Conv2d, nn.Linear)):
            assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias), key
    assert [k for k, _ in stock.named_parameters()] == [k for k, _ in caffe.named_parameters()]


@pytest.mark.parametrize("name", ("resnet20", "resnet56"))  # conv bias decay_mult 1 and 0
def test_multipliers_do_not_depend_on_the_batch_norm(name):
    caffe, stock = build_model(name, 10), build_model(name, 10, batch_norm="torch")
    assert param_multipliers(stock) == param_multipliers(caffe)
    assert (param_multipliers(stock)["blocks.0.bn1.bias"].lr_mult,
            param_multipliers(stock)["blocks.0.bn1.bias"].decay_mult) == (1.0, 1.0)


@pytest.mark.parametrize("value", ["Caffe", "pytorch", None, 1])
def test_an_unknown_batch_norm_is_a_one_line_error(value):
    with pytest.raises(ValueError) as error:
        build_model("resnet20", 10, batch_norm=value)
    assert str(error.value) == f"batch_norm must be one of 'caffe', 'torch', got {value!r}"
    with pytest.raises(ValueError, match="moving_average_fraction must be in"):
        build_model("resnet20", 10, moving_average_fraction=1.0, batch_norm="torch")


def _run_config(batch_norm: str, shards: int) -> dict:
    return {"name": "bn", "seed": 0,
            "data": {"dataset": "fashion_mnist", "train_subset": 250, "augment": "mirror", "normalize": "mean_std"},
            "model": {"arch": "resnet20", "init": "prototxt",
                      "options": {"moving_average_fraction": 0.95, "batch_norm": batch_norm}},
            "optim": {"algorithm": "sgd", "update_rule": "pytorch", "multipliers": "prototxt",
                      "weight_decay": 1.0e-4, "momentum": 0.9},
            "train": {"batch_size": 125, "epochs": 2, "batch_norm_shards": shards},
            "schedule": {"policy": "triangular", "params": {"base_lr": 0.1, "max_lr": 3.0, "stepsize": 2}}}


def test_shards_need_caffes_batch_norm():
    assert parse(RunConfig, _run_config("torch", 1)).model.options["batch_norm"] == "torch"
    assert parse(RunConfig, _run_config("caffe", 5)).train.batch_norm_shards == 5
    with pytest.raises(ConfigError) as error:
        parse(RunConfig, _run_config("torch", 5))
    message = str(error.value)
    assert "\n" not in message
    assert "train.batch_norm_shards > 1 needs Caffe's batch norm; model.options.batch_norm 'torch'" in message
    with pytest.raises(ValueError, match="batch-norm shards need Caffe's batch norm .* torch's at 'pre_bn'"):
        set_batch_norm_shards(build_model("resnet20", 10, batch_norm="torch"), 5)


def test_the_gpu_fused_path_leaves_torchs_batch_norm_alone():
    model = build_model("resnet20", 10, batch_norm="torch")
    before = _batch_norms(model)
    use_fused_running_statistics(model)
    after = _batch_norms(model)
    assert all(a is b and type(a) is nn.BatchNorm2d for a, b in zip(after, before, strict=True))


def test_one_training_step_blends_the_batch_statistics_into_0_and_1():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 1, init="prototxt", moving_average_fraction=0.95, batch_norm="torch")
    optimizer = build_optimizer(model, OptimConfig(update_rule="pytorch", multipliers="prototxt",
                                                   weight_decay=1e-4, momentum=0.9), lr=0.1)
    seen = []
    model.pre_bn.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    x, y = torch.randn(2, 1, 8, 8), torch.arange(2)
    before = model.fc.weight.detach().clone()
    model.train()
    loss = classification_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(model.fc.weight, before)
    # By hand, in float64 from the float32 input the layer saw: n = 2 x 8 x 8 values per channel.
    (inputs,) = seen
    values = inputs.double().transpose(0, 1).reshape(16, -1)
    n, m = values.shape[1], 1.0 - 0.95
    batch_mean, batch_var = values.mean(1), values.var(1, correction=1)  # unbiased, as torch blends it
    # The kernel sums n float32 values: each sum within (n - 1) u sum|x| (recursive summation's
    # bound), so a mean within n u max|x| and an unbiased variance within about (n + 2) u max (x - mean)^2;
    # the blend's own roundings (a product and a sum) add 2 u of the result.
    expected_mean, expected_var = (1 - m) * 0.0 + m * batch_mean, (1 - m) * 1.0 + m * batch_var
    mean_tol = n * U32 * values.abs().max() + 2 * U32 * expected_mean.abs().max()
    var_tol = (n + 2) * U32 * ((values - batch_mean[:, None]) ** 2).max() + 2 * U32 * expected_var.max()
    torch.testing.assert_close(model.pre_bn.running_mean.double(), expected_mean, rtol=0, atol=float(mean_tol))
    torch.testing.assert_close(model.pre_bn.running_var.double(), expected_var, rtol=0, atol=float(var_tol))
    # The bounds are tight enough to tell the unbiased variance from the biased one (a factor (n-1)/n).
    biased = (1 - m) * 1.0 + m * values.var(1, correction=0)
    assert (model.pre_bn.running_var.double() - biased).abs().max() > var_tol
    assert int(model.pre_bn.num_batches_tracked) == 1
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
