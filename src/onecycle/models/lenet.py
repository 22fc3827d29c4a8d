"""Caffe's MNIST LeNet (BVLC/caffe examples/mnist/lenet_train_test.prototxt).

Part 1 trains it on MNIST with the Caffe example's solver (docs/paper_reference.md A2 remarks):
conv1 20@5x5 -> max pool 2/2 -> conv2 50@5x5 -> max pool 2/2 -> ip1 500 -> ReLU -> ip2.
There is no nonlinearity after the convolutions in the prototxt, and none is added here.
Every weight filler is xavier; every layer has ``param {lr_mult: 1} param {lr_mult: 2}``.
The data layer's ``scale: 0.00390625`` (1/256) is data preprocessing, not part of the model.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import fill_layer
from .layers import (
    CaffePort,
    ParamMultipliers,
    caffe_pool_output_size,
    check_image_batch,
    conv_output_size,
    require_positive_int,
)

CONV1_OUTPUTS = 20  # conv1 num_output
CONV2_OUTPUTS = 50  # conv2 num_output
KERNEL = 5  # conv1/conv2 kernel_size, stride 1, no pad
POOL = 2  # pool1/pool2: MAX, kernel_size 2, stride 2
IP1_OUTPUTS = 500  # ip1 num_output


def lenet_feature_side(input_size: int) -> int:
    """Side of pool2's output for a square input; ValueError if the input is too small."""
    side = conv_output_size(input_size, KERNEL)
    side = caffe_pool_output_size(side, POOL, POOL)
    side = conv_output_size(side, KERNEL)
    return caffe_pool_output_size(side, POOL, POOL)


def smallest_lenet_input() -> int:
    size = 1
    while True:
        try:
            lenet_feature_side(size)
            return size
        except ValueError:
            size += 1


class LeNet(CaffePort):
    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        require_positive_int("input_size", input_size)
        try:
            side = lenet_feature_side(input_size)
        except ValueError:
            raise ValueError(
                f"input_size={input_size} is too small for lenet "
                "(two 5x5 convolutions and two 2x2 poolings need at least "
                f"{smallest_lenet_input()})"
            ) from None
        self.in_channels = in_channels
        self.input_size = input_size
        self.conv1 = nn.Conv2d(in_channels, CONV1_OUTPUTS, KERNEL)
        self.pool1 = nn.MaxPool2d(POOL, POOL, ceil_mode=True)
        self.conv2 = nn.Conv2d(CONV1_OUTPUTS, CONV2_OUTPUTS, KERNEL)
        self.pool2 = nn.MaxPool2d(POOL, POOL, ceil_mode=True)
        self.ip1 = nn.Linear(CONV2_OUTPUTS * side * side, IP1_OUTPUTS)
        self.relu1 = nn.ReLU()
        self.ip2 = nn.Linear(IP1_OUTPUTS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, "lenet", self.in_channels, size=self.input_size)
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.relu1(self.ip1(torch.flatten(x, 1)))
        return self.ip2(x)

    def apply_prototxt_fillers(self) -> None:
        for layer in (self.conv1, self.conv2, self.ip1, self.ip2):
            fill_layer(layer, "xavier")

    def param_multipliers(self) -> dict[str, ParamMultipliers]:
        # Weights: lr_mult 1; biases: lr_mult 2; decay_mult left at Caffe's default 1.
        return {
            name: ParamMultipliers(lr_mult=2.0 if name.endswith("bias") else 1.0)
            for name, _ in self.named_parameters()
        }
