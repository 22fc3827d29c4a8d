"""Caffe's batch norm with its running statistics kept by the fused batch-norm kernel.

`CaffeBatchNorm2d` keeps Caffe's three running sums itself: 7 extra ops per layer and training
step (the batch statistics once more, then two ops per sum), 385 per ResNet-56 iteration, each
one a kernel launch on a GPU. The same statistics come out of the kernel that normalises the
batch (`F.batch_norm` with running buffers), which already computes the batch mean and the
m/(m-1)-corrected variance and blends them into its buffers as
r <- (1 - momentum) r + momentum * batch value. Caffe's normalised estimate r_t = S_t / w_t, with
S_t = maf S_{t-1} + value_t and w_t = maf w_{t-1} + 1 (docs/caffe_semantics.md, G2; Caffe's
batch_norm_layer.cpp), obeys exactly that blend with a momentum that changes every step:

    r_t = (maf w_{t-1} r_{t-1} + value_t) / w_t = (1 - 1/w_t) r_{t-1} + (1/w_t) value_t,

since maf w_{t-1} = w_t - 1. So the kernel keeps r_t when handed momentum 1/w_t, and w_t (the
same for every step of every layer: maf w + 1) is counted on the host, never read back from a
device. At the first step 1/w_1 = 1: r_1 is the first batch's value, Caffe's bias correction
of an estimate that starts from nothing; before any step r = 0, Caffe's scale factor 0 (mean 0,
variance 0). The test-time statistics are the buffers themselves: no op per forward.

The state dict keeps Caffe's sums (mean_sum = r w, var_sum, sum_weight), so checkpoints and
weights move freely between the two classes. In exact arithmetic the two are the same; in
floating point they round differently (tests/test_lean_step.py bounds the difference), so the
CPU runs keep `CaffeBatchNorm2d`, whose numbers the committed results were computed with, and
runs on an accelerator use this one (onecycle.training.run).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CaffeBatchNorm2d

CAFFE_SUMS = ("mean_sum", "var_sum", "sum_weight")


class FusedCaffeBatchNorm2d(CaffeBatchNorm2d):
    """`CaffeBatchNorm2d` whose running statistics the batch-norm kernel keeps (module docstring).

    With `shards` > 1 the kernel sees the shards as shards x channels channels and keeps
    statistics for each shard, as every GPU of a Caffe run kept its own; the root GPU's, the
    first `num_features`, are the ones Caffe tests with and the state dict holds.
    """

    def _register_running_state(self) -> None:
        # Non-persistent: the state dict holds Caffe's sums instead (_save_to_state_dict).
        self.register_buffer("running_mean", torch.zeros(self.num_features), persistent=False)
        self.register_buffer("running_var", torch.zeros(self.num_features), persistent=False)
        self.sum_weight_value = 0.0  # w_t, on the host

    @property
    def shards(self) -> int:
        return self.running_mean.numel() // self.num_features

    @shards.setter
    def shards(self, shards: int) -> None:
        # Every shard starts from the root's statistics (the others are never read).
        with torch.no_grad():
            self.running_mean = self.running_mean[:self.num_features].repeat(shards)
            self.running_var = self.running_var[:self.num_features].repeat(shards)

    def running_mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shards == 1:
            return self.running_mean, self.running_var
        return self.running_mean[:self.num_features], self.running_var[:self.num_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            mean, var = self.running_mean_var()
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        self.sum_weight_value = self.moving_average_fraction * self.sum_weight_value + 1.0
        momentum = 1.0 / self.sum_weight_value
        if self.shards == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                                momentum, self.eps)
        return self.sharded_batch_norm(x, self.running_mean, self.running_var, momentum)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        mean, var = self.running_mean_var()
        weight = torch.tensor(self.sum_weight_value, dtype=mean.dtype, device=mean.device)
        destination[prefix + "mean_sum"] = (mean * weight).detach()
        destination[prefix + "var_sum"] = (var * weight).detach()
        destination[prefix + "sum_weight"] = weight

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        keys = [prefix + name for name in CAFFE_SUMS]
        for key in keys:
            if key in unexpected_keys:
                unexpected_keys.remove(key)
        if any(key not in state_dict for key in keys):
            missing_keys.extend(key for key in keys if key not in state_dict)
            return
        mean_sum, var_sum, sum_weight = (state_dict[key] for key in keys)
        self.sum_weight_value = float(sum_weight)
        scale = 0.0 if self.sum_weight_value == 0 else 1.0 / self.sum_weight_value
        with torch.no_grad():
            self.running_mean.copy_((mean_sum * scale).repeat(self.shards))
            self.running_var.copy_((var_sum * scale).repeat(self.shards))


def use_fused_running_statistics(model: nn.Module) -> nn.Module:
    """`model` with every CaffeBatchNorm2d replaced by a FusedCaffeBatchNorm2d holding the same
    parameters (the very tensors), shards and running statistics; returned for chaining."""
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is CaffeBatchNorm2d:
                setattr(parent, name, _fused_copy(child))
    return model


def _fused_copy(layer: CaffeBatchNorm2d) -> FusedCaffeBatchNorm2d:
    fused = FusedCaffeBatchNorm2d(layer.num_features, layer.moving_average_fraction)
    fused.to(device=layer.mean_sum.device, dtype=layer.mean_sum.dtype)
    fused.weight, fused.bias = layer.weight, layer.bias
    fused.shards = layer.shards
    fused.load_state_dict(layer.state_dict())
    fused.train(layer.training)
    return fused
