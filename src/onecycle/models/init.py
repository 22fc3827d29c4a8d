"""Caffe's weight fillers, exactly as include/caffe/filler.hpp (BVLC/caffe) defines them.

Both fillers use n = fan_in = blob.count() / blob.num(), i.e. ``weight[0].numel()`` for a conv
(C_in * kh * kw) or an inner-product layer (in_features); that is the default
``variance_norm: FAN_IN`` and the only setting Smith's prototxts use.

- ``XavierFiller``: uniform(-sqrt(3 / n), +sqrt(3 / n)). Not ``torch.nn.init.xavier_uniform_``,
  which uses sqrt(6 / (fan_in + fan_out)).
- ``MSRAFiller``: gaussian(0, std = sqrt(2 / n)).
- ``GaussianFiller``: gaussian(0, std) with the prototxt's std.

Biases get Caffe's default ``bias_filler`` (constant 0); batch-norm Scale layers keep 1 and 0.
Part 1 alternates xavier and msra across its four runs per setting (docs/paper_reference.md C2, D6), so
``build_model(init=...)`` offers both, plus each prototxt's own fillers.

Every filler draws from torch's global generator, so ``torch.manual_seed`` makes them repeatable.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LearnableLayer = nn.Conv2d | nn.Linear


def fan_in(weight: torch.Tensor) -> int:
    """Caffe's fan_in: blob.count() / blob.num()."""
    return weight[0].numel()


@torch.no_grad()
def caffe_xavier_(weight: torch.Tensor) -> torch.Tensor:
    bound = math.sqrt(3.0 / fan_in(weight))
    return weight.uniform_(-bound, bound)


@torch.no_grad()
def caffe_msra_(weight: torch.Tensor) -> torch.Tensor:
    return weight.normal_(0.0, math.sqrt(2.0 / fan_in(weight)))


@torch.no_grad()
def caffe_gaussian_(weight: torch.Tensor, std: float) -> torch.Tensor:
    return weight.normal_(0.0, std)


def fill_layer(layer: LearnableLayer, filler: str, std: float | None = None) -> None:
    """Fill ``layer.weight`` with a Caffe filler ("xavier", "msra", "gaussian"); zero its bias."""
    if filler == "xavier":
        caffe_xavier_(layer.weight)
    elif filler == "msra":
        caffe_msra_(layer.weight)
    elif filler == "gaussian":
        if std is None:
            raise ValueError("the gaussian filler needs a std")
        caffe_gaussian_(layer.weight, std)
    else:
        raise ValueError(
            f"unknown Caffe filler {filler!r}; expected 'xavier', 'msra' or 'gaussian'"
        )
    if layer.bias is not None:
        with torch.no_grad():
            layer.bias.zero_()


def fill_all_layers(model: nn.Module, filler: str) -> None:
    """Apply one Caffe filler to every conv and linear layer of ``model``, in module order."""
    for module in model.modules():
        if isinstance(module, LearnableLayer):
            fill_layer(module, filler)
