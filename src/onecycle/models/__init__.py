"""Model registry: the networks of Smith's papers, by name, ported from their Caffe prototxts.

``build_model("resnet56", num_classes=10, init="msra")`` returns an ``nn.Module``. Every entry
names its source; docs/models.md tables the parameter counts and every deviation from the source.
Caffe ports (all but ``resnet50`` and ``inception_resnet_v2``) also know their prototxt's fillers
(``init="prototxt"``) and their per-parameter ``lr_mult`` / ``decay_mult``
(:func:`param_multipliers`).
GoogLeNet returns :class:`WithAuxiliary` in training mode; :func:`classification_loss` reduces it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .alexnet import AlexNet
from .caffe_cifar import Cifar3
from .densenet import DenseNet40
from .googlenet import GoogLeNet
from .hyperparam1_resnet import resnet56_part1, wide32
from .imagenet import resnet50
from .inception_resnet_v2 import InceptionResNetV2
from .init import INIT_SCHEMES, fill_all_layers
from .layers import CaffePort, ParamMultipliers, require_positive_int
from .lenet import LeNet
from .outputs import WithAuxiliary, classification_loss
from .superconvergence_resnet import resnet20, resnet56, resnet110

__all__ = [
    "INIT_SCHEMES",
    "MODELS",
    "CaffePort",
    "ModelInfo",
    "ParamMultipliers",
    "WithAuxiliary",
    "build_model",
    "classification_loss",
    "param_multipliers",
    "parameter_count",
]


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: ``build(num_classes, in_channels, **options)`` and its source."""

    name: str
    build: Callable[..., nn.Module]
    source: str  # one line: the prototxt (repository and path) or paper it follows
    input_channels: int  # channels of the data it was designed for
    input_size: int  # side of the square inputs it was designed for
    # A port of a Caffe prototxt (a CaffePort): it has prototxt fillers and multipliers, and
    # Caffe's batch norm, so init "prototxt", optim.multipliers "prototxt" and batch-norm
    # shards apply (the shards not where its option batch_norm is "torch"). Checked against the
    # built model in tests/test_models.py.
    caffe_port: bool = True
    # Its forward refuses inputs of any other side (fully connected layers sized for them), so a
    # configured crop_size must equal input_size. Checked in tests/test_models.py.
    fixed_input_size: bool = False

    def options(self) -> tuple[str, ...]:
        """Keyword options ``build`` accepts beyond num_classes and in_channels."""
        parameters = inspect.signature(self.build).parameters
        return tuple(name for name in parameters if name not in ("num_classes", "in_channels"))


_SC = "lnsmith54/super-convergence architectures/"
_HP1 = "lnsmith54/hyperParam1 Cifar/architectures/"
_BVLC = "BVLC/caffe models/"

MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("lenet", LeNet, "BVLC/caffe examples/mnist/lenet_train_test.prototxt", 1, 28,
                  fixed_input_size=True),
        ModelInfo(
            "cifar3", Cifar3, _HP1 + "cifar3.prototxt (C10) = cifar100.prototxt (C100)", 3, 32,
            fixed_input_size=True,
        ),
        ModelInfo("resnet20", resnet20, _SC + "Resnet20Cifar.prototxt", 3, 32),
        ModelInfo("resnet56", resnet56, _SC + "Resnet56Cifar.prototxt", 3, 32),
        ModelInfo("resnet110", resnet110, _SC + "Resnet110Cifar.prototxt", 3, 32),
        ModelInfo(
            "resnet56_part1",
            resnet56_part1,
            _HP1 + "gResnet56.prototxt (C10) = c100Resnet56.prototxt (C100)",
            3,
            32,
        ),
        ModelInfo("wide32", wide32, _HP1 + "wide32cifar.prototxt", 3, 32),
        ModelInfo(
            "densenet40",
            DenseNet40,
            _HP1 + "genDensenet40.prototxt (from liuzhuang13/DenseNetCaffe)",
            3,
            32,
        ),
        ModelInfo(
            "resnet50",
            resnet50,
            "torchvision.models.resnet50(weights=None) (Smith's: hyperParam1 "
            "Imagenet/architectures/resnet50.prototxt, not ported)",
            3,
            224,
            caffe_port=False,
        ),
        ModelInfo("alexnet", AlexNet, _BVLC + "bvlc_alexnet/train_val.prototxt", 3, 227,
                  fixed_input_size=True),
        ModelInfo("googlenet", GoogLeNet, _BVLC + "bvlc_googlenet/train_val.prototxt", 3, 224,
                  fixed_input_size=True),
        ModelInfo(
            "inception_resnet_v2",
            InceptionResNetV2,
            "arXiv:1602.07261 as timm inception_resnet_v2 / TF-slim (Smith's: hyperParam1 "
            "Imagenet/architectures/inception-resnet-v2.prototxt, not available)",
            3,
            299,
            caffe_port=False,
        ),
    )
}


def _lookup(name: str) -> ModelInfo:
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(str(name), MODELS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; valid names: {', '.join(MODELS)}")


def build_model(
    name: str,
    num_classes: int,
    in_channels: int | None = None,
    init: str = "default",
    **kwargs: object,
) -> nn.Module:
    """Build a registered model.

    ``in_channels`` defaults to the model's ``input_channels``. ``init``: "default" keeps PyTorch's
    initialisation; "msra" / "xavier" apply that Caffe filler (exactly as filler.hpp) to every conv
    and linear weight, with zero biases; "prototxt" applies each layer's filler as its prototxt
    names it (Caffe ports only). ``kwargs`` are the model's options (``MODELS[name].options()``),
    e.g. ``moving_average_fraction`` for the batch-norm nets, ``batch_norm`` ("caffe" or "torch") for
    the SC ResNets or ``input_size`` for lenet/cifar3.
    """
    info = _lookup(name)
    require_positive_int("num_classes", num_classes)
    channels = info.input_channels if in_channels is None else in_channels
    require_positive_int("in_channels", channels)
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INIT_SCHEMES)}")
    unknown = sorted(set(kwargs) - set(info.options()))
    if unknown:
        accepted = ", ".join(info.options()) or "none"
        raise ValueError(f"unknown option {unknown[0]!r} for model {name!r}; accepted: {accepted}")
    model = info.build(num_classes, channels, **kwargs)
    if init == "prototxt":
        if not isinstance(model, CaffePort):
            raise ValueError(f"init='prototxt' needs a Caffe port; {name!r} is not one")
        model.apply_prototxt_fillers()
    elif init != "default":
        fill_all_layers(model, init)
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of learnable parameters (batch-norm running statistics are buffers, not counted)."""
    return sum(parameter.numel() for parameter in model.parameters())


def param_multipliers(model: nn.Module) -> dict[str, ParamMultipliers]:
    """Caffe (lr_mult, decay_mult) for every named parameter of ``model``.

    A Caffe port returns its prototxt's values; any other model has none, i.e. 1 and 1 everywhere
    (plain SGD: every parameter at the base learning rate and weight decay).
    """
    if isinstance(model, CaffePort):
        return model.param_multipliers()
    return {name: ParamMultipliers() for name, _ in model.named_parameters()}
