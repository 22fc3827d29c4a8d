"""Tests of the model registry: shapes, exact parameter counts, Caffe fillers and Caffe layers.

Parameter counts are recomputed here from each prototxt's layer list (not from the model code);
the architecture facts they encode are cited in src/onecycle/models/*.py and docs/models.md.
"""

from __future__ import annotations

import importlib
import inspect
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import REPO

from onecycle.models import (
    INIT_SCHEMES,
    MODELS,
    ParamMultipliers,
    build_model,
    param_multipliers,
    parameter_count,
)
from onecycle.models.hyperparam1_resnet import ProjectionBlock
from onecycle.models.init import caffe_msra_, caffe_xavier_, fill_layer
from onecycle.models.layers import CaffeBatchNorm2d, WithinChannelLRN
from onecycle.models.superconvergence_resnet import BasicBlock


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c: int) -> int:  # Caffe Scale layer: one scale and one shift per channel
    return 2 * c


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def sc_resnet_count(n: int, classes: int) -> int:
    """Resnet{6n+2}Cifar.prototxt: zero-padding shortcuts, so no projection weights."""
    def block(w: int) -> int:
        return 2 * (conv(w, w, 3) + bn(w))
    return (
        conv(3, 16, 3) + bn(16)
        + n * block(16)
        + block(16) + (n - 1) * block(32)  # L2_b1 runs at 16 channels, then zeros are concatenated
        + block(32) + (n - 1) * block(64)
        + fc(64, classes)
    )


def hp1_basic(w: int) -> int:
    return 2 * (conv(w, w, 3) + bn(w))


def hp1_down(a: int, b: int) -> int:  # conv0 3x3/2, conv1 3x3, proj 2x2/2, each + BN/Scale
    return conv(a, b, 3) + bn(b) + conv(b, b, 3) + bn(b) + conv(a, b, 2) + bn(b)


def densenet40_count(classes: int) -> int:
    total, width = conv(3, 16, 3, bias=False), 16
    for group in range(3):
        for _ in range(12):
            total += bn(width) + conv(width, 12, 3, bias=False)
            width += 12
        if group < 2:
            total += bn(width) + conv(width, width, 1, bias=False)
    return total + bn(width) + fc(width, classes)


EXPECTED_COUNTS = {
    # lenet: conv1 + conv2 + ip1 (50*4*4 = 800 inputs) + ip2, hand-computed as the brief states.
    "lenet": 20 * 1 * 25 + 20 + 50 * 20 * 25 + 50 + 800 * 500 + 500 + 500 * 10 + 10,
    "cifar3": conv(3, 32, 5) + conv(32, 32, 5) + conv(32, 64, 5) + fc(64 * 4 * 4, 10),
    "resnet20": sc_resnet_count(3, 10),
    "resnet56": sc_resnet_count(9, 10),
    "resnet110": sc_resnet_count(18, 10),
    "resnet56_part1": (
        conv(3, 16, 3) + bn(16)
        + 8 * hp1_basic(16) + hp1_down(16, 32) + 8 * hp1_basic(32) + hp1_down(32, 64)
        + 8 * hp1_basic(64) + fc(64, 10)
    ),
    "wide32": (
        conv(3, 16, 3) + bn(16)
        + 5 * hp1_basic(16) + hp1_down(16, 64) + 4 * hp1_basic(64) + hp1_down(64, 256)
        + 4 * hp1_basic(256) + fc(256, 10)
    ),
    "densenet40": densenet40_count(10),
    # torchvision documents 25,557,032 parameters for 1000 classes; 10 classes drop 990 rows of
    # the 2048-input FC (weights + bias).
    "resnet50": 25_557_032 - 990 * (2048 + 1),
}

CONV_LAYERS = {  # Conv2d modules per prototxt (docs/paper_reference.md C1, A2 remarks)
    "resnet56": 55,  # pre_conv + 27 blocks x 2
    "resnet56_part1": 55,  # first + 26 blocks x 2 + 2 projections
    "wide32": 33,  # "33 conv layers"
    "densenet40": 39,  # pre_conv + 36 dense layers + 2 transitions (+ FC = 40)
}


# The ImageNet nets are counted (and run at their native sizes) in tests/test_models_imagenet.py.
IMAGENET_MODELS = {"alexnet", "googlenet", "inception_resnet_v2"}


def test_registry_lists_every_expected_model():
    assert set(MODELS) == set(EXPECTED_COUNTS) | IMAGENET_MODELS
    for name, info in MODELS.items():
        assert info.name == name
        assert info.source


def test_config_checks_and_reports_import_no_torch_and_building_no_torchvision_nor_dynamo():
    # The Snakefile, every report job and config validation read only torch-free catalogs
    # (models, datasets, schedules, process counts): torch costs ~2 CPU s per process, and
    # torchvision.models would add torch._dynamo (~1.5 s). Only building resnet50 imports
    # torchvision. A fresh interpreter: this one has imported all of them already. The paper
    # config names every architecture and both folder datasets.
    probe = ("import sys; from onecycle.experiments.expansion import expand; "
             "from onecycle.experiments.loading import load_workflow_file; "
             "import onecycle.report.html, onecycle.dag.run_specs, onecycle.dag.gpu_check, onecycle.training.processes; "
             "expand(load_workflow_file(sys.argv[1]), 'paper_imagenet.yaml'); print('torch' in sys.modules); "
             "from onecycle.models import build_model; build_model('resnet20', 10); "
             "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe, str(REPO / "configs" / "paper_imagenet.yaml")],
                            capture_output=True, text=True, check=True).stdout
    assert loaded.split("\n")[:2] == ["False", "[]"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_catalog_options_are_the_builders_keyword_options(name):
    # The catalog declares them so that config checks need not import the network (and torch).
    info = MODELS[name]
    module, attribute = info.builder.split(":")
    builder = getattr(importlib.import_module(f"onecycle.models.{module}"), attribute)
    parameters = inspect.signature(builder).parameters
    assert info.options == tuple(p for p in parameters if p not in ("num_classes", "in_channels"))


def test_lazy_re_exports_are_the_submodules_names_and_unknown_names_fail():
    import onecycle.data
    import onecycle.schedules
    from onecycle.data import batches
    from onecycle.models import factory
    from onecycle.schedules import torch_adapter

    assert onecycle.data.Batches is batches.Batches and build_model is factory.build_model
    assert onecycle.schedules.OneCycleScheduler is torch_adapter.OneCycleScheduler
    with pytest.raises(AttributeError, match="'onecycle.data' has no attribute 'Bathces'"):
        onecycle.data.Bathces


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_parameter_count_is_exact(name):
    assert parameter_count(build_model(name, 10)) == EXPECTED_COUNTS[name]


def test_documented_counts_match_known_totals():
    # Cross-checks of the formulas above against independently known totals.
    assert EXPECTED_COUNTS["lenet"] == 431_080
    assert EXPECTED_COUNTS["densenet40"] == pytest.approx(1.0e6, rel=0.05)  # "1.0M" in DenseNet


@pytest.mark.parametrize("name", sorted(CONV_LAYERS))
def test_conv_layer_count_matches_prototxt(name):
    model = build_model(name, 10)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == CONV_LAYERS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_forward_shape_on_expected_input(name):
    info = MODELS[name]
    side = 64 if name == "resnet50" else info.input_size  # keep resnet50 cheap on CPU
    model = build_model(name, 7)
    x = torch.randn(2, info.input_channels, side, side)
    assert model(x).shape == (2, 7)
    model.eval()
    assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", ["lenet", "cifar3", "resnet20", "densenet40", "resnet50"])
def test_in_channels_override(name):
    info = MODELS[name]
    side = 64 if name == "resnet50" else info.input_size
    in_channels = 3 if info.input_channels == 1 else 1
    model = build_model(name, 10, in_channels=in_channels)
    assert model(torch.randn(2, in_channels, side, side)).shape == (2, 10)


def test_head_size_follows_num_classes():
    count_10 = parameter_count(build_model("resnet56_part1", 10))
    count_100 = parameter_count(build_model("resnet56_part1", 100))
    assert count_100 - count_10 == 90 * (64 + 1)  # c100Resnet56 differs only in post_FC


def test_cifar3_pools_round_up_like_caffe():
    model = build_model("cifar3", 10)
    assert model.ip1.in_features == 64 * 4 * 4  # 32 -> 16 -> 8 -> 4; floor rounding gives 3


def test_lenet_input_size_option_and_too_small_inputs():
    assert build_model("lenet", 10, input_size=32).ip1.in_features == 50 * 5 * 5
    with pytest.raises(ValueError, match=r"input_size=8 is too small for lenet .*at least 15"):
        build_model("lenet", 10, input_size=8)  # sklearn's 8x8 digits
    with pytest.raises(ValueError, match=r"built for 28x28 inputs, got 32x32"):
        build_model("lenet", 10)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"shape \(N, 1, H, W\)"):
        build_model("lenet", 10)(torch.randn(2, 3, 28, 28))


def test_resnets_reject_sides_their_shortcuts_cannot_follow():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_model("resnet20", 10)(torch.randn(2, 3, 30, 30))


# --- Caffe fillers ---------------------------------------------------------------------------


def test_caffe_xavier_bounds_are_exact_and_not_torchs():
    torch.manual_seed(0)
    weight = torch.empty(256, 64, 3, 3)
    caffe_xavier_(weight)
    bound = math.sqrt(3.0 / (64 * 9))  # filler.hpp: sqrt(3 / fan_in)
    assert weight.abs().max() <= bound
    assert weight.abs().max() > 0.999 * bound
    # 147 456 uniform draws: the sample variance's relative standard error is sqrt(0.8 / n) =
    # 0.23 %, so 1 % is 4 standard errors (and the seeded draw is the same on every CPU).
    assert weight.var().item() == pytest.approx(bound**2 / 3, rel=0.01)
    torch_bound = math.sqrt(6.0 / (64 * 9 + 256 * 9))  # nn.init.xavier_uniform_
    assert weight.abs().max() > 1.5 * torch_bound


def test_caffe_msra_std_on_a_large_layer():
    torch.manual_seed(0)
    weight = torch.empty(256, 256, 3, 3)
    caffe_msra_(weight)
    # 589 824 gaussian draws: the sample std's relative standard error is 1 / sqrt(2n) = 0.09 %.
    assert weight.std().item() == pytest.approx(math.sqrt(2.0 / (256 * 9)), rel=0.01)
    standard_error = weight.std().item() / math.sqrt(weight.numel())
    assert weight.mean().abs().item() < 5 * standard_error  # zero-mean gaussian


def test_fillers_use_fan_in_of_linear_layers():
    torch.manual_seed(0)
    layer = nn.Linear(1000, 500)
    fill_layer(layer, "msra")
    # 500 000 gaussian draws: relative standard error of the std 1 / sqrt(2n) = 0.1 %.
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / 1000), rel=0.01)
    assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("init", ["msra", "xavier", "prototxt"])
def test_init_is_deterministic_under_manual_seed(init):
    torch.manual_seed(123)
    first = build_model("resnet20", 10, init=init).state_dict()
    torch.manual_seed(123)
    second = build_model("resnet20", 10, init=init).state_dict()
    torch.manual_seed(124)
    third = build_model("resnet20", 10, init=init).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(first["pre_conv.weight"], third["pre_conv.weight"])


def test_xavier_init_reaches_every_layer_and_zeroes_biases():
    torch.manual_seed(0)
    model = build_model("wide32", 10, init="xavier")
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for layer in layers:
        assert layer.weight.abs().max() <= math.sqrt(3.0 / layer.weight[0].numel())
        assert torch.count_nonzero(layer.bias) == 0


def test_prototxt_fillers():
    torch.manual_seed(0)
    cifar3 = build_model("cifar3", 10, init="prototxt")
    # Sample stds of 2 400 and 51 200 draws: relative standard errors 1.4 % and 0.3 %.
    assert cifar3.conv1.weight.std().item() == pytest.approx(1e-4, rel=0.1)  # gaussian 0.0001
    assert cifar3.conv3.weight.std().item() == pytest.approx(1e-2, rel=0.05)  # gaussian 0.01
    sc = build_model("resnet56", 10, init="prototxt")
    assert sc.fc.weight.abs().max() <= math.sqrt(3.0 / 64)  # post_FC: xavier
    convs = torch.cat([m.weight.flatten() / math.sqrt(2.0 / m.weight[0].numel())
                       for m in sc.modules() if isinstance(m, nn.Conv2d)])
    assert convs.std().item() == pytest.approx(1.0, rel=0.01)  # every conv: msra (n = 802 224: s.e. 0.08 %)
    lenet = build_model("lenet", 10, init="prototxt")
    assert lenet.ip1.weight.abs().max() <= math.sqrt(3.0 / 800)  # every layer: xavier
    with pytest.raises(ValueError, match="init='prototxt' needs a Caffe port; 'resnet50'"):
        build_model("resnet50", 10, init="prototxt")


# --- Caffe multipliers -----------------------------------------------------------------------


def test_param_multipliers_follow_the_prototxts():
    cifar3 = param_multipliers(build_model("cifar3", 10))
    assert cifar3["ip1.weight"] == ParamMultipliers(1.0, 250.0)
    assert cifar3["ip1.bias"] == ParamMultipliers(2.0, 0.0)
    assert cifar3["conv1.bias"] == ParamMultipliers(2.0, 1.0)
    assert cifar3["conv3.bias"] == ParamMultipliers(1.0, 1.0)
    assert param_multipliers(build_model("lenet", 10))["ip2.bias"] == ParamMultipliers(2.0, 1.0)
    resnet56 = param_multipliers(build_model("resnet56", 10))
    assert resnet56["pre_conv.bias"] == ParamMultipliers(2.0, 0.0)  # Resnet56Cifar: decay_mult 0
    resnet20 = param_multipliers(build_model("resnet20", 10))
    assert resnet20["pre_conv.bias"] == ParamMultipliers(2.0, 1.0)  # Resnet20Cifar: decay_mult 1
    part1 = param_multipliers(build_model("resnet56_part1", 10))
    assert part1["fc.bias"] == ParamMultipliers(2.0, 0.0)
    assert part1["first_conv.bias"] == ParamMultipliers(1.0, 1.0)
    assert param_multipliers(build_model("densenet40", 10))["fc.bias"] == ParamMultipliers(2.0, 1.0)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_param_multipliers_cover_every_parameter(name):
    model = build_model(name, 10)
    multipliers = param_multipliers(model)
    assert list(multipliers) == [n for n, _ in model.named_parameters()]
    if name == "resnet50":
        assert set(multipliers.values()) == {ParamMultipliers(1.0, 1.0)}


# --- Caffe layers ----------------------------------------------------------------------------


@pytest.mark.numerics
def test_caffe_batchnorm_running_statistics():
    # In float64, so that the formulas are what is compared: a channel's statistics sum 100
    # terms of magnitude below 10, rounding below 100 u x 10 = 1e-13; outputs agree inside 1e-12
    # (the first check divides by sqrt(1e-5): 1e-13 x 316 still well inside its 1e-5 relative).
    torch.manual_seed(0)
    layer = CaffeBatchNorm2d(3, moving_average_fraction=0.9).double()
    layer.eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    # Before any step Caffe's scale factor is 0: mean 0, variance 0.
    assert torch.allclose(layer(x), x / math.sqrt(1e-5))
    first = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1
    second = torch.randn(4, 3, 5, 5, dtype=torch.float64) - 3
    layer.train()
    reference = nn.BatchNorm2d(3).double()
    assert torch.allclose(layer(first), reference(first), rtol=0, atol=1e-12)  # same training normalisation
    layer(second)
    mean, var = layer.running_mean_var()
    expected_mean = (0.9 * first.mean((0, 2, 3)) + second.mean((0, 2, 3))) / 1.9
    expected_var = (0.9 * first.var((0, 2, 3)) + second.var((0, 2, 3))) / 1.9  # m/(m-1) corrected
    assert torch.allclose(mean, expected_mean, rtol=0, atol=1e-12)
    assert torch.allclose(var, expected_var, rtol=0, atol=1e-12)
    layer.eval()
    assert torch.allclose(layer(x), (x - expected_mean[None, :, None, None])
                          / torch.sqrt(expected_var[None, :, None, None] + 1e-5), rtol=0, atol=1e-12)


def test_moving_average_fraction_option_is_validated():
    model = build_model("resnet56", 10, moving_average_fraction=0.95)  # SC x.sh for CLR runs
    assert model.pre_bn.moving_average_fraction == 0.95
    with pytest.raises(ValueError, match="moving_average_fraction must be in"):
        build_model("resnet56", 10, moving_average_fraction=1.0)


def test_within_channel_lrn_matches_caffe_formula():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 4)
    y = WithinChannelLRN(3, alpha=0.5, beta=0.75)(x)
    corner = (x[0, 1, :2, :2] ** 2).sum() / 9  # zero padding counts in Caffe's AVE divisor
    assert torch.allclose(y[0, 1, 0, 0], x[0, 1, 0, 0] * (1 + 0.5 * corner) ** -0.75)
    inner = (x[0, 1, :3, :3] ** 2).sum() / 9
    assert torch.allclose(y[0, 1, 1, 1], x[0, 1, 1, 1] * (1 + 0.5 * inner) ** -0.75)


def zero_weights(module: nn.Module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()


def test_sc_downsampling_block_is_avg_pool_plus_zero_channels():
    block = BasicBlock(16, stride=2, widen_to=32, maf=0.999)
    zero_weights(block)  # residual branch outputs 0, leaving only the shortcut
    x = torch.rand(2, 16, 32, 32)
    out = block(x)
    pooled = F.avg_pool2d(x, 3, 2, ceil_mode=True)
    assert out.shape == (2, 32, 16, 16)
    assert torch.allclose(out[:, :16], pooled)
    assert torch.count_nonzero(out[:, 16:]) == 0
    # Caffe divides an edge window by the cells inside the image: averaging ones gives ones.
    assert torch.equal(F.avg_pool2d(torch.ones(1, 1, 32, 32), 3, 2, ceil_mode=True),
                       torch.ones(1, 1, 16, 16))


def test_part1_blocks_have_no_relu_after_the_sum():
    block = ProjectionBlock(16, 16, stride=1, maf=0.9)
    zero_weights(block)
    x = -torch.rand(2, 16, 8, 8)  # negative inputs would be zeroed by a post-sum ReLU
    assert torch.equal(block(x), x)
    down = ProjectionBlock(16, 64, stride=2, maf=0.9)
    assert down.projection[0].kernel_size == (2, 2) and down.projection[0].stride == (2, 2)


# --- Bad input -------------------------------------------------------------------------------


def test_unknown_model_names_a_close_match_and_all_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet5' \(did you mean 'resnet56'\?\)"):
        build_model("resnet5", 10)
    with pytest.raises(ValueError) as error:
        build_model("vgg16", 10)
    assert all(name in str(error.value) for name in MODELS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
        ({"num_classes": 10, "in_channels": 0}, "in_channels must be a positive integer"),
        ({"num_classes": 10, "init": "kaiming"}, "unknown init 'kaiming'"),
        ({"num_classes": 10, "dropout": 0.5}, "unknown option 'dropout' for model 'lenet'"),
        ({"num_classes": 10, "input_size": "28"}, "input_size must be a positive integer"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        build_model("lenet", **kwargs)
    assert "\n" not in str(error.value)


def test_init_schemes():
    assert INIT_SCHEMES == ("default", "msra", "xavier", "prototxt")
    assert MODELS["densenet40"].options == ("moving_average_fraction", "dropout")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_caffe_port_flag_matches_the_built_model(name):
    # Configs refuse Caffe-only options (prototxt fillers/multipliers, batch-norm shards) from
    # this flag, before any model is built: it must say what the model really is.
    from onecycle.models import CaffePort

    assert MODELS[name].caffe_port == isinstance(build_model(name, 10), CaffePort)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fixed_input_size_flag_matches_the_forward(name):
    # Configs check data.crop_size against this flag before any data is read (a Caffe mean
    # image over ImageNet takes a while): it must say whether the forward takes other sides.
    info = MODELS[name]
    model = build_model(name, 10).eval()
    other = info.input_size + 8  # still a multiple of 4, as the CIFAR ResNets need
    x = torch.randn(1, info.input_channels, other, other)
    if info.fixed_input_size:
        with pytest.raises(ValueError, match=f"built for {info.input_size}x{info.input_size} inputs"):
            model(x)
    else:
        with torch.no_grad():
            assert model(x).shape == (1, 10)
