"""Model registry: the networks of Smith's papers, by name, ported from their Caffe prototxts.

``build_model("resnet56", num_classes=10, init="msra")`` returns an ``nn.Module``. Every entry
names its source; docs/models.md tables the parameter counts and every deviation from the source.
Caffe ports (all but ``resnet50`` and ``inception_resnet_v2``) also know their prototxt's fillers
(``init="prototxt"``) and their per-parameter ``lr_mult`` / ``decay_mult``
(:func:`param_multipliers`).
GoogLeNet returns :class:`WithAuxiliary` in training mode; :func:`classification_loss` reduces it.
"""

from __future__ import annotations

from onecycle.lazy import lazy_attributes

from .catalog import INIT_SCHEMES, MODELS, ModelInfo

# The names that need torch -> their submodule, imported on first access, so that config checks,
# which read only the catalog, do not import torch (onecycle.lazy).
__getattr__ = lazy_attributes(__name__, {
    **dict.fromkeys(("build_model", "param_multipliers", "parameter_count"), "factory"),
    **dict.fromkeys(("CaffePort", "ParamMultipliers"), "layers"),
    **dict.fromkeys(("WithAuxiliary", "classification_loss"), "outputs"),
})

__all__ = [
    "INIT_SCHEMES",
    "MODELS",
    "CaffePort",
    "ModelInfo",
    "ParamMultipliers",
    "WithAuxiliary",
    "build_model",
    "classification_loss",
    "param_multipliers",
    "parameter_count",
]
