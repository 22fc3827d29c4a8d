"""Model outputs with auxiliary classifiers, and the loss Caffe sums over them.

GoogLeNet's train_val.prototxt (BVLC/caffe models/bvlc_googlenet) has three SoftmaxWithLoss
layers: loss1 and loss2 on the auxiliary classifiers with ``loss_weight: 0.3`` and loss3 on the
main classifier with ``loss_weight: 1``. Caffe's net minimises the weighted sum of every loss
top, so the training objective is loss3 + 0.3 * loss1 + 0.3 * loss2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class WithAuxiliary(NamedTuple):
    """A training-mode output: the main logits plus weighted auxiliary logits.

    GoogLeNet's loss1/loss2 heads, each with loss_weight 0.3; models return it only in training
    mode, so evaluation code sees plain logits.
    """

    logits: torch.Tensor
    auxiliary: tuple[tuple[float, torch.Tensor], ...]  # (loss weight, logits)


def classification_loss(
    output: torch.Tensor | WithAuxiliary,
    target: torch.Tensor,
    loss_fn: LossFn = F.cross_entropy,
) -> torch.Tensor:
    """Caffe's total loss: main loss + sum(weight * auxiliary loss).

    A plain tensor output is just ``loss_fn(output, target)``. ``loss_fn`` must reduce to a
    scalar (the default mean cross-entropy is SoftmaxWithLoss with its default normalisation).
    """
    # WithAuxiliary is a tuple, so test for it before treating the output as logits.
    if isinstance(output, WithAuxiliary):
        loss = loss_fn(output.logits, target)
        for weight, logits in output.auxiliary:
            loss = loss + weight * loss_fn(logits, target)
        return loss
    return loss_fn(output, target)


def main_logits(output: torch.Tensor | WithAuxiliary) -> torch.Tensor:
    """The main classifier's logits of either kind of output (for accuracy: Caffe's loss3/top-1)."""
    return output.logits if isinstance(output, WithAuxiliary) else output
