"""Building a registered model: `build_model` with its init and option checks, parameter counts
and Caffe's per-parameter multipliers."""

from __future__ import annotations

from torch import nn

from .catalog import INIT_SCHEMES, lookup
from .init import fill_all_layers
from .layers import CaffePort, ParamMultipliers, require_positive_int


def build_model(
    name: str,
    num_classes: int,
    in_channels: int | None = None,
    init: str = "default",
    **kwargs: object,
) -> nn.Module:
    """Build a registered model.

    ``in_channels`` defaults to the model's ``input_channels``. ``init``: "default" keeps PyTorch's
    initialisation; "msra" / "xavier" apply that Caffe filler (exactly as filler.hpp) to every conv
    and linear weight, with zero biases; "prototxt" applies each layer's filler as its prototxt
    names it (Caffe ports only). ``kwargs`` are the model's options (``MODELS[name].options``),
    e.g. ``moving_average_fraction`` for the batch-norm nets, ``batch_norm`` ("caffe" or "torch") for
    the SC ResNets or ``input_size`` for lenet/cifar3.
    """
    info = lookup(name)
    require_positive_int("num_classes", num_classes)
    channels = info.input_channels if in_channels is None else in_channels
    require_positive_int("in_channels", channels)
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INIT_SCHEMES)}")
    unknown = sorted(set(kwargs) - set(info.options))
    if unknown:
        accepted = ", ".join(info.options) or "none"
        raise ValueError(f"unknown option {unknown[0]!r} for model {name!r}; accepted: {accepted}")
    model = info.build(num_classes, channels, **kwargs)
    if init == "prototxt":
        if not isinstance(model, CaffePort):
            raise ValueError(f"init='prototxt' needs a Caffe port; {name!r} is not one")
        model.apply_prototxt_fillers()
    elif init != "default":
        fill_all_layers(model, init)
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of learnable parameters (batch-norm running statistics are buffers, not counted)."""
    return sum(parameter.numel() for parameter in model.parameters())


def param_multipliers(model: nn.Module) -> dict[str, ParamMultipliers]:
    """Caffe (lr_mult, decay_mult) for every named parameter of ``model``.

    A Caffe port returns its prototxt's values; any other model has none, i.e. 1 and 1 everywhere
    (plain SGD: every parameter at the base learning rate and weight decay).
    """
    if isinstance(model, CaffePort):
        return model.param_multipliers()
    return {name: ParamMultipliers() for name, _ in model.named_parameters()}
