"""Typed, strict run configurations: one model per job kind, validated before any work starts.

A YAML typo or a bad value must fail at once, naming the key path (docs/design.md §3), not
after minutes of training. Models forbid unknown keys (with a close-match suggestion), refuse
strings where numbers belong (YAML 1.1 reads `1e-4` as a string), and check ranges. The files
themselves are read by onecycle.experiments.loading.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from onecycle.errors import ConfigError, excerpt
from onecycle.experiments.loading import load_mapping

Number = float
# Seeds are int64s: pandas and numpy hold them so in the runs tables (onecycle.report.runs), and
# torch.manual_seed takes them without overflow.
MAX_SEED = 2**63 - 1


class StrictModel(BaseModel):
    # strict=True: no silent str->float coercion, so YAML's `1e-4` (a string) is rejected;
    # ints are still accepted where floats are expected (pydantic allows int->float in strict mode).
    # allow_inf_nan=False: YAML's .inf and .nan are no setting of any float field.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataConfig(StrictModel):
    dataset: str
    root: str | None = None
    # SC Table 1 trains on 10k..40k of CIFAR-10's 50k images (docs/paper_reference.md A3).
    train_subset: int | None = Field(default=None, gt=0)
    # "mirror" = Smith's Caffe augmentation (mirror: true, crop = image size; docs/paper_reference.md D6).
    augment: Literal["none", "mirror", "pad_crop_mirror"] = "none"
    # On x/255: "mean_std" standardises per channel; "mean" subtracts the channel mean only.
    # Caffe's data layer on 0..255 pixels (onecycle.data.CaffeTransform): "caffe_mean_image"
    # subtracts the training set's per-pixel mean image, no scale, as Smith's CIFAR prototxts
    # (mean file, D6); "caffe_scale" multiplies by 1/256, no mean, as Caffe's LeNet (S12).
    # On ImageNet folders "mean_std" means torchvision's ImageNet presets and "caffe_mean_image"
    # Caffe's ImageNet data layer: 256x256 squashed images, fixed-size crops (random for
    # training, mirrored with augment "mirror"; centred for validation) minus the mean image
    # (onecycle.data.caffe_imagenet; docs/paper_reference.md C2 Imagenet/architectures).
    normalize: Literal["mean", "mean_std", "caffe_mean_image", "caffe_scale"] = "mean_std"
    # ImageNet folders only: the side of the crops; default the model's input size. Smith's
    # resnet50 and inception-resnet-v2 prototxts crop 230 (C2 Imagenet/architectures).
    crop_size: int | None = Field(default=None, gt=0)
    # Training order (onecycle.data.ORDERS; configs/paper.yaml G7): "reshuffle" draws a fresh
    # permutation per pass; "caffe_lmdb" reads as Caffe's data layer read its LMDB, in one fixed
    # order (the files' for MNIST/CIFAR, one shuffle for ImageNet folders), wrapping mid-batch.
    order: Literal["reshuffle", "caffe_lmdb"] = "reshuffle"
    # imagefolder only: the class folders to train on, by name (an ImageNet subset's WordNet ids;
    # default: Imagenette's 10), or "all": every class folder under train/, whatever its name
    # (your own dataset). (Full ILSVRC2012 is the `imagenet` dataset.)
    classes: list[str] | Literal["all"] | None = None

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from onecycle.data import DATASETS

        return _check_name(name, DATASETS, "dataset")

    @field_validator("classes", mode="before")
    @classmethod
    def _list_or_all(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all":
            raise ValueError("classes is a list of WordNet ids, or 'all'")
        return value

    @model_validator(mode="after")
    def _options_fit_the_dataset(self) -> DataConfig:
        from onecycle.data import DATASETS, FOLDER_DATASETS

        folder = self.dataset in FOLDER_DATASETS
        if self.classes is not None and self.dataset != "imagefolder":
            raise ValueError(f"classes is for imagefolder only, not {self.dataset!r}")
        if folder:
            _check_folder_preprocessing(self)
        elif self.crop_size is not None:
            raise ValueError(f"crop_size is for ImageNet folders; {self.dataset} is used at its own size")
        size = DATASETS[self.dataset].train_size
        if self.train_subset is not None and size is not None and self.train_subset > size:
            raise ValueError(f"train_subset = {self.train_subset} is more than the {size} training images of "
                             f"{self.dataset}")
        if self.normalize == "caffe_mean_image" and self.augment == "pad_crop_mirror":
            raise ValueError("normalize 'caffe_mean_image' goes with augment 'none' or 'mirror': "
                             "Caffe crops inside the image and never pads")
        return self


def _check_folder_preprocessing(data: DataConfig) -> None:
    # Keys the chosen pipeline would ignore are errors, not silently dropped.
    from onecycle.data.catalog import CAFFE_IMAGENET_SIDE

    if data.normalize == "mean_std":
        if data.augment != "none":
            raise ValueError(f"{data.dataset} with normalize 'mean_std' takes torchvision's ImageNet "
                             "presets, which fix the augmentation: leave augment unset")
    elif data.normalize == "caffe_mean_image":  # augment: pad_crop_mirror is refused as for CIFAR
        if data.crop_size is not None and data.crop_size > CAFFE_IMAGENET_SIDE:
            raise ValueError(f"crop_size = {data.crop_size} does not fit in Caffe's "
                             f"{CAFFE_IMAGENET_SIDE}x{CAFFE_IMAGENET_SIDE} ImageNet images")
    else:
        raise ValueError(f"{data.dataset} takes normalize 'mean_std' (torchvision's ImageNet presets) "
                         f"or 'caffe_mean_image' (Caffe's data layer), not {data.normalize!r}")


class ModelConfig(StrictModel):
    arch: str
    # Part 1 alternates Caffe's xavier and msra fillers over its 4 runs (docs/paper_reference.md D6);
    # "prototxt" uses the filler each layer's prototxt names (onecycle.models.INIT_SCHEMES).
    init: str = "default"
    # Architecture options, e.g. BN `moving_average_fraction` (0.95 for SC's CLR runs, 0.999
    # for its step runs; docs/paper_reference.md A3), the SC ResNets' `batch_norm` ("caffe" or
    # "torch"; issue 26) or DenseNet's `dropout`.
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, name: str) -> str:
        from onecycle.models import MODELS

        return _check_name(name, MODELS, "arch")

    @field_validator("init")
    @classmethod
    def _known_init(cls, name: str) -> str:
        from onecycle.models import INIT_SCHEMES

        return _check_name(name, INIT_SCHEMES, "init")

    @field_validator("options")
    @classmethod
    def _finite_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        return _finite_numbers(options)

    @model_validator(mode="after")
    def _known_options(self) -> ModelConfig:
        from onecycle.models import MODELS

        allowed = MODELS[self.arch].options
        for key in self.options:
            if key not in allowed:
                raise ValueError(f"unknown option {key!r} for arch {self.arch!r}{_suggest(key, allowed)}; "
                                 f"valid: {', '.join(allowed) or 'none'}")
        return self


class OptimConfig(StrictModel):
    # SC's main runs use plain momentum SGD, Part 1 uses Nesterov (docs/paper_reference.md D6).
    algorithm: Literal["sgd", "nesterov"] = "sgd"
    # "caffe": v = m*v + lr*(g + wd*w); w -= v  (LR inside the buffer; D6). "pytorch": torch.optim.SGD.
    update_rule: Literal["pytorch", "caffe"] = "pytorch"
    weight_decay: Number = Field(default=0.0, ge=0.0)
    # Caffe applied weight decay to every parameter, BN scale/shift included (D6).
    weight_decay_on: Literal["all", "weights_only"] = "all"
    # "prototxt": each parameter's lr_mult / decay_mult from the model's Caffe prototxt, as
    # Caffe's solver applied them (lr * lr_mult, weight_decay * decay_mult; docs/models.md,
    # e.g. biases at twice the LR, cifar3's classifier at 250 x the decay). "none": 1 and 1.
    multipliers: Literal["none", "prototxt"] = "none"
    # Used whenever the schedule itself sets no momentum.
    momentum: Number = Field(default=0.9, ge=0.0, lt=1.0)


class ScheduleConfig(StrictModel):
    policy: str
    # Parameter names follow the policy's source (Caffe solver names for Smith's and Caffe's
    # policies). A key ending in `_epochs` is given in epochs and converted to iterations
    # (`stepsize_epochs: 5` -> `stepsize`), as the papers' tables state stepsizes in epochs.
    params: dict[str, Any] = Field(default_factory=dict)
    # "config": the LRs in params (replicate the published setting). "range_test": base_lr and
    # max_lr come from a range test's bounds.json (replicate the method).
    lr_bounds: Literal["config", "range_test"] = "config"
    # With lr_bounds "range_test": the heuristic whose suggestion (median over the range-test
    # seeds) this run trains at, instead of the range test's own `bounds_rule` (a bounds study
    # trains at every rule's; onecycle.experiments.bounds_study).
    bounds_rule: str | None = None

    @field_validator("params")
    @classmethod
    def _finite_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        return _finite_numbers(params)

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, name: str) -> str:
        from onecycle.schedules import POLICIES

        return _check_name(name, POLICIES, "policy")

    @field_validator("bounds_rule")
    @classmethod
    def _known_rule(cls, name: str | None) -> str | None:
        from onecycle.bounds import SUGGESTION_RULES

        return None if name is None else _check_name(name, SUGGESTION_RULES, "bounds_rule")

    @model_validator(mode="after")
    def _rule_needs_range_test(self) -> ScheduleConfig:
        if self.bounds_rule is not None and self.lr_bounds != "range_test":
            raise ValueError(f"bounds_rule {self.bounds_rule!r} picks a range-test suggestion: set "
                             "lr_bounds: range_test, or drop bounds_rule")
        return self


class CaffeTestSpec(StrictModel):
    """Caffe's test phase (onecycle.data.CaffeTestSample; docs/paper_reference.md D6): test_iter x batch
    images per test, read on from the previous test, mirrored where the TEST data layer mirrors."""

    test_iter: int = Field(gt=0)
    batch: int = Field(gt=0)
    mirror: bool = False


class TrainConfig(StrictModel):
    batch_size: int = Field(gt=0)
    # Required for training (RunConfig checks it); a range test runs for its own iterations.
    epochs: int | None = Field(default=None, gt=0)
    eval_batch_size: int = Field(default=1000, gt=0)
    # Full-test-set evaluation every this many epochs (and always after the last one): long
    # runs on small subsets (SC Table 1's 10k-image rows run 2000 epochs) need fewer evaluations.
    eval_every_epochs: int = Field(default=1, gt=0)
    log_every: int = Field(default=10, gt=0)
    # A loss above this multiple of the first iteration's loss counts as divergence.
    divergence_factor: Number = Field(default=10.0, gt=1.0)
    # Checkpoints at every epoch end, and in between at most this often on long epochs.
    checkpoint_every_s: Number = Field(default=300.0, gt=0.0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # GPU speed options, off by default (the papers trained in fp32): bf16 autocast of the
    # forward pass and loss (LRN and batch-norm statistics stay fp32), and channels-last memory
    # layout for convolutions. `mode: fast` turns both on unless they are set.
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    # "deterministic": deterministic algorithms, or an error naming the op that has none (bit-for-
    # bit reruns on CPU, and on CUDA with cuBLAS's deterministic workspace). "fast": cuDNN
    # autotuning and TF32 on CUDA, bf16 and channels-last by default (onecycle.training.device).
    mode: Literal["deterministic", "fast"] = "deterministic"
    # torch.compile the model's forward and backward pass: fewer kernels per iteration on a GPU,
    # after a first iteration that compiles (minutes for large nets). Opt-in.
    compile: bool = False
    # Per-GPU batch norm: the batch is normalised in this many equal shards, as that many GPUs
    # each normalised their own part in the papers (docs/paper_reference.md D6: SC 8 x 125, Part 1
    # 4 x 128; CaffeBatchNorm2d.shards). Data-parallel processes share the shards out.
    batch_norm_shards: int = Field(default=1, gt=0)
    # The batch whose iterations per epoch (training images // it) count train.epochs and the
    # schedule's *_epochs keys; default batch_size. Part 1's x4.sh sizes one solver for all four
    # runs of a setting from the nominal TBS while each run feeds its own batch (C2), so
    # seed_protocol part1 sets the nominal TBS here: every run takes the same iterations.
    epoch_batch_size: int | None = Field(default=None, gt=0)
    # Also score every evaluation on Caffe's test sample (G5): extra history columns
    # caffe_test_loss / caffe_test_accuracy beside the full test set's, which stays the result.
    caffe_test: CaffeTestSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _fast_mode_speed_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") == "fast":
            return {"precision": "bf16", "channels_last": True, **data}
        return data

    @model_validator(mode="after")
    def _shards_divide_the_batch(self) -> TrainConfig:
        if self.batch_size % self.batch_norm_shards:
            raise ValueError(f"batch_size {self.batch_size} does not split into batch_norm_shards = "
                             f"{self.batch_norm_shards} equal parts")
        return self


class RangeTestSpec(StrictModel):
    # "linear": Smith's test (Caffe `triangular` with stepsize = max_iter, docs/paper_reference.md C1);
    # "exponential": fastai's / torch-lr-finder's.
    ramp: Literal["linear", "exponential"] = "linear"
    start_lr: Number = Field(ge=0.0)
    end_lr: Number = Field(gt=0.0)
    iterations: int = Field(gt=1)
    # Smith reads test accuracy and loss during the test, not only train loss (D2).
    eval_every: int = Field(default=10, gt=0)
    eval_subset: int = Field(default=1000, gt=0)
    # Optional momentum ramp [start, end] over the test (Part 1 Fig 7c, 14a: CM 0.95 -> 0.8).
    momentum_range: list[Number] | None = Field(default=None, min_length=2, max_length=2)
    smoothing: Number = Field(default=0.98, ge=0.0, lt=1.0)
    divergence_factor: Number = Field(default=4.0, gt=1.0)
    # Which suggestion feeds training, and how base_lr is derived from max_lr (D2).
    bounds_rule: str = "smith_accuracy_peak"
    policy_kind: Literal["1cycle", "clr"] = "1cycle"
    bounds_divisor: Number | None = Field(default=None, gt=1.0)

    @model_validator(mode="after")
    def _ramp_is_sane(self) -> RangeTestSpec:
        if self.end_lr == self.start_lr:
            # A momentum range test (Part 1 §4.3, Fig 7b): LR held, momentum ramped.
            if self.momentum_range is None:
                raise ValueError(f"end_lr equals start_lr ({self.start_lr}): give momentum_range for a "
                                 "momentum range test, or an end_lr above start_lr")
        elif self.end_lr < self.start_lr:
            raise ValueError(f"end_lr ({self.end_lr}) must be above start_lr ({self.start_lr})")
        if self.ramp == "exponential" and self.start_lr <= 0:
            raise ValueError("start_lr must be > 0 for an exponential ramp")
        # Up to 1 inclusive: Part 1's momentum range test (Fig 7b) ramps 0.7 -> 1.
        if self.momentum_range is not None and not all(0 <= m <= 1 for m in self.momentum_range):
            raise ValueError(f"momentum_range values must lie in [0, 1], got {self.momentum_range}")
        return self

    @field_validator("bounds_rule")
    @classmethod
    def _known_rule(cls, name: str) -> str:
        from onecycle.bounds import SUGGESTION_RULES

        return _check_name(name, SUGGESTION_RULES, "bounds_rule")


class _JobConfig(StrictModel):
    name: str = Field(min_length=1)
    experiment: str = ""
    group: str = ""
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = OptimConfig()
    train: TrainConfig

    @model_validator(mode="after")
    def _crop_fits_the_model(self) -> _JobConfig:
        from onecycle.data.catalog import CAFFE_IMAGENET_SIDE
        from onecycle.data import FOLDER_DATASETS
        from onecycle.models import MODELS

        if self.data.dataset not in FOLDER_DATASETS:
            return self
        info, crop = MODELS[self.model.arch], self.data.crop_size
        if crop is not None and crop != info.input_size and info.fixed_input_size:
            raise ValueError(f"data.crop_size = {crop}: {info.name} takes {info.input_size}x{info.input_size} "
                             "inputs only")
        if crop is None and self.data.normalize == "caffe_mean_image" and info.input_size > CAFFE_IMAGENET_SIDE:
            raise ValueError(f"{info.name}'s {info.input_size}x{info.input_size} inputs do not fit in Caffe's "
                             f"{CAFFE_IMAGENET_SIDE}x{CAFFE_IMAGENET_SIDE} images: set data.crop_size "
                             "(Smith's prototxts crop 230)")
        return self

    @model_validator(mode="after")
    def _caffe_options_need_a_caffe_port(self) -> _JobConfig:
        from onecycle.data import FOLDER_DATASETS
        from onecycle.models import MODELS

        if self.train.caffe_test is not None and self.data.dataset in FOLDER_DATASETS:
            raise ValueError(f"train.caffe_test is for in-memory datasets; {self.data.dataset} is "
                             "always scored on its whole validation set")

        if self.train.batch_norm_shards > 1 and self.model.options.get("batch_norm") == "torch":
            raise ValueError("train.batch_norm_shards > 1 needs Caffe's batch norm; model.options.batch_norm "
                             "'torch' is torch's (use 'caffe', or batch_norm_shards 1)")
        if MODELS[self.model.arch].caffe_port:
            return self
        arch = self.model.arch
        if self.model.init == "prototxt":
            raise ValueError(f"model.init 'prototxt' needs a Caffe port; {arch!r} has no prototxt fillers")
        if self.optim.multipliers == "prototxt":
            raise ValueError(f"optim.multipliers 'prototxt' needs a Caffe port; {arch!r} has no prototxt "
                             "multipliers (use 'none')")
        if self.train.batch_norm_shards > 1:
            raise ValueError(f"train.batch_norm_shards > 1 needs Caffe's batch norm (the Caffe ports); "
                             f"{arch!r} uses torch's")
        return self


class RunConfig(_JobConfig):
    """One training run (`onecycle train`)."""

    schedule: ScheduleConfig

    @model_validator(mode="after")
    def _has_epochs(self) -> RunConfig:
        if self.train.epochs is None:
            raise ValueError("train.epochs is required for a training run")
        return self


class RangeTestConfig(_JobConfig):
    """One LR range test (`onecycle range-test`); `train` supplies the batch size."""

    range_test: RangeTestSpec


def _finite_numbers(params: dict[str, Any]) -> dict[str, Any]:
    """Free-form parameters (schedule params, model options) hold no .inf or .nan, even in a list:
    `stepsize_epochs: .inf` would otherwise surface as an OverflowError deep in training."""
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{key} = {item}: expected a finite number")
    return params


def _check_name(name: str, registry: Any, what: str) -> str:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}{_suggest(name, registry)}; valid: {', '.join(sorted(registry))}")
    return name


def _suggest(key: str, candidates: Any) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _format_error(error: ValidationError, model: type[BaseModel], source: str) -> str:
    """Turn pydantic's multi-line report into one line naming the key path and the fix."""
    first = error.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        parent = model
        for part in first["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            parent = field.annotation if field is not None else None
        known = parent.model_fields if isinstance(parent, type) and issubclass(parent, BaseModel) else {}
        return f"{source}: unknown key '{path}'{_suggest(str(first['loc'][-1]), known)}"
    if kind == "missing":
        return f"{source}: missing required key '{path}'"
    value = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):  # a check across several keys of one section
        return f"{source}: {path + ': ' if path else ''}{message}"
    if kind == "float_type" and isinstance(value, str):
        message += " (YAML 1.1 reads 1e-4 as a string: write 1.0e-4)"
    return f"{source}: '{path}' = {excerpt(value)}: {message}"


def parse(model: type[StrictModel], data: Any, source: str = "config") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_error(error, model, source)) from None


def load_run_config(path: str | Path) -> RunConfig:
    return parse(RunConfig, load_mapping(path), str(path))


def load_range_test_config(path: str | Path) -> RangeTestConfig:
    return parse(RangeTestConfig, load_mapping(path), str(path))
