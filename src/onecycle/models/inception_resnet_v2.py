"""Inception-ResNet-v2 (Szegedy et al. 2016, arXiv:1602.07261), 299x299 inputs.

Part 1 (arXiv:1803.09820 §5.5, Fig 16b) trains it on ImageNet from lnsmith54/hyperParam1
``Imagenet/architectures/inception-resnet-v2.prototxt``. That prototxt could not be read for this
port, so this is **not** a Caffe port: it follows the layout every released implementation
shares, TF-slim's ``inception_resnet_v2`` (the authors' published model), Keras Applications'
``InceptionResNetV2`` and timm's ``inception_resnet_v2`` (module names here are timm's, so a timm
state dict loads). That layout differs from the paper's figures: its stem is Inception-v3's plus
``mixed_5b`` (320 channels; the paper's Fig 3 stem gives 384) and it repeats the residual blocks
10 / 20 / 10 times (the paper's Fig 15 draws 5 / 10 / 5). The layers:

  stem: conv 32@3x3/2, conv 32@3x3, conv 64@3x3 pad 1, MAX pool 3/2, conv 80@1x1,
        conv 192@3x3, MAX pool 3/2, mixed_5b (Inception-A: 96 | 48->64 5x5 | 64->96->96 3x3 |
        AVE pool 3/1 -> 64; 320 channels)
  10 x Block35 (Inception-ResNet-A, residual scale 0.17), 35x35x320
  mixed_6a (Reduction-A: 384 3x3/2 | 256->256->384 3x3/2 | MAX pool 3/2), 17x17x1088
  20 x Block17 (Inception-ResNet-B, 1x7/7x1 factorised, scale 0.10), 17x17x1088
  mixed_7a (Reduction-B), 8x8x2080
  9 x Block8 (Inception-ResNet-C, 1x3/3x1, scale 0.20) + a final Block8 (scale 1, no ReLU)
  conv 1536@1x1, global average pool, dropout, fc num_classes

Every conv is conv (no bias) -> BatchNorm (eps 1e-3, with scale and shift) -> ReLU; the residual
branches' "up" 1x1 convs (``conv2d``, linear, before the scaling) have a bias and no BN. That is
timm's module, with 55,843,464 parameters for 1000 classes (Keras' BN has no scale, so its count
differs). Batch norm is plain ``nn.BatchNorm2d`` (PyTorch's momentum 0.1, as timm; TF-slim uses
decay 0.9997). Dropout before the classifier: drop 0.2, i.e. the paper's and TF-slim's keep
probability 0.8 (timm defaults to none, Keras Applications has none); option ``dropout``.
There are no auxiliary logits (TF-slim has an optional head; timm and Keras do not).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import check_image_batch, conv_output_size

INPUT_SIZE = 299  # the paper's and TF-slim's input (timm default_cfg input_size)
BN_EPS = 1e-3  # TF-slim batch_norm_epsilon 0.001 (timm: eps=.001)
DROPOUT = 0.2  # 1 - dropout_keep_prob 0.8 (paper Fig 15 "Dropout (keep 0.8)"; TF-slim)
STEM_WIDTH = 192  # conv2d_4a output, mixed_5b input
BLOCK35_WIDTH, BLOCK17_WIDTH, BLOCK8_WIDTH = 320, 1088, 2080  # residual stage widths
BLOCK35_REPEATS, BLOCK17_REPEATS, BLOCK8_REPEATS = 10, 20, 9  # plus one final Block8
BLOCK35_SCALE, BLOCK17_SCALE, BLOCK8_SCALE = 0.17, 0.10, 0.20  # residual scaling
FINAL_WIDTH = 1536  # conv2d_7b output (num_features)
POOL_KERNEL, POOL_STRIDE = 3, 2  # maxpool_3a, maxpool_5a, and the reductions' pools

Kernel = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(
        self, c_in: int, c_out: int, kernel: Kernel, stride: int = 1, padding: Kernel = 0
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Mixed5b(nn.Module):
    """Inception-A block closing the stem: 192 -> 96 + 64 + 96 + 64 = 320 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(STEM_WIDTH, 96, 1)
        self.branch1 = nn.Sequential(BasicConv2d(STEM_WIDTH, 48, 1), BasicConv2d(48, 64, 5, 1, 2))
        self.branch2 = nn.Sequential(
            BasicConv2d(STEM_WIDTH, 64, 1),
            BasicConv2d(64, 96, 3, 1, 1),
            BasicConv2d(96, 96, 3, 1, 1),
        )
        # TF's 'SAME' average pool divides by the cells inside the image: count_include_pad=False.
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            BasicConv2d(STEM_WIDTH, 64, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Block35(nn.Module):
    """Inception-ResNet-A at 35x35x320: x + scale * up(32 | 32->32 | 32->48->64), then ReLU."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        w = BLOCK35_WIDTH
        self.branch0 = BasicConv2d(w, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(w, 32, 1), BasicConv2d(32, 32, 3, 1, 1))
        self.branch2 = nn.Sequential(
            BasicConv2d(w, 32, 1), BasicConv2d(32, 48, 3, 1, 1), BasicConv2d(48, 64, 3, 1, 1)
        )
        self.conv2d = nn.Conv2d(32 + 32 + 64, w, 1)  # the linear "up" conv: bias, no BN
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.conv2d(torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1))
        return self.relu(x + self.scale * up)


class Mixed6a(nn.Module):
    """Reduction-A: 35x35x320 -> 17x17x(384 + 384 + 320) = 1088."""

    def __init__(self) -> None:
        super().__init__()
        w = BLOCK35_WIDTH
        self.branch0 = BasicConv2d(w, 384, 3, stride=2)
        self.branch1 = nn.Sequential(
            BasicConv2d(w, 256, 1), BasicConv2d(256, 256, 3, 1, 1), BasicConv2d(256, 384, 3, 2)
        )
        self.branch2 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Block17(nn.Module):
    """Inception-ResNet-B at 17x17x1088: x + scale * up(192 | 128->160 1x7->192 7x1), ReLU."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        w = BLOCK17_WIDTH
        self.branch0 = BasicConv2d(w, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(w, 128, 1),
            BasicConv2d(128, 160, (1, 7), 1, (0, 3)),
            BasicConv2d(160, 192, (7, 1), 1, (3, 0)),
        )
        self.conv2d = nn.Conv2d(192 + 192, w, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.conv2d(torch.cat([self.branch0(x), self.branch1(x)], 1))
        return self.relu(x + self.scale * up)


class Mixed7a(nn.Module):
    """Reduction-B: 17x17x1088 -> 8x8x(384 + 288 + 320 + 1088) = 2080."""

    def __init__(self) -> None:
        super().__init__()
        w = BLOCK17_WIDTH
        self.branch0 = nn.Sequential(BasicConv2d(w, 256, 1), BasicConv2d(256, 384, 3, 2))
        self.branch1 = nn.Sequential(BasicConv2d(w, 256, 1), BasicConv2d(256, 288, 3, 2))
        self.branch2 = nn.Sequential(
            BasicConv2d(w, 256, 1), BasicConv2d(256, 288, 3, 1, 1), BasicConv2d(288, 320, 3, 2)
        )
        self.branch3 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class Block8(nn.Module):
    """Inception-ResNet-C at 8x8x2080: x + scale * up(192 | 192->224 1x3->256 3x1), ReLU."""

    def __init__(self, scale: float = 1.0, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        w = BLOCK8_WIDTH
        self.branch0 = BasicConv2d(w, 192, 1)
        self.branch1 = nn.Sequential(
            BasicConv2d(w, 192, 1),
            BasicConv2d(192, 224, (1, 3), 1, (0, 1)),
            BasicConv2d(224, 256, (3, 1), 1, (1, 0)),
        )
        self.conv2d = nn.Conv2d(192 + 256, w, 1)
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.scale * self.conv2d(torch.cat([self.branch0(x), self.branch1(x)], 1))
        return out if self.relu is None else self.relu(out)


def feature_side(input_size: int) -> int:
    """Side of the 8x8 map at 299x299; ValueError if a valid conv or pool runs out of input."""
    side = conv_output_size(input_size, 3, 2)  # conv2d_1a
    side = conv_output_size(side, 3)  # conv2d_2a (conv2d_2b is padded)
    side = conv_output_size(side, POOL_KERNEL, POOL_STRIDE)  # maxpool_3a (floor, as TF 'VALID')
    side = conv_output_size(side, 3)  # conv2d_4a
    side = conv_output_size(side, POOL_KERNEL, POOL_STRIDE)  # maxpool_5a
    side = conv_output_size(side, 3, 2)  # mixed_6a
    return conv_output_size(side, 3, 2)  # mixed_7a


def smallest_input() -> int:
    size = 1
    while True:
        try:
            feature_side(size)
            return size
        except ValueError:
            size += 1


MIN_INPUT_SIZE = smallest_input()


class InceptionResNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, dropout: float = DROPOUT) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.conv2d_1a = BasicConv2d(in_channels, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, STEM_WIDTH, 3)
        self.maxpool_5a = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE)
        self.mixed_5b = Mixed5b()
        self.repeat = nn.Sequential(*(Block35(BLOCK35_SCALE) for _ in range(BLOCK35_REPEATS)))
        self.mixed_6a = Mixed6a()
        self.repeat_1 = nn.Sequential(*(Block17(BLOCK17_SCALE) for _ in range(BLOCK17_REPEATS)))
        self.mixed_7a = Mixed7a()
        self.repeat_2 = nn.Sequential(*(Block8(BLOCK8_SCALE) for _ in range(BLOCK8_REPEATS)))
        self.block8 = Block8(relu=False)  # the last block: scale 1, no ReLU after the sum
        self.conv2d_7b = BasicConv2d(BLOCK8_WIDTH, FINAL_WIDTH, 1)
        self.dropout = nn.Dropout(dropout)
        self.classif = nn.Linear(FINAL_WIDTH, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, "inception_resnet_v2", self.in_channels)
        if min(x.shape[2], x.shape[3]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"inception_resnet_v2 needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}"
                f" (built for {INPUT_SIZE}x{INPUT_SIZE}), got {x.shape[2]}x{x.shape[3]}"
            )
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        x = self.conv2d_4a(self.conv2d_3b(self.maxpool_3a(x)))
        x = self.repeat(self.mixed_5b(self.maxpool_5a(x)))
        x = self.repeat_1(self.mixed_6a(x))
        x = self.block8(self.repeat_2(self.mixed_7a(x)))
        x = self.conv2d_7b(x).mean(dim=(2, 3))  # global average pool
        return self.classif(self.dropout(x))
