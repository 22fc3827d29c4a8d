"""The model catalog: every registered network's name, source, input shape and options, torch-free.

Config checks (arch, options, crop sizes) and the Snakefile read only this; the network itself is
imported, with torch, when `ModelInfo.build` first runs (onecycle.models.factory.build_model).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import import_module
from typing import Any

# "default": PyTorch's own init; "msra"/"xavier": that Caffe filler on every conv and linear
# weight; "prototxt": the filler each layer's prototxt names (Caffe ports only; onecycle.models.init).
INIT_SCHEMES = ("default", "msra", "xavier", "prototxt")


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its builder and its source."""

    name: str
    # "module:callable" under onecycle.models; called as callable(num_classes, in_channels, **options).
    builder: str
    source: str  # one line: the prototxt (repository and path) or paper it follows
    input_channels: int  # channels of the data it was designed for
    input_size: int  # side of the square inputs it was designed for
    # Keyword options the builder accepts beyond num_classes and in_channels (pinned against its
    # signature in tests/test_models.py).
    options: tuple[str, ...] = ()
    # A port of a Caffe prototxt (a CaffePort): it has prototxt fillers and multipliers, and
    # Caffe's batch norm, so init "prototxt", optim.multipliers "prototxt" and batch-norm
    # shards apply (the shards not where its option batch_norm is "torch"). Checked against the
    # built model in tests/test_models.py.
    caffe_port: bool = True
    # Its forward refuses inputs of any other side (fully connected layers sized for them), so a
    # configured crop_size must equal input_size. Checked in tests/test_models.py.
    fixed_input_size: bool = False

    def build(self, num_classes: int, in_channels: int, **options: Any) -> Any:
        """The network (an nn.Module), its module imported on first use."""
        module, name = self.builder.split(":")
        return getattr(import_module(f"onecycle.models.{module}"), name)(num_classes, in_channels, **options)


_SC = "lnsmith54/super-convergence architectures/"
_HP1 = "lnsmith54/hyperParam1 Cifar/architectures/"
_BVLC = "BVLC/caffe models/"
_SC_RESNET_OPTIONS = ("moving_average_fraction", "batch_norm")

MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("lenet", "lenet:LeNet", "BVLC/caffe examples/mnist/lenet_train_test.prototxt", 1, 28,
                  options=("input_size",), fixed_input_size=True),
        ModelInfo("cifar3", "caffe_cifar:Cifar3", _HP1 + "cifar3.prototxt (C10) = cifar100.prototxt (C100)", 3, 32,
                  options=("input_size",), fixed_input_size=True),
        ModelInfo("resnet20", "superconvergence_resnet:resnet20", _SC + "Resnet20Cifar.prototxt", 3, 32,
                  options=_SC_RESNET_OPTIONS),
        ModelInfo("resnet56", "superconvergence_resnet:resnet56", _SC + "Resnet56Cifar.prototxt", 3, 32,
                  options=_SC_RESNET_OPTIONS),
        ModelInfo("resnet110", "superconvergence_resnet:resnet110", _SC + "Resnet110Cifar.prototxt", 3, 32,
                  options=_SC_RESNET_OPTIONS),
        ModelInfo("resnet56_part1", "hyperparam1_resnet:resnet56_part1",
                  _HP1 + "gResnet56.prototxt (C10) = c100Resnet56.prototxt (C100)", 3, 32,
                  options=("moving_average_fraction",)),
        ModelInfo("wide32", "hyperparam1_resnet:wide32", _HP1 + "wide32cifar.prototxt", 3, 32,
                  options=("moving_average_fraction",)),
        ModelInfo("densenet40", "densenet:DenseNet40",
                  _HP1 + "genDensenet40.prototxt (from liuzhuang13/DenseNetCaffe)", 3, 32,
                  options=("moving_average_fraction", "dropout")),
        ModelInfo("resnet50", "imagenet:resnet50",
                  "torchvision.models.resnet50(weights=None) (Smith's: hyperParam1 "
                  "Imagenet/architectures/resnet50.prototxt, not ported)", 3, 224, caffe_port=False),
        ModelInfo("alexnet", "alexnet:AlexNet", _BVLC + "bvlc_alexnet/train_val.prototxt", 3, 227,
                  fixed_input_size=True),
        ModelInfo("googlenet", "googlenet:GoogLeNet", _BVLC + "bvlc_googlenet/train_val.prototxt", 3, 224,
                  options=("aux_classifiers",), fixed_input_size=True),
        ModelInfo("inception_resnet_v2", "inception_resnet_v2:InceptionResNetV2",
                  "arXiv:1602.07261 as timm inception_resnet_v2 / TF-slim (Smith's: hyperParam1 "
                  "Imagenet/architectures/inception-resnet-v2.prototxt, not available)", 3, 299,
                  options=("dropout",), caffe_port=False),
    )
}


def lookup(name: str) -> ModelInfo:
    """The registered model `name`; a ValueError naming the closest name otherwise."""
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(str(name), MODELS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; valid names: {', '.join(MODELS)}")
