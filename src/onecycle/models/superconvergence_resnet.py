"""CIFAR ResNets of the Super-Convergence paper (lnsmith54/super-convergence architectures/).

Resnet20Cifar, Resnet56Cifar and Resnet110Cifar.prototxt come from one generator, read layer by
layer for this port (docs/paper_reference.md C1):

- pre: conv 16@3x3 -> BN -> ReLU.
- three stages of n = (depth - 2) / 6 basic blocks (conv3x3-BN-ReLU-conv3x3-BN, add, ReLU).
- The first block of stages 2 and 3 keeps the *input* width (16, then 32), strides its first
  conv by 2, and adds an AVE pool (kernel 3, stride 2, Caffe ceil rounding) of its input as the
  shortcut; after its ReLU, zeros are concatenated on the channel axis (``DummyData`` +
  ``Concat``) to double the width for the next block. No projection conv anywhere.
- post: AVE pool kernel 8 stride 1 (global on the 8x8 map of a 32x32 input) -> FC.
- Every conv has a bias; BN is Caffe BatchNorm (moving_average_fraction 0.999; SC's x.sh rewrites
  it to 0.95 for all CLR runs, SC Table 1 sweeps it) followed by Scale.
- Fillers: msra for convs, xavier for the FC. Multipliers: conv weights 1/1, conv biases
  ``lr_mult 2`` with ``decay_mult`` 0 in Resnet56Cifar and 1 in the stored Resnet20/110 files,
  FC ``lr_mult 1`` / ``2`` (decay 1).
- Option ``batch_norm``: "caffe" (the prototxts') or "torch" (nn.BatchNorm2d, layers.batch_norm_2d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import fill_layer
from .layers import (
    CaffePort,
    ParamMultipliers,
    batch_norm_2d,
    check_image_batch,
    global_average_pool,
    multipliers_by_layer_kind,
)

STAGE_WIDTHS = (16, 32, 64)  # num_output of L1, L2, L3 convs (pre_conv: 16)
SHORTCUT_POOL_KERNEL, SHORTCUT_POOL_STRIDE = 3, 2  # L2_b1_pool / L3_b1_pool: AVE 3, stride 2
SC_MOVING_AVERAGE_FRACTION = 0.999  # batch_norm_param in all three prototxts
INPUT_MULTIPLE = 4  # two stride-2 stages: pool and strided conv only agree on even sides


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=True)


class BasicBlock(nn.Module):
    """cbr1 -> cbr2 (no ReLU) -> add shortcut -> ReLU; optionally concat zeros to widen."""

    def __init__(self, width: int, stride: int, widen_to: int, maf: float, batch_norm: str = "caffe") -> None:
        super().__init__()
        self.conv1 = conv3x3(width, width, stride)
        self.bn1 = batch_norm_2d(width, maf, batch_norm)
        self.conv2 = conv3x3(width, width)
        self.bn2 = batch_norm_2d(width, maf, batch_norm)
        self.stride = stride
        self.extra_channels = widen_to - width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.stride == 1:
            shortcut = x
        else:
            shortcut = F.avg_pool2d(
                x, SHORTCUT_POOL_KERNEL, SHORTCUT_POOL_STRIDE, ceil_mode=True
            )
        out = torch.relu(out + shortcut)
        if self.extra_channels:
            zeros = out.new_zeros(out.shape[0], self.extra_channels, *out.shape[2:])
            out = torch.cat([out, zeros], dim=1)
        return out


class SuperConvergenceResNet(CaffePort):
    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int = 3,
        moving_average_fraction: float = SC_MOVING_AVERAGE_FRACTION,
        conv_bias_decay_mult: float = 0.0,
        batch_norm: str = "caffe",
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth!r}")
        blocks_per_stage = (depth - 2) // 6
        maf = moving_average_fraction
        self.model_name = f"resnet{depth}"
        self.in_channels = in_channels
        self.conv_bias_decay_mult = conv_bias_decay_mult
        self.pre_conv = conv3x3(in_channels, STAGE_WIDTHS[0])
        self.pre_bn = batch_norm_2d(STAGE_WIDTHS[0], maf, batch_norm)
        blocks = []
        previous_width = STAGE_WIDTHS[0]
        for stage, width in enumerate(STAGE_WIDTHS):
            for index in range(blocks_per_stage):
                downsamples = stage > 0 and index == 0
                blocks.append(
                    BasicBlock(
                        previous_width if downsamples else width,
                        stride=2 if downsamples else 1,
                        widen_to=width,
                        maf=maf,
                        batch_norm=batch_norm,
                    )
                )
                previous_width = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(STAGE_WIDTHS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.model_name, self.in_channels, multiple_of=INPUT_MULTIPLE)
        x = torch.relu(self.pre_bn(self.pre_conv(x)))
        x = self.blocks(x)
        # post_pool: AVE kernel 8 stride 1 over the 8x8 map of a 32x32 input, i.e. a global mean.
        return self.fc(torch.flatten(global_average_pool(x), 1))

    def apply_prototxt_fillers(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fill_layer(module, "msra")
        fill_layer(self.fc, "xavier")

    def param_multipliers(self) -> dict[str, ParamMultipliers]:
        return multipliers_by_layer_kind(
            self,
            conv_bias=ParamMultipliers(lr_mult=2.0, decay_mult=self.conv_bias_decay_mult),
            linear_bias=ParamMultipliers(lr_mult=2.0),
        )


def resnet20(
    num_classes: int,
    in_channels: int = 3,
    moving_average_fraction: float = SC_MOVING_AVERAGE_FRACTION,
    batch_norm: str = "caffe",
) -> SuperConvergenceResNet:
    """Resnet20Cifar.prototxt (SC Fig 6b): 3 blocks per stage; conv bias decay_mult 1."""
    return SuperConvergenceResNet(20, num_classes, in_channels, moving_average_fraction, 1.0, batch_norm)


def resnet56(
    num_classes: int,
    in_channels: int = 3,
    moving_average_fraction: float = SC_MOVING_AVERAGE_FRACTION,
    batch_norm: str = "caffe",
) -> SuperConvergenceResNet:
    """Resnet56Cifar.prototxt (SC Fig 1a, Table 1): 9 blocks per stage; conv bias decay_mult 0."""
    return SuperConvergenceResNet(56, num_classes, in_channels, moving_average_fraction, 0.0, batch_norm)


def resnet110(
    num_classes: int,
    in_channels: int = 3,
    moving_average_fraction: float = SC_MOVING_AVERAGE_FRACTION,
    batch_norm: str = "caffe",
) -> SuperConvergenceResNet:
    """Resnet110Cifar.prototxt (SC Fig 6b): 18 blocks per stage; conv bias decay_mult 1."""
    return SuperConvergenceResNet(110, num_classes, in_channels, moving_average_fraction, 1.0, batch_norm)
