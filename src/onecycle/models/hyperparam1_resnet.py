"""Part 1's CIFAR ResNets (lnsmith54/hyperParam1 Cifar/architectures/), read layer by layer.

gResnet56.prototxt (CIFAR-10; c100Resnet56.prototxt is identical but for ``num_output: 100``) and
wide32cifar.prototxt come from one generator (``groupG_blockB`` layer names), which differs from
the Super-Convergence ResNets in three ways:

- downsampling blocks use a *projection* shortcut: conv 2x2, stride 2, pad 0, then BN + Scale;
  their first 3x3 conv has stride 2 and already outputs the new width;
- there is **no ReLU after the residual addition** (the sum feeds the next block directly);
- BatchNorm ``moving_average_fraction: 0.9``.

Both have a 16-channel first conv -> BN -> ReLU, global AVE pooling and an msra-filled FC with
``param {lr_mult 1 decay_mult 1} param {lr_mult 2 decay_mult 0}``. Every conv has a bias (Caffe's
default ``bias_term: true``; the convs carry no ``param`` entries that change it: 1/1), every
weight filler is msra.

- gResnet56: groups of 9, 9 and 8 blocks at widths 16, 32, 64, where block 8 of groups 0 and 1
  is the downsampling one. Counted as stages that start with their downsampling block, that is
  8 blocks at 16, then 9 at 32, then 9 at 64: 1 + 52 + 2 projections = 55 convs + FC.
- wide32 ("resnet with 32 layers, channels widened x4"): 5 blocks per group at widths 16, 64,
  256 (the first group is *not* widened in the prototxt), block 0 of groups 1 and 2
  downsampling: 1 + 30 + 2 = 33 convs + FC.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import fill_layer
from .layers import (
    CaffeBatchNorm2d,
    CaffePort,
    ParamMultipliers,
    check_image_batch,
    global_average_pool,
    multipliers_by_layer_kind,
)

FIRST_CONV_WIDTH = 16  # first / first_conv num_output in both prototxts
PROJECTION_KERNEL = 2  # groupG_blockB_proj: kernel_size 2, stride 2, pad 0
HP1_MOVING_AVERAGE_FRACTION = 0.9  # batch_norm_param in gResnet56 and wide32cifar
INPUT_MULTIPLE = 4  # two stride-2 stages: 2x2 projection and 3x3/2 conv agree on even sides only

# (width, blocks) per stage, each stage after the first starting with its downsampling block.
RESNET56_STAGES = ((16, 8), (32, 9), (64, 9))
WIDE32_STAGES = ((16, 5), (64, 5), (256, 5))


class ProjectionBlock(nn.Module):
    """conv0-BN-ReLU-conv1-BN + shortcut (identity, or 2x2/2 projection + BN); no final ReLU."""

    def __init__(self, in_width: int, width: int, stride: int, maf: float) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_width, width, 3, stride=stride, padding=1)
        self.bn0 = CaffeBatchNorm2d(width, maf)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1 = CaffeBatchNorm2d(width, maf)
        self.projection = None
        if stride != 1 or in_width != width:
            self.projection = nn.Sequential(
                nn.Conv2d(in_width, width, PROJECTION_KERNEL, stride=stride),
                CaffeBatchNorm2d(width, maf),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn0(self.conv0(x)))
        out = self.bn1(self.conv1(out))
        shortcut = x if self.projection is None else self.projection(x)
        return out + shortcut


class HyperParam1ResNet(CaffePort):
    def __init__(
        self,
        model_name: str,
        stages: tuple[tuple[int, int], ...],
        num_classes: int,
        in_channels: int = 3,
        moving_average_fraction: float = HP1_MOVING_AVERAGE_FRACTION,
    ) -> None:
        super().__init__()
        maf = moving_average_fraction
        self.model_name = model_name
        self.in_channels = in_channels
        self.first_conv = nn.Conv2d(in_channels, FIRST_CONV_WIDTH, 3, padding=1)
        self.first_bn = CaffeBatchNorm2d(FIRST_CONV_WIDTH, maf)
        blocks = []
        previous_width = FIRST_CONV_WIDTH
        for stage, (width, num_blocks) in enumerate(stages):
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(ProjectionBlock(previous_width, width, stride, maf))
                previous_width = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(previous_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.model_name, self.in_channels, multiple_of=INPUT_MULTIPLE)
        x = torch.relu(self.first_bn(self.first_conv(x)))
        x = self.blocks(x)
        return self.fc(torch.flatten(global_average_pool(x), 1))

    def apply_prototxt_fillers(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                fill_layer(module, "msra")

    def param_multipliers(self) -> dict[str, ParamMultipliers]:
        return multipliers_by_layer_kind(
            self,
            conv_bias=ParamMultipliers(),
            linear_bias=ParamMultipliers(lr_mult=2.0, decay_mult=0.0),
        )


def resnet56_part1(
    num_classes: int,
    in_channels: int = 3,
    moving_average_fraction: float = HP1_MOVING_AVERAGE_FRACTION,
) -> HyperParam1ResNet:
    """gResnet56.prototxt (C10) / c100Resnet56.prototxt (C100): Part 1's ResNet-56 runs."""
    return HyperParam1ResNet(
        "resnet56_part1", RESNET56_STAGES, num_classes, in_channels, moving_average_fraction
    )


def wide32(
    num_classes: int,
    in_channels: int = 3,
    moving_average_fraction: float = HP1_MOVING_AVERAGE_FRACTION,
) -> HyperParam1ResNet:
    """wide32cifar.prototxt: Part 1's wide ResNet-32 runs."""
    return HyperParam1ResNet(
        "wide32", WIDE32_STAGES, num_classes, in_channels, moving_average_fraction
    )
