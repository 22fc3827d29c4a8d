"""Caffe's AlexNet (BVLC/caffe models/bvlc_alexnet/train_val.prototxt).

The CLR paper (arXiv:1506.01186, Table 1 ImageNet rows) trains "the Caffe AlexNet"; this is that
prototxt, read layer by layer:

  conv1 96@11x11/4 -> relu1 -> norm1 LRN -> pool1 MAX 3/2
  conv2 256@5x5 pad 2 group 2 -> relu2 -> norm2 LRN -> pool2 MAX 3/2
  conv3 384@3x3 pad 1 -> relu3
  conv4 384@3x3 pad 1 group 2 -> relu4
  conv5 256@3x3 pad 1 group 2 -> relu5 -> pool5 MAX 3/2
  fc6 4096 -> relu6 -> drop6 0.5 -> fc7 4096 -> relu7 -> drop7 0.5 -> fc8 num_classes

LRN: ``local_size 5, alpha 1e-4, beta 0.75`` with the default ``norm_region: ACROSS_CHANNELS``
and k = 1: y = x / (1 + alpha/5 * sum_{5 channels} x^2)^beta, which is exactly
``nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)`` (torch also divides alpha by the window size and
zero-pads the channel window). These are Caffe's constants, not the paper's (Krizhevsky et al.
2012: k = 2, alpha not divided by n). bvlc_alexnet normalises *before* pooling, as the paper
does; ``bvlc_reference_caffenet`` (a different net) swaps the two.

``group: 2`` (the two-GPU split of the original net) makes conv2/conv4/conv5 block-diagonal:
each half of the output sees only one half of the input, so their weights are
(out, in / 2, k, k); ``nn.Conv2d(groups=2)`` is the same operation.

Input: 227x227 crops (``crop_size: 227``): 227 -> 55 -> 27 -> 27 -> 13 -> 13 -> 6, so fc6 sees
256 * 6 * 6 = 9216 features. Caffe rounds pooling outputs up (``ceil_mode=True``); at 227 no
window is partial, so the sizes equal floor rounding's. The data layer's mean subtraction and
mirroring belong to data loading.

Fillers: gaussian std 0.01 (fc6, fc7: 0.005); bias constant 0.1 on conv2, conv4, conv5, fc6 and
fc7, 0 on conv1, conv3 and fc8. Multipliers: every layer ``param {lr_mult: 1 decay_mult: 1}
param {lr_mult: 2 decay_mult: 0}``.
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
    multipliers_by_layer_kind,
)

INPUT_SIZE = 227  # transform_param crop_size
CONV1_OUTPUTS, CONV1_KERNEL, CONV1_STRIDE = 96, 11, 4
CONV2_OUTPUTS, CONV2_KERNEL, CONV2_PAD = 256, 5, 2
CONV3_OUTPUTS = 384
CONV4_OUTPUTS = 384
CONV5_OUTPUTS = 256
SMALL_KERNEL, SMALL_PAD = 3, 1  # conv3, conv4, conv5
GROUPS = 2  # conv2, conv4, conv5: group 2
POOL_KERNEL, POOL_STRIDE = 3, 2  # pool1, pool2, pool5: MAX 3/2
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 1.0  # norm1, norm2 (k: Caffe's default)
FC_OUTPUTS = 4096  # fc6, fc7
DROPOUT = 0.5  # drop6, drop7 dropout_ratio
CONV_STD, FC67_STD = 0.01, 0.005  # gaussian weight_filler std: conv1-5 and fc8; fc6 and fc7
POSITIVE_BIAS = 0.1  # bias_filler constant of conv2, conv4, conv5, fc6, fc7 (others: 0)
BIAS_MULTIPLIERS = ParamMultipliers(lr_mult=2.0, decay_mult=0.0)


def alexnet_feature_side(input_size: int = INPUT_SIZE) -> int:
    """Side of pool5's output (6 at 227x227)."""
    side = conv_output_size(input_size, CONV1_KERNEL, CONV1_STRIDE)
    side = caffe_pool_output_size(side, POOL_KERNEL, POOL_STRIDE)
    side = conv_output_size(side, CONV2_KERNEL, pad=CONV2_PAD)
    side = caffe_pool_output_size(side, POOL_KERNEL, POOL_STRIDE)
    side = conv_output_size(side, SMALL_KERNEL, pad=SMALL_PAD)  # conv3..conv5 keep the side
    return caffe_pool_output_size(side, POOL_KERNEL, POOL_STRIDE)


def caffe_lrn() -> nn.LocalResponseNorm:
    """Caffe LRN across channels (local_size 5, alpha 1e-4, beta 0.75, k 1)."""
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


class AlexNet(CaffePort):
    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        side = alexnet_feature_side(INPUT_SIZE)
        self.conv1 = nn.Conv2d(in_channels, CONV1_OUTPUTS, CONV1_KERNEL, stride=CONV1_STRIDE)
        self.norm1 = caffe_lrn()
        self.pool1 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.conv2 = nn.Conv2d(
            CONV1_OUTPUTS, CONV2_OUTPUTS, CONV2_KERNEL, padding=CONV2_PAD, groups=GROUPS
        )
        self.norm2 = caffe_lrn()
        self.pool2 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.conv3 = nn.Conv2d(CONV2_OUTPUTS, CONV3_OUTPUTS, SMALL_KERNEL, padding=SMALL_PAD)
        self.conv4 = nn.Conv2d(
            CONV3_OUTPUTS, CONV4_OUTPUTS, SMALL_KERNEL, padding=SMALL_PAD, groups=GROUPS
        )
        self.conv5 = nn.Conv2d(
            CONV4_OUTPUTS, CONV5_OUTPUTS, SMALL_KERNEL, padding=SMALL_PAD, groups=GROUPS
        )
        self.pool5 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.fc6 = nn.Linear(CONV5_OUTPUTS * side * side, FC_OUTPUTS)
        self.drop6 = nn.Dropout(DROPOUT)
        self.fc7 = nn.Linear(FC_OUTPUTS, FC_OUTPUTS)
        self.drop7 = nn.Dropout(DROPOUT)
        self.fc8 = nn.Linear(FC_OUTPUTS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fc6's input width fixes the spatial size: Caffe's net only takes its 227x227 crops.
        check_image_batch(x, "alexnet", self.in_channels, size=INPUT_SIZE)
        x = self.pool1(self.norm1(torch.relu(self.conv1(x))))
        x = self.pool2(self.norm2(torch.relu(self.conv2(x))))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        x = self.pool5(torch.relu(self.conv5(x)))
        x = self.drop6(torch.relu(self.fc6(torch.flatten(x, 1))))
        x = self.drop7(torch.relu(self.fc7(x)))
        return self.fc8(x)

    def apply_prototxt_fillers(self) -> None:
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5, self.fc8):
            fill_layer(layer, "gaussian", std=CONV_STD)
        for layer in (self.fc6, self.fc7):
            fill_layer(layer, "gaussian", std=FC67_STD)
        # fill_layer zeroes every bias; then the prototxt's constant 0.1 where it names one.
        with torch.no_grad():
            for layer in (self.conv2, self.conv4, self.conv5, self.fc6, self.fc7):
                layer.bias.fill_(POSITIVE_BIAS)

    def param_multipliers(self) -> dict[str, ParamMultipliers]:
        return multipliers_by_layer_kind(self, BIAS_MULTIPLIERS, BIAS_MULTIPLIERS)
