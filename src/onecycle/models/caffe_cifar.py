"""Part 1's 3-layer CIFAR net (lnsmith54/hyperParam1 Cifar/architectures/cifar3.prototxt).

It is Caffe's ``cifar10_full`` network. cifar100.prototxt (the CIFAR-100 runs) is the same network
with ``num_output: 100`` in ip1 (its other differences are data paths and commented-out lines), so
one class serves both. Layer order, as in the prototxt:

  conv1 32@5x5 pad 2 -> pool1 MAX 3/2 -> relu1 -> norm1 LRN
  conv2 32@5x5 pad 2 -> relu2 -> pool2 AVE 3/2 -> norm2 LRN
  conv3 64@5x5 pad 2 -> relu3 -> pool3 AVE 3/2 -> ip1 num_classes

LRN: local_size 3, alpha 5e-05, beta 0.75, norm_region WITHIN_CHANNEL. Caffe rounds pooling
outputs up, so 32x32 inputs give 16 -> 8 -> 4 and ip1 sees 64*4*4 = 1024 features (PyTorch's
default floor rounding would give 3x3). Fillers: gaussian std 1e-4 (conv1) and 1e-2 (conv2,
conv3, ip1); Part 1's x4.sh only rewrites "msra" to "xavier", so these gaussians were used in all
four runs. Multipliers: conv1/conv2 ``lr_mult 1/2``; conv3 none (1/1); ip1 weight
``decay_mult: 250``, ip1 bias ``lr_mult 2, decay_mult 0``.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import fill_layer
from .layers import (
    CaffePort,
    ParamMultipliers,
    WithinChannelLRN,
    caffe_pool_output_size,
    check_image_batch,
    conv_output_size,
    require_positive_int,
)

CONV_KERNEL, CONV_PAD = 5, 2  # every conv: kernel_size 5, pad 2, stride 1
CONV_OUTPUTS = (32, 32, 64)  # conv1, conv2, conv3 num_output
POOL_KERNEL, POOL_STRIDE = 3, 2  # pool1 (MAX), pool2 and pool3 (AVE): kernel_size 3, stride 2
LRN_LOCAL_SIZE, LRN_ALPHA, LRN_BETA = 3, 5e-05, 0.75  # norm1, norm2
CONV1_STD, OTHER_STD = 1e-4, 1e-2  # weight_filler gaussian std: conv1, then conv2/conv3/ip1
IP1_DECAY_MULT = 250.0  # ip1 weight param { decay_mult: 250 }


def cifar3_feature_side(input_size: int) -> int:
    side = input_size
    for _ in CONV_OUTPUTS:
        side = conv_output_size(side, CONV_KERNEL, pad=CONV_PAD)
        side = caffe_pool_output_size(side, POOL_KERNEL, POOL_STRIDE)
    return side


def _fits(input_size: int) -> bool:
    try:
        cifar3_feature_side(input_size)
    except ValueError:
        return False
    return True


class Cifar3(CaffePort):
    def __init__(self, num_classes: int, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        require_positive_int("input_size", input_size)
        try:
            side = cifar3_feature_side(input_size)
        except ValueError:
            smallest = next(n for n in range(1, 64) if _fits(n))
            raise ValueError(
                f"input_size={input_size} is too small for cifar3 (three 3x3/2 poolings need "
                f">= {smallest})"
            ) from None
        self.in_channels = in_channels
        self.input_size = input_size
        c1, c2, c3 = CONV_OUTPUTS
        self.conv1 = nn.Conv2d(in_channels, c1, CONV_KERNEL, padding=CONV_PAD)
        self.pool1 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.norm1 = WithinChannelLRN(LRN_LOCAL_SIZE, LRN_ALPHA, LRN_BETA)
        self.conv2 = nn.Conv2d(c1, c2, CONV_KERNEL, padding=CONV_PAD)
        self.pool2 = nn.AvgPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.norm2 = WithinChannelLRN(LRN_LOCAL_SIZE, LRN_ALPHA, LRN_BETA)
        self.conv3 = nn.Conv2d(c2, c3, CONV_KERNEL, padding=CONV_PAD)
        self.pool3 = nn.AvgPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.ip1 = nn.Linear(c3 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, "cifar3", self.in_channels, size=self.input_size)
        x = self.norm1(torch.relu(self.pool1(self.conv1(x))))
        x = self.norm2(self.pool2(torch.relu(self.conv2(x))))
        x = self.pool3(torch.relu(self.conv3(x)))
        return self.ip1(torch.flatten(x, 1))

    def apply_prototxt_fillers(self) -> None:
        fill_layer(self.conv1, "gaussian", std=CONV1_STD)
        for layer in (self.conv2, self.conv3, self.ip1):
            fill_layer(layer, "gaussian", std=OTHER_STD)

    def param_multipliers(self) -> dict[str, ParamMultipliers]:
        specified = {
            "conv1.bias": ParamMultipliers(lr_mult=2.0),
            "conv2.bias": ParamMultipliers(lr_mult=2.0),
            "ip1.weight": ParamMultipliers(decay_mult=IP1_DECAY_MULT),
            "ip1.bias": ParamMultipliers(lr_mult=2.0, decay_mult=0.0),
        }
        return {
            name: specified.get(name, ParamMultipliers())
            for name, _ in self.named_parameters()
        }
