"""Caffe behaviours that PyTorch's stock layers do not reproduce, ported exactly.

Smith's networks are Caffe prototxts (docs/paper_reference.md C1/C2). Three Caffe semantics matter for a
faithful port and have no stock PyTorch equivalent:

- ``BatchNorm`` keeps *normalised* running sums (src/caffe/layers/batch_norm_layer.cpp): the
  test-time mean is sum_k maf^k mean_{t-k} / sum_k maf^k, unbiased from the first iteration,
  whereas ``nn.BatchNorm2d`` blends into a 0/1 initial value. With maf = 0.999 (SC prototxts) the
  PyTorch estimate is still 90 % initial value after 100 iterations, exactly when SC evaluates.
- ``LRN`` with ``norm_region: WITHIN_CHANNEL`` (the 3-layer CIFAR net); ``nn.LocalResponseNorm``
  only normalises across channels.
- per-parameter ``lr_mult`` / ``decay_mult`` (e.g. ``decay_mult: 250`` on cifar3's classifier);
  models expose them so an optimiser can build Caffe-equivalent parameter groups.

Caffe also rounds pooling output sizes *up*; the ports use ``ceil_mode=True`` for that, which gives
the same windows and the same average-pool divisors as pooling_layer.cpp.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Caffe's BatchNormParameter default eps (caffe.proto); equal to PyTorch's.
CAFFE_BN_EPS = 1e-5


@dataclass(frozen=True)
class ParamMultipliers:
    """A prototxt ``param { lr_mult decay_mult }`` entry; Caffe's defaults are 1 and 1."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0


class CaffePort(nn.Module, abc.ABC):
    """A network ported from a Caffe prototxt: it knows that prototxt's fillers and multipliers."""

    @abc.abstractmethod
    def apply_prototxt_fillers(self) -> None:
        """Re-initialise every learnable layer with the filler its prototxt names."""

    @abc.abstractmethod
    def param_multipliers(self) -> dict[str, ParamMultipliers]:
        """(lr_mult, decay_mult) for every name in ``named_parameters()``, as in the prototxt."""


def multipliers_by_layer_kind(
    model: nn.Module, conv_bias: ParamMultipliers, linear_bias: ParamMultipliers
) -> dict[str, ParamMultipliers]:
    """Multipliers of a prototxt whose layers of one kind share their ``param`` entries.

    Conv and inner-product weights and the Scale parameters of batch norm keep Caffe's default
    1/1 in every prototxt ported here (as do nn.BatchNorm2d's weight and bias, which stand in for
    them under ``batch_norm="torch"``); only the biases vary.
    """
    multipliers = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            name = f"{module_name}.{param_name}" if module_name else param_name
            if param_name == "bias" and isinstance(module, nn.Conv2d):
                multipliers[name] = conv_bias
            elif param_name == "bias" and isinstance(module, nn.Linear):
                multipliers[name] = linear_bias
            else:
                multipliers[name] = ParamMultipliers()
    return multipliers


def require_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def validate_moving_average_fraction(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"moving_average_fraction must be in [0, 1), got {value!r}")
    return float(value)


# The model option `batch_norm` of the SC ResNets: Caffe's BatchNorm + Scale, or torch's own.
BATCH_NORMS = ("caffe", "torch")


def validate_batch_norm(value: object) -> str:
    if not isinstance(value, str) or value not in BATCH_NORMS:
        allowed = ", ".join(repr(name) for name in BATCH_NORMS)
        raise ValueError(f"batch_norm must be one of {allowed}, got {value!r}")
    return value


def batch_norm_2d(num_features: int, moving_average_fraction: float, batch_norm: str = "caffe") -> nn.Module:
    """The batch norm a Caffe port's ``batch_norm`` option names (BATCH_NORMS).

    "caffe": :class:`CaffeBatchNorm2d`. "torch": ``nn.BatchNorm2d`` with PyTorch's running
    statistics, for measuring what Caffe's own contribute (issue 26: everything else equal).
    Training normalises identically (batch mean, biased batch variance, the same eps; weight 1
    and bias 0 at init, the Scale layer's fillers); only the test-time statistics differ. Its
    ``momentum = 1 - moving_average_fraction`` gives both the same averaging horizon: Caffe's
    estimate S_t / w_t weighs the value of k steps ago by maf^k / w_t, w_t = (1 - maf^t) / (1 - maf),
    and torch's r_t = (1 - m) r_{t-1} + m v_t by m (1 - m)^k = (1 - maf) maf^k, the same weights
    once w_t has converged. Torch's estimate starts at mean 0 / variance 1 and keeps a maf^t share
    of them (mean (1 - maf^t) x Caffe's; variance that plus maf^t), where Caffe's normalised sums
    hold no initial value; before any step Caffe's test-time statistics are 0/0, torch's 0/1. Both
    blend the m/(m-1)-corrected (unbiased) batch variance into the running one.
    """
    maf = validate_moving_average_fraction(moving_average_fraction)
    if validate_batch_norm(batch_norm) == "caffe":
        return CaffeBatchNorm2d(num_features, maf)
    return nn.BatchNorm2d(num_features, eps=CAFFE_BN_EPS, momentum=1.0 - maf)


class CaffeBatchNorm2d(nn.Module):
    """Caffe ``BatchNorm`` + ``Scale(bias_term: true)``, with Caffe's running statistics.

    Training normalises with the batch mean and biased batch variance, like PyTorch. The running
    state mirrors Caffe's three blobs: ``mean_sum``, ``var_sum`` (the variance enters with the
    m/(m-1) bias correction, m = N*H*W) and ``sum_weight``; each step multiplies all three by
    ``moving_average_fraction`` and adds the batch value (resp. 1). Evaluation divides the sums by
    ``sum_weight``; before any training step Caffe uses a scale factor of 0, i.e. mean 0 and
    variance 0, and so does this port.

    ``weight``/``bias`` are the Scale layer (Caffe fillers: constant 1 and constant 0).

    ``shards`` > 1 emulates Caffe's multi-GPU training on one device: each GPU normalises its own
    part of the batch (docs/paper_reference.md D6: 125 images per GPU in SC, about 128 in Part 1), so the
    batch is cut into ``shards`` equal consecutive parts, each normalised by its own statistics.
    Every Caffe solver keeps its own running statistics (the BatchNorm blobs are not synchronised)
    and Caffe tests on the root solver's net, so the running statistics follow the first shard.
    Set it with :func:`set_batch_norm_shards`.
    """

    def __init__(self, num_features: int, moving_average_fraction: float) -> None:
        super().__init__()
        self.num_features = num_features
        self.moving_average_fraction = validate_moving_average_fraction(moving_average_fraction)
        self.eps = CAFFE_BN_EPS
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self._register_running_state()
        self.shards = 1
        # The test-time statistics of the sums as they were when computed: each forward pass in
        # evaluation mode would otherwise recompute them (6 ops per layer and batch, the same
        # values every time), see running_mean_var.
        self._test_statistics: tuple[list[tuple[torch.Tensor, int]], tuple[torch.Tensor, torch.Tensor]] | None = None

    def _register_running_state(self) -> None:
        self.register_buffer("mean_sum", torch.zeros(self.num_features))
        self.register_buffer("var_sum", torch.zeros(self.num_features))
        self.register_buffer("sum_weight", torch.zeros(()))

    def running_mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and variance Caffe uses at test time (``use_global_stats: true``).

        Computed once and kept until a running sum changes: a new tensor (loading, moving or
        casting the module) or an in-place write (a training step, load_state_dict, a broadcast
        from another rank) bumps the tensor's version; `train()` forgets them as well."""
        sums = [(buffer, buffer._version) for buffer in (self.mean_sum, self.var_sum, self.sum_weight)]
        kept = self._test_statistics
        if kept is None or any(old is not new or old_version != new_version
                               for (old, old_version), (new, new_version) in zip(kept[0], sums, strict=True)):
            scale = torch.where(self.sum_weight == 0, 0.0, 1.0 / self.sum_weight)
            kept = self._test_statistics = (sums, (self.mean_sum * scale, self.var_sum * scale))
        return kept[1]

    def train(self, mode: bool = True) -> CaffeBatchNorm2d:
        self._test_statistics = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            mean, var = self.running_mean_var()
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        if self.shards > 1:
            return self._sharded_forward(x)
        self._update_running_sums(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    @torch.no_grad()
    def _update_running_sums(self, x: torch.Tensor) -> None:
        if x.dtype != self.mean_sum.dtype:
            # Under bf16 autocast the activations arrive in bf16, and statistics computed in it
            # are rounded to 8 significant bits (0.4 %) before they enter the sums: the
            # statistics are taken in the sums' precision, as Caffe kept them (fp32).
            x = x.to(self.mean_sum.dtype)
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        m = x.numel() // x.shape[1]
        bias_correction = m / (m - 1) if m > 1 else 1.0
        maf = self.moving_average_fraction
        self.mean_sum.mul_(maf).add_(mean)
        self.var_sum.mul_(maf).add_(var, alpha=bias_correction)
        self.sum_weight.mul_(maf).add_(1.0)

    def _sharded_forward(self, x: torch.Tensor) -> torch.Tensor:
        per_shard = self.shard_size(x)
        self._update_running_sums(x[:per_shard])  # the root GPU's statistics
        return self.sharded_batch_norm(x, None, None, 0.0)

    def shard_size(self, x: torch.Tensor) -> int:
        if x.shape[0] % self.shards:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {self.shards} equal "
                             "batch-norm shards")
        return x.shape[0] // self.shards

    def sharded_batch_norm(self, x: torch.Tensor, running_mean: torch.Tensor | None,
                           running_var: torch.Tensor | None, momentum: float) -> torch.Tensor:
        """Each shard normalised by its own statistics, in one batch_norm call: shard s's channel
        k becomes channel s*C + k of a batch of (N/S, S*C, H, W); running statistics, if given,
        are kept per shard in that order."""
        n, c, h, w = x.shape
        per_shard = self.shard_size(x)
        grouped = x.reshape(self.shards, per_shard, c, h, w).transpose(0, 1)
        grouped = grouped.reshape(per_shard, self.shards * c, h, w)
        out = F.batch_norm(grouped, running_mean, running_var, self.weight.repeat(self.shards),
                           self.bias.repeat(self.shards), True, momentum, self.eps)
        return out.reshape(per_shard, self.shards, c, h, w).transpose(0, 1).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        shards = f", shards={self.shards}" if self.shards > 1 else ""
        return f"{self.num_features}, moving_average_fraction={self.moving_average_fraction}{shards}"


def set_batch_norm_shards(model: nn.Module, shards: int) -> None:
    """Per-GPU batch-norm statistics for ``shards`` GPUs on one device (CaffeBatchNorm2d.shards).

    A model without batch norm is left as it is; one with PyTorch's own batch norm cannot split
    its statistics and is refused (only the Caffe ports implement the shards)."""
    require_positive_int("shards", shards)
    if shards > 1:
        stock = [name for name, m in model.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if stock:
            raise ValueError(f"batch-norm shards need Caffe's batch norm (the Caffe ports); "
                             f"{type(model).__name__} uses torch's at {stock[0]!r}")
    for module in model.modules():
        if isinstance(module, CaffeBatchNorm2d):
            module.shards = shards


class WithinChannelLRN(nn.Module):
    """Caffe ``LRN`` with ``norm_region: WITHIN_CHANNEL`` (src/caffe/layers/lrn_layer.cpp).

    Caffe builds it as square -> AVE pool (kernel local_size, pad (local_size-1)/2, stride 1,
    padded zeros counted in the divisor) -> power(shift 1, scale alpha, power -beta) -> product:
    y = x * (1 + alpha * mean_{local_size x local_size}(x^2)) ^ -beta.
    """

    def __init__(self, local_size: int, alpha: float, beta: float) -> None:
        super().__init__()
        if local_size < 1 or local_size % 2 == 0:
            raise ValueError(f"local_size must be a positive odd integer, got {local_size!r}")
        self.local_size = local_size
        self.alpha = alpha
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.bfloat16, torch.float16):
            # Under autocast: in bf16, 1 + alpha * mean_square rounds to 1 whenever
            # alpha * mean_square < 2^-9 (cifar3's alpha is 5e-5), which turns the layer into
            # the identity; so it computes in fp32 and hands its output back in x's type.
            with torch.autocast(x.device.type, enabled=False):
                return self._normalise(x.float()).to(x.dtype)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.local_size - 1) // 2
        mean_square = F.avg_pool2d(
            x * x, self.local_size, stride=1, padding=pad, count_include_pad=True
        )
        return x * (1.0 + self.alpha * mean_square).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"local_size={self.local_size}, alpha={self.alpha}, beta={self.beta}"


class _GlobalAveragePool(torch.autograd.Function):
    """adaptive_avg_pool2d(x, 1) whose backward is an expand: deterministic on CUDA.

    On CUDA, adaptive_avg_pool2d's backward adds with atomics, so deterministic mode refuses it
    (torch.use_deterministic_algorithms lists it). A global mean's gradient needs no atomics:
    each input gets its output's gradient / (H W), one rounding, which is what torch's CPU
    kernel computes too (then added to zero), so CPU gradients keep their bits
    (tests/test_lean_step.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - torch's signature
        ctx.input_shape = x.shape
        return F.adaptive_avg_pool2d(x, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - torch's signature
        height, width = ctx.input_shape[-2:]
        return grad.div(height * width).expand(ctx.input_shape)


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """The mean of each (N, C) map as an (N, C, 1, 1) tensor (Caffe's AVE pool over the whole
    map, global_pooling), with a deterministic backward on CUDA (_GlobalAveragePool)."""
    return _GlobalAveragePool.apply(x)


class GlobalAveragePool(nn.Module):
    """`global_average_pool` as a module, for torchvision's `avgpool` slot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_average_pool(x)


def caffe_pool_output_size(size: int, kernel: int, stride: int) -> int:
    """Output side of an unpadded Caffe pooling layer: ceil((size - kernel) / stride) + 1."""
    if size < kernel:
        raise ValueError(f"feature map of side {size} is smaller than the pooling kernel {kernel}")
    return math.ceil((size - kernel) / stride) + 1


def conv_output_size(size: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
    """Output side of a convolution (Caffe and PyTorch both round down)."""
    if size + 2 * pad < kernel:
        raise ValueError(f"feature map of side {size} is smaller than the {kernel}x{kernel} kernel")
    return (size + 2 * pad - kernel) // stride + 1


def check_image_batch(
    x: torch.Tensor, model: str, channels: int, size: int | None = None, multiple_of: int = 1
) -> None:
    """Raise a one-line ValueError unless ``x`` is an (N, channels, H, W) batch the model takes."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"{model} expects a batch of shape (N, {channels}, H, W), got {tuple(x.shape)}"
        )
    height, width = x.shape[2], x.shape[3]
    if size is not None and (height, width) != (size, size):
        raise ValueError(f"{model} was built for {size}x{size} inputs, got {height}x{width}")
    if height % multiple_of or width % multiple_of:
        raise ValueError(
            f"{model} needs H and W divisible by {multiple_of} (its shortcuts must line up with "
            f"its strided convolutions), got {height}x{width}"
        )
