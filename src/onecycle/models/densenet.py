"""DenseNet-40 of Part 1 (lnsmith54/hyperParam1 Cifar/architectures/genDensenet40.prototxt).

The prototxt follows liuzhuang13/DenseNetCaffe (docs/paper_reference.md A2 remarks), read layer by layer:

- pre_conv 16@3x3 pad 1, no bias;
- three groups of 12 layers: BN -> Scale -> ReLU -> conv 12@3x3 pad 1 (no bias) -> Dropout 0.2,
  then ``Concat(new, previous)`` (the new 12 maps come *first*);
- after groups 0 and 1 a transition: BN -> Scale -> ReLU -> conv 1x1 keeping the width (160, 304;
  no bias) -> Dropout 0.2 -> AVE pool 2/2;
- after group 2: BN -> Scale -> ReLU -> global AVE pool -> FC (448 -> classes).

BatchNorm ``moving_average_fraction: 0.999``. Fillers: msra convs, xavier FC. Multipliers: the
convs carry none (1/1); FC ``param {lr_mult: 1} param {lr_mult: 2}`` (decay 1).
Dropout is Caffe's inverted dropout, the same as ``nn.Dropout``.
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

PRE_CONV_WIDTH = 16  # pre_conv num_output
GROWTH_RATE = 12  # groupG_bL_conv num_output
LAYERS_PER_GROUP = 12  # groupG_b0 .. groupG_b11; groupG_b12 is the transition
NUM_GROUPS = 3
DROPOUT = 0.2  # dropout_ratio of every Dropout layer
DENSENET_MOVING_AVERAGE_FRACTION = 0.999  # batch_norm_param of every BatchNorm
TRANSITION_POOL = 2  # groupG_b12_pool: AVE, kernel_size 2, stride 2


class DenseLayer(nn.Module):
    def __init__(self, in_width: int, maf: float, dropout: float) -> None:
        super().__init__()
        self.bn = CaffeBatchNorm2d(in_width, maf)
        self.conv = nn.Conv2d(in_width, GROWTH_RATE, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.dropout(self.conv(torch.relu(self.bn(x))))
        return torch.cat([new, x], dim=1)


class Transition(nn.Module):
    def __init__(self, width: int, maf: float, dropout: float) -> None:
        super().__init__()
        self.bn = CaffeBatchNorm2d(width, maf)
        self.conv = nn.Conv2d(width, width, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.AvgPool2d(TRANSITION_POOL, TRANSITION_POOL, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.dropout(self.conv(torch.relu(self.bn(x)))))


class DenseNet40(CaffePort):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        moving_average_fraction: float = DENSENET_MOVING_AVERAGE_FRACTION,
        dropout: float = DROPOUT,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        maf = moving_average_fraction
        self.in_channels = in_channels
        self.pre_conv = nn.Conv2d(in_channels, PRE_CONV_WIDTH, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        width = PRE_CONV_WIDTH
        for group in range(NUM_GROUPS):
            for _ in range(LAYERS_PER_GROUP):
                layers.append(DenseLayer(width, maf, dropout))
                width += GROWTH_RATE
            if group < NUM_GROUPS - 1:
                layers.append(Transition(width, maf, dropout))
        self.features = nn.Sequential(*layers)
        self.final_bn = CaffeBatchNorm2d(width, maf)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, "densenet40", self.in_channels)
        x = self.features(self.pre_conv(x))
        x = torch.relu(self.final_bn(x))
        return self.fc(torch.flatten(global_average_pool(x), 1))

    def apply_prototxt_fillers(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fill_layer(module, "msra")
        fill_layer(self.fc, "xavier")

    def param_multipliers(self) -> dict[str, ParamMultipliers]:
        return multipliers_by_layer_kind(
            self, conv_bias=ParamMultipliers(), linear_bias=ParamMultipliers(lr_mult=2.0)
        )
