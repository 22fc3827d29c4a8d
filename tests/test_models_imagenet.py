"""Tests of the ImageNet models: AlexNet and GoogLeNet (Caffe ports) and Inception-ResNet-v2.

Parameter counts are recomputed here from each source's layer list (not from the model code):
BVLC/caffe models/bvlc_alexnet/train_val.prototxt, models/bvlc_googlenet/train_val.prototxt and
timm's inception_resnet_v2 (the Caffe prototxt Part 1 used was not available; see
src/onecycle/models/inception_resnet_v2.py and docs/models.md).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onecycle.models import (
    MODELS,
    ParamMultipliers,
    WithAuxiliary,
    build_model,
    classification_loss,
    param_multipliers,
    parameter_count,
)
from onecycle.models.outputs import main_logits


def conv(c_in: int, c_out: int, kh: int, kw: int | None = None, bias: bool = True,
         groups: int = 1) -> int:
    return c_in // groups * c_out * kh * (kh if kw is None else kw) + (c_out if bias else 0)


def bn(c: int) -> int:  # BatchNorm2d affine: one scale and one shift per channel
    return 2 * c


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# --- layer lists -----------------------------------------------------------------------------


def alexnet_count(classes: int) -> int:
    """bvlc_alexnet: conv2/4/5 are group 2; pool5 is 6x6 at 227x227, so fc6 sees 256*36."""
    return (
        conv(3, 96, 11) + conv(96, 256, 5, groups=2) + conv(256, 384, 3)
        + conv(384, 384, 3, groups=2) + conv(384, 256, 3, groups=2)
        + fc(256 * 6 * 6, 4096) + fc(4096, 4096) + fc(4096, classes)
    )


# bvlc_googlenet num_output per module: 1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj.
GOOGLENET_MODULES = [
    ("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64),
    ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128), ("5a", 256, 160, 320, 32, 128, 128),
    ("5b", 384, 192, 384, 48, 128, 128),
]


def googlenet_count(classes: int, aux: bool = True) -> int:
    total = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)  # conv1, conv2 reduce, conv2
    width = 192
    for name, n1, r3, n3, r5, n5, proj in GOOGLENET_MODULES:
        total += (conv(width, n1, 1) + conv(width, r3, 1) + conv(r3, n3, 3)
                  + conv(width, r5, 1) + conv(r5, n5, 5) + conv(width, proj, 1))
        width = n1 + n3 + n5 + proj
        if aux and name in ("4a", "4d"):  # loss1, loss2: conv 128 on a 4x4 map, fc 1024, classifier
            total += conv(width, 128, 1) + fc(128 * 4 * 4, 1024) + fc(1024, classes)
    return total + fc(width, classes)  # pool5 7x7 -> 1x1, loss3/classifier


def basic(c_in: int, c_out: int, kh: int, kw: int | None = None) -> int:
    return conv(c_in, c_out, kh, kw, bias=False) + bn(c_out)


def inception_resnet_v2_count(classes: int) -> int:
    """timm inception_resnet_v2: stem + mixed_5b, 10 x Block35, mixed_6a, 20 x Block17,
    mixed_7a, 9 + 1 x Block8, conv2d_7b, fc. Residual "up" convs: bias, no BN."""
    stem = (basic(3, 32, 3) + basic(32, 32, 3) + basic(32, 64, 3) + basic(64, 80, 1)
            + basic(80, 192, 3))
    mixed_5b = (basic(192, 96, 1) + basic(192, 48, 1) + basic(48, 64, 5) + basic(192, 64, 1)
                + basic(64, 96, 3) + basic(96, 96, 3) + basic(192, 64, 1))
    block35 = (basic(320, 32, 1) + basic(320, 32, 1) + basic(32, 32, 3) + basic(320, 32, 1)
               + basic(32, 48, 3) + basic(48, 64, 3) + conv(128, 320, 1))
    mixed_6a = basic(320, 384, 3) + basic(320, 256, 1) + basic(256, 256, 3) + basic(256, 384, 3)
    block17 = (basic(1088, 192, 1) + basic(1088, 128, 1) + basic(128, 160, 1, 7)
               + basic(160, 192, 7, 1) + conv(384, 1088, 1))
    mixed_7a = (basic(1088, 256, 1) + basic(256, 384, 3) + basic(1088, 256, 1)
                + basic(256, 288, 3) + basic(1088, 256, 1) + basic(256, 288, 3)
                + basic(288, 320, 3))
    block8 = (basic(2080, 192, 1) + basic(2080, 192, 1) + basic(192, 224, 1, 3)
              + basic(224, 256, 3, 1) + conv(448, 2080, 1))
    return (stem + mixed_5b + 10 * block35 + mixed_6a + 20 * block17 + mixed_7a + 10 * block8
            + basic(2080, 1536, 1) + fc(1536, classes))


COUNTS = {
    "alexnet": alexnet_count,
    "googlenet": googlenet_count,
    "inception_resnet_v2": inception_resnet_v2_count,
}
NATIVE_SIZE = {"alexnet": 227, "googlenet": 224, "inception_resnet_v2": 299}


@pytest.fixture(scope="module")
def models_1000() -> dict[str, nn.Module]:
    """One 1000-class model of each, built once (Inception-ResNet-v2 alone is 56M parameters)."""
    torch.manual_seed(0)
    return {name: build_model(name, 1000) for name in COUNTS}


# --- registry and parameter counts -----------------------------------------------------------


def test_registered_with_sources_sizes_and_options():
    for name, size in NATIVE_SIZE.items():
        info = MODELS[name]
        assert info.input_size == size and info.input_channels == 3
        assert info.source
    assert "bvlc_alexnet/train_val.prototxt" in MODELS["alexnet"].source
    assert "bvlc_googlenet/train_val.prototxt" in MODELS["googlenet"].source
    assert MODELS["alexnet"].options == ()
    assert MODELS["googlenet"].options == ("aux_classifiers",)
    assert MODELS["inception_resnet_v2"].options == ("dropout",)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_count_is_exact_for_10_classes(name):
    assert parameter_count(build_model(name, 10)) == COUNTS[name](10)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_count_is_exact_for_1000_classes(name, models_1000):
    assert parameter_count(models_1000[name]) == COUNTS[name](1000)


def test_counts_match_known_totals():
    assert alexnet_count(1000) == 60_965_224  # bvlc_alexnet, 1000 classes
    assert inception_resnet_v2_count(1000) == 55_843_464  # timm inception_resnet_v2
    # bvlc_googlenet without the aux heads (its deploy.prototxt): about 7.0M.
    assert googlenet_count(1000, aux=False) == 6_998_552
    no_aux = build_model("googlenet", 1000, aux_classifiers=False)
    assert parameter_count(no_aux) == googlenet_count(1000, aux=False)


# --- forward -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_eval_output_shape_at_native_size(name):
    model = build_model(name, 7).eval()
    side = NATIVE_SIZE[name]
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


def test_googlenet_training_output_carries_weighted_aux_logits():
    torch.manual_seed(0)
    model = build_model("googlenet", 5).train()
    x = torch.randn(2, 3, 224, 224)
    out = model(x)
    assert isinstance(out, WithAuxiliary)
    assert out.logits.shape == (2, 5)
    assert [weight for weight, _ in out.auxiliary] == [0.3, 0.3]  # loss1, loss2 loss_weight
    assert all(logits.shape == (2, 5) for _, logits in out.auxiliary)
    assert main_logits(out) is out.logits
    loss = classification_loss(out, torch.tensor([0, 3]))
    loss.backward()  # the aux heads are in the graph
    assert model.loss1.classifier.weight.grad is not None
    assert model.loss2.fc.weight.grad is not None
    plain = build_model("googlenet", 5, aux_classifiers=False).train()
    assert isinstance(plain(x), torch.Tensor)
    assert plain.loss1 is None and plain.loss2 is None


def test_googlenet_pools_round_up_like_caffe():
    model = build_model("googlenet", 10)
    # 224 -> 112 -> 56 -> 28 -> 14 -> aux 4x4; floor rounding would give 13 -> 3x3 (1152).
    assert model.loss1.fc.in_features == 128 * 4 * 4


def test_fixed_size_nets_reject_other_sides():
    with pytest.raises(ValueError, match=r"alexnet was built for 227x227 inputs, got 224x224"):
        build_model("alexnet", 10)(torch.randn(1, 3, 224, 224))
    with pytest.raises(ValueError, match=r"googlenet was built for 224x224 inputs"):
        build_model("googlenet", 10)(torch.randn(1, 3, 227, 227))
    with pytest.raises(ValueError, match=r"at least 75x75 .*got 64x64"):
        build_model("inception_resnet_v2", 10)(torch.randn(1, 3, 64, 64))


def test_alexnet_in_channels_override():
    model = build_model("alexnet", 10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 227, 227)).shape == (1, 10)


# --- AlexNet layers ----------------------------------------------------------------------------


def test_alexnet_group_2_convs_are_grouped():
    model = build_model("alexnet", 10)
    assert model.conv1.weight.shape == (96, 3, 11, 11) and model.conv1.groups == 1
    assert model.conv2.weight.shape == (256, 48, 5, 5) and model.conv2.groups == 2
    assert model.conv3.weight.shape == (384, 256, 3, 3) and model.conv3.groups == 1
    assert model.conv4.weight.shape == (384, 192, 3, 3) and model.conv4.groups == 2
    assert model.conv5.weight.shape == (256, 192, 3, 3) and model.conv5.groups == 2
    assert model.fc6.in_features == 256 * 6 * 6
    # Group 2 really splits the channels: the first half of the outputs ignores the second half
    # of the inputs.
    x = torch.randn(1, 96, 13, 13)
    changed = x.clone()
    changed[:, 48:] += 1.0
    with torch.no_grad():
        assert torch.equal(model.conv2(x)[:, :128], model.conv2(changed)[:, :128])
        assert not torch.equal(model.conv2(x)[:, 128:], model.conv2(changed)[:, 128:])


def caffe_lrn_reference(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    """lrn_layer.cpp ACROSS_CHANNELS: x / (1 + alpha/size * sum of x^2 over the window)^beta,
    the window centred on the channel and cut at the ends."""
    out = torch.empty_like(x)
    channels, half = x.shape[1], size // 2
    for c in range(channels):
        window = x[:, max(0, c - half): min(channels, c + half + 1)]
        out[:, c] = x[:, c] / (1.0 + alpha / size * (window**2).sum(dim=1)) ** beta
    return out


@pytest.mark.parametrize("name", ["alexnet", "googlenet"])
def test_lrn_matches_caffe_formula(name):
    model = build_model(name, 10)
    norm = model.norm1
    assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 1e-4, 0.75, 1.0)
    torch.manual_seed(0)
    x = 60.0 * torch.randn(2, 7, 3, 3, dtype=torch.float64)  # large: the normalisation matters
    expected = caffe_lrn_reference(x, 5, 1e-4, 0.75)
    assert not torch.allclose(expected, x, rtol=0.05)
    assert torch.allclose(norm(x), expected, rtol=1e-12, atol=0)


# --- fillers and multipliers -------------------------------------------------------------------


def test_alexnet_prototxt_fillers():
    torch.manual_seed(0)
    model = build_model("alexnet", 1000, init="prototxt")
    # Sample stds of 0.9M to 38M gaussian draws: relative standard errors 1 / sqrt(2n) < 0.08 %.
    assert model.fc6.weight.std().item() == pytest.approx(0.005, rel=0.01)
    assert model.fc7.weight.std().item() == pytest.approx(0.005, rel=0.01)
    assert model.conv3.weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert model.fc8.weight.std().item() == pytest.approx(0.01, rel=0.01)
    for layer in (model.conv2, model.conv4, model.conv5, model.fc6, model.fc7):
        assert torch.all(layer.bias == 0.1)
    for layer in (model.conv1, model.conv3, model.fc8):
        assert torch.count_nonzero(layer.bias) == 0


def test_googlenet_prototxt_fillers():
    torch.manual_seed(0)
    model = build_model("googlenet", 1000, init="prototxt")
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == 3 + 9 * 6 + 2 * 3 + 1  # stem convs, modules, aux heads, loss3
    for layer in layers:  # Caffe xavier: U(+-sqrt(3 / fan_in))
        assert layer.weight.abs().max() <= math.sqrt(3.0 / layer.weight[0].numel())
    big = model.inception_5b.conv_3x3.weight
    # bound^2 / 3, from 663 552 uniform draws: relative standard error sqrt(0.8 / n) = 0.11 %.
    assert big.var().item() == pytest.approx(1.0 / big[0].numel(), rel=0.01)
    classifiers = [model.loss1.classifier, model.loss2.classifier, model.classifier]
    for layer in classifiers:
        assert torch.count_nonzero(layer.bias) == 0
    assert torch.all(model.conv1.bias == 0.2)
    assert torch.all(model.loss1.conv.bias == 0.2) and torch.all(model.loss2.fc.bias == 0.2)
    others = [layer for layer in layers if not any(layer is c for c in classifiers)]
    assert all(torch.all(layer.bias == 0.2) for layer in others)


def test_inception_resnet_v2_is_not_a_caffe_port():
    with pytest.raises(ValueError, match="init='prototxt' needs a Caffe port"):
        build_model("inception_resnet_v2", 10, init="prototxt")


@pytest.mark.parametrize("name", ["alexnet", "googlenet"])
def test_caffe_multipliers_cover_every_parameter(name):
    model = build_model(name, 10)
    multipliers = param_multipliers(model)
    assert list(multipliers) == [n for n, _ in model.named_parameters()]
    for param_name, value in multipliers.items():  # every layer: 1/1 weights, 2/0 biases
        if param_name.endswith("bias"):
            assert value == ParamMultipliers(2.0, 0.0), param_name
        else:
            assert value == ParamMultipliers(1.0, 1.0), param_name
    assert multipliers["fc6.bias" if name == "alexnet" else "loss1.fc.bias"].decay_mult == 0.0


def test_inception_resnet_v2_multipliers_are_plain(models_1000):
    model = models_1000["inception_resnet_v2"]
    multipliers = param_multipliers(model)
    assert list(multipliers) == [n for n, _ in model.named_parameters()]
    assert set(multipliers.values()) == {ParamMultipliers(1.0, 1.0)}


# --- Inception-ResNet-v2 layout ----------------------------------------------------------------


def test_inception_resnet_v2_layout(models_1000):
    model = models_1000["inception_resnet_v2"]
    assert len(model.repeat) == 10 and len(model.repeat_1) == 20 and len(model.repeat_2) == 9
    assert {b.scale for b in model.repeat} == {0.17}
    assert {b.scale for b in model.repeat_1} == {0.10}
    assert {b.scale for b in model.repeat_2} == {0.20}
    assert model.block8.scale == 1.0 and model.block8.relu is None
    assert all(b.relu is not None for b in model.repeat_2)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and {m.eps for m in bns} == {1e-3}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    up = [m for m in convs if m.bias is not None]  # residual "up" convs only
    assert len(up) == 10 + 20 + 10
    assert len(bns) == len(convs) - len(up)  # every other conv is conv + BN
    assert model.dropout.p == 0.2 and model.classif.in_features == 1536


def test_inception_resnet_v2_final_block_has_no_relu():
    from onecycle.models.inception_resnet_v2 import Block8

    block = Block8(relu=False)
    for parameter in block.conv2d.parameters():  # zero residual branch: out = x
        nn.init.zeros_(parameter)
    x = -torch.rand(1, 2080, 2, 2)
    with torch.no_grad():
        assert torch.equal(block(x), x)  # a ReLU after the sum would zero the negative input


def test_inception_resnet_v2_dropout_option():
    assert build_model("inception_resnet_v2", 10, dropout=0.0).dropout.p == 0.0
    with pytest.raises(ValueError, match="dropout must be in"):
        build_model("inception_resnet_v2", 10, dropout=1.0)


# --- auxiliary outputs and the loss ------------------------------------------------------------


def test_classification_loss_matches_hand_computation():
    target = torch.tensor([1, 0])
    main = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    aux1 = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    aux2 = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 2.0, 0.0]])

    def cross_entropy(logits: torch.Tensor) -> float:  # mean of -log softmax[target]
        rows = [math.log(sum(math.exp(v) for v in row)) - row[t]
                for row, t in zip(logits.tolist(), target.tolist(), strict=True)]
        return sum(rows) / len(rows)

    expected = cross_entropy(main) + 0.3 * cross_entropy(aux1) + 0.3 * cross_entropy(aux2)
    output = WithAuxiliary(main, ((0.3, aux1), (0.3, aux2)))
    # torch in float32 against float64 by hand, a dozen operations on values of order 1: each
    # within 2^-24 = 6e-8, so rel 1e-6 has a factor of more than ten to spare.
    assert classification_loss(output, target).item() == pytest.approx(expected, rel=1e-6)
    assert classification_loss(main, target).item() == pytest.approx(cross_entropy(main),
                                                                     rel=1e-6)
    summed = classification_loss(output, target, loss_fn=lambda o, t: F.cross_entropy(
        o, t, reduction="sum"))
    assert summed.item() == pytest.approx(2 * expected, rel=1e-6)


def test_googlenet_aux_classifiers_option_is_validated():
    with pytest.raises(ValueError, match="aux_classifiers must be true or false"):
        build_model("googlenet", 10, aux_classifiers="no")
