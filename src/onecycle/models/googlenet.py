"""Caffe's GoogLeNet (BVLC/caffe models/bvlc_googlenet/train_val.prototxt), Inception v1.

Szegedy et al. 2015 ("Going deeper with convolutions", Table 1), as the Caffe model zoo trains it;
the CLR paper's GoogLeNet rows (arXiv:1506.01186 Table 1) use this prototxt. Layer order:

  conv1/7x7_s2 64@7x7/2 pad 3 -> ReLU -> pool1 MAX 3/2 -> pool1/norm1 LRN
  conv2/3x3_reduce 64@1x1 -> ReLU -> conv2/3x3 192@3x3 pad 1 -> ReLU -> conv2/norm2 LRN
  -> pool2 MAX 3/2 -> inception 3a, 3b -> pool3 MAX 3/2 -> inception 4a .. 4e -> pool4 MAX 3/2
  -> inception 5a, 5b -> pool5 AVE 7/1 -> dropout 0.4 -> loss3/classifier

Each inception module concatenates four ReLU'd branches: 1x1; 1x1 reduce -> 3x3 pad 1;
1x1 reduce -> 5x5 pad 2; MAX pool 3/1 pad 1 -> 1x1 pool_proj (widths: ``INCEPTION_WIDTHS``).
Two auxiliary classifiers, on inception_4a (loss1) and inception_4d (loss2): AVE pool 5/3 ->
conv 128@1x1 -> ReLU -> fc 1024 -> ReLU -> dropout 0.7 -> classifier, each a SoftmaxWithLoss
with ``loss_weight: 0.3``. In training mode the model returns :class:`WithAuxiliary` (main
logits plus ``((0.3, loss1 logits), (0.3, loss2 logits))``; :func:`classification_loss` sums
them as Caffe does); in eval mode it returns the main logits only, which is what Caffe's
loss3/top-1 accuracy reads (the aux heads are then not computed). ``aux_classifiers=False`` drops
the aux heads altogether: the network of bvlc_googlenet/deploy.prototxt.

LRN: across channels, local_size 5, alpha 1e-4, beta 0.75, k 1 (``nn.LocalResponseNorm``
computes exactly Caffe's formula; see alexnet.py). Caffe rounds pooling outputs up
(``ceil_mode=True``): 224 -> 112 -> 56 -> 28 -> 14 -> 7 (floor rounding would give 55 after
pool1), and the aux pools give 4x4 maps, so the aux fc layers see 128 * 4 * 4 = 2048 features.

Fillers: xavier on every conv and inner product; bias constant 0.2, except the three classifiers
(loss1/classifier, loss2/classifier, loss3/classifier: constant 0). Multipliers: every layer
``param {lr_mult: 1 decay_mult: 1} param {lr_mult: 2 decay_mult: 0}``. Input 224x224 crops.
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
from .outputs import WithAuxiliary

INPUT_SIZE = 224  # transform_param crop_size
CONV1_OUTPUTS, CONV1_KERNEL, CONV1_STRIDE, CONV1_PAD = 64, 7, 2, 3  # conv1/7x7_s2
CONV2_REDUCE_OUTPUTS = 64  # conv2/3x3_reduce (1x1)
CONV2_OUTPUTS = 192  # conv2/3x3, pad 1
POOL_KERNEL, POOL_STRIDE = 3, 2  # pool1 .. pool4: MAX 3/2
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 1.0  # pool1/norm1, conv2/norm2

# Inception module widths, as the prototxt's num_output (= the paper's Table 1):
# (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj).
INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception_3a": (64, 96, 128, 16, 32, 32),
    "inception_3b": (128, 128, 192, 32, 96, 64),
    "inception_4a": (192, 96, 208, 16, 48, 64),
    "inception_4b": (160, 112, 224, 24, 64, 64),
    "inception_4c": (128, 128, 256, 24, 64, 64),
    "inception_4d": (112, 144, 288, 32, 64, 64),
    "inception_4e": (256, 160, 320, 32, 128, 128),
    "inception_5a": (256, 160, 320, 32, 128, 128),
    "inception_5b": (384, 192, 384, 48, 128, 128),
}
BRANCH_POOL_KERNEL = 3  # inception_*/pool: MAX 3/1 pad 1

AUX_POOL_KERNEL, AUX_POOL_STRIDE = 5, 3  # loss1/ave_pool, loss2/ave_pool: AVE 5/3
AUX_CONV_OUTPUTS = 128  # loss*/conv (1x1)
AUX_FC_OUTPUTS = 1024  # loss*/fc
AUX_DROPOUT = 0.7  # loss*/drop_fc
AUX_LOSS_WEIGHT = 0.3  # loss1/loss, loss2/loss: loss_weight
MAIN_POOL_KERNEL = 7  # pool5/7x7_s1: AVE 7/1
MAIN_DROPOUT = 0.4  # pool5/drop_7x7_s1

BIAS_FILLER = 0.2  # bias_filler constant of every conv and fc but the classifiers (0)
BIAS_MULTIPLIERS = ParamMultipliers(lr_mult=2.0, decay_mult=0.0)


def caffe_lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


def googlenet_sides(input_size: int = INPUT_SIZE) -> tuple[int, int]:
    """Sides of the aux pools' output (4 at 224) and of inception_5x's maps (7 at 224)."""
    side = conv_output_size(input_size, CONV1_KERNEL, CONV1_STRIDE, CONV1_PAD)
    for _ in range(3):  # pool1, pool2, pool3 (the convs in between keep the side)
        side = caffe_pool_output_size(side, POOL_KERNEL, POOL_STRIDE)
    aux_side = caffe_pool_output_size(side, AUX_POOL_KERNEL, AUX_POOL_STRIDE)
    return aux_side, caffe_pool_output_size(side, POOL_KERNEL, POOL_STRIDE)


class Inception(nn.Module):
    """One inception module: four ReLU'd branches concatenated in the prototxt's order."""

    def __init__(self, in_width: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = widths
        self.conv_1x1 = nn.Conv2d(in_width, n1x1, 1)
        self.conv_3x3_reduce = nn.Conv2d(in_width, n3x3_reduce, 1)
        self.conv_3x3 = nn.Conv2d(n3x3_reduce, n3x3, 3, padding=1)
        self.conv_5x5_reduce = nn.Conv2d(in_width, n5x5_reduce, 1)
        self.conv_5x5 = nn.Conv2d(n5x5_reduce, n5x5, 5, padding=2)
        self.pool = nn.MaxPool2d(BRANCH_POOL_KERNEL, 1, padding=1, ceil_mode=True)
        self.pool_proj = nn.Conv2d(in_width, pool_proj, 1)
        self.out_width = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                torch.relu(self.conv_1x1(x)),
                torch.relu(self.conv_3x3(torch.relu(self.conv_3x3_reduce(x)))),
                torch.relu(self.conv_5x5(torch.relu(self.conv_5x5_reduce(x)))),
                torch.relu(self.pool_proj(self.pool(x))),
            ],
            dim=1,
        )


class AuxClassifier(nn.Module):
    """loss1 / loss2: AVE pool 5/3 -> conv 1x1 128 -> ReLU -> fc 1024 -> ReLU -> dropout -> fc."""

    def __init__(self, in_width: int, pooled_side: int, num_classes: int) -> None:
        super().__init__()
        self.ave_pool = nn.AvgPool2d(AUX_POOL_KERNEL, AUX_POOL_STRIDE, ceil_mode=True)
        self.conv = nn.Conv2d(in_width, AUX_CONV_OUTPUTS, 1)
        self.fc = nn.Linear(AUX_CONV_OUTPUTS * pooled_side * pooled_side, AUX_FC_OUTPUTS)
        self.drop_fc = nn.Dropout(AUX_DROPOUT)
        self.classifier = nn.Linear(AUX_FC_OUTPUTS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(self.ave_pool(x)))
        x = self.drop_fc(torch.relu(self.fc(torch.flatten(x, 1))))
        return self.classifier(x)


class GoogLeNet(CaffePort):
    def __init__(
        self, num_classes: int, in_channels: int = 3, aux_classifiers: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(aux_classifiers, bool):
            raise ValueError(f"aux_classifiers must be true or false, got {aux_classifiers!r}")
        self.in_channels = in_channels
        aux_side, side_5 = googlenet_sides(INPUT_SIZE)
        self.conv1 = nn.Conv2d(
            in_channels, CONV1_OUTPUTS, CONV1_KERNEL, stride=CONV1_STRIDE, padding=CONV1_PAD
        )
        self.pool1 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.norm1 = caffe_lrn()
        self.conv2_reduce = nn.Conv2d(CONV1_OUTPUTS, CONV2_REDUCE_OUTPUTS, 1)
        self.conv2 = nn.Conv2d(CONV2_REDUCE_OUTPUTS, CONV2_OUTPUTS, 3, padding=1)
        self.norm2 = caffe_lrn()
        self.pool2 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        width = CONV2_OUTPUTS
        modules = {}
        for name, widths in INCEPTION_WIDTHS.items():
            modules[name] = Inception(width, widths)
            width = modules[name].out_width
        self.inception_3a = modules["inception_3a"]
        self.inception_3b = modules["inception_3b"]
        self.pool3 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.inception_4a = modules["inception_4a"]
        self.loss1 = (
            AuxClassifier(self.inception_4a.out_width, aux_side, num_classes)
            if aux_classifiers
            else None
        )
        self.inception_4b = modules["inception_4b"]
        self.inception_4c = modules["inception_4c"]
        self.inception_4d = modules["inception_4d"]
        self.loss2 = (
            AuxClassifier(self.inception_4d.out_width, aux_side, num_classes)
            if aux_classifiers
            else None
        )
        self.inception_4e = modules["inception_4e"]
        self.pool4 = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE, ceil_mode=True)
        self.inception_5a = modules["inception_5a"]
        self.inception_5b = modules["inception_5b"]
        self.pool5 = nn.AvgPool2d(MAIN_POOL_KERNEL, 1, ceil_mode=True)
        self.dropout = nn.Dropout(MAIN_DROPOUT)
        main_side = caffe_pool_output_size(side_5, MAIN_POOL_KERNEL, 1)
        self.classifier = nn.Linear(width * main_side * main_side, num_classes)  # loss3/classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor | WithAuxiliary:
        # The aux fc and loss3/classifier input widths fix the spatial size (224x224 crops).
        check_image_batch(x, "googlenet", self.in_channels, size=INPUT_SIZE)
        with_aux = self.training and self.loss1 is not None and self.loss2 is not None
        x = self.norm1(self.pool1(torch.relu(self.conv1(x))))
        x = torch.relu(self.conv2(torch.relu(self.conv2_reduce(x))))
        x = self.pool2(self.norm2(x))
        x = self.pool3(self.inception_3b(self.inception_3a(x)))
        x = self.inception_4a(x)
        aux1 = self.loss1(x) if with_aux else None
        x = self.inception_4d(self.inception_4c(self.inception_4b(x)))
        aux2 = self.loss2(x) if with_aux else None
        x = self.pool4(self.inception_4e(x))
        x = self.pool5(self.inception_5b(self.inception_5a(x)))
        logits = self.classifier(self.dropout(torch.flatten(x, 1)))
        if aux1 is None or aux2 is None:
            return logits
        return WithAuxiliary(logits, ((AUX_LOSS_WEIGHT, aux1), (AUX_LOSS_WEIGHT, aux2)))

    def classifiers(self) -> list[nn.Linear]:
        """loss1/classifier, loss2/classifier (when built) and loss3/classifier."""
        aux = [head.classifier for head in (self.loss1, self.loss2) if head is not None]
        return [*aux, self.classifier]

    def apply_prototxt_fillers(self) -> None:
        classifiers = self.classifiers()
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d | nn.Linear):
                    fill_layer(module, "xavier")  # zeroes the bias: the classifiers' constant 0
                    if not any(module is layer for layer in classifiers):
                        module.bias.fill_(BIAS_FILLER)

    def param_multipliers(self) -> dict[str, ParamMultipliers]:
        return multipliers_by_layer_kind(self, BIAS_MULTIPLIERS, BIAS_MULTIPLIERS)
