"""What one device does per second, for `onecycle plan`: an effective rate per job family.

A family is a kind of job whose cost per FLOP is alike: small nets on in-memory images pay
mostly for the host's ops per iteration (kernel launches, issue 28), large nets on image
folders for arithmetic and JPEG decoding. One TFLOP/s figure cannot price both. `make
gpu-check` (scripts/gpu_check.py) times each family's real path on the machine and writes its
rates to RATES_FILE: training (forward + backward) and evaluation (forward) TFLOP/s, FLOPs
counted as onecycle.experiments.cost counts them (data loading included in the time).

- "in_memory": datasets held in memory as uint8 batches (MNIST, Fashion-MNIST, CIFAR, digits),
  measured with SC's ResNet-56 and Caffe's semantics, as the paper config trains it;
- "image_folder": ImageNet-style folders through the DataLoader (imagefolder, imagenet),
  measured with ResNet-50.

Without a rates file (or for another device class) every family gets DEVICE_TFLOPS of its
class; `--tflops` sets one rate for everything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from onecycle import data as datasets
from onecycle.experiments.config import ConfigError

FAMILIES = ("in_memory", "image_folder")
# Effective training throughput per device class, TFLOP/s as counted here, when nothing better
# is known. "gpu": an assumption, about a third of the FP32 peak of a V100 (15.7) or an A100
# without TF32 (19.5; the default `train.mode: deterministic` turns TF32 off), as small CIFAR
# convnets reach; measure it with `make gpu-check`. "cpu": one core, measured on this project's
# 2-core CI machine (ResNet-56, batch 8, 1 thread: 5.8 GFLOP in 0.15 s = 38 GFLOP/s).
DEVICE_TFLOPS = {"gpu": 5.0, "cpu": 0.04}
# What scripts/gpu_check.py writes on a CUDA machine, relative to the working directory.
RATES_FILE = Path("results/gpu_check/rates.json")


@dataclass(frozen=True)
class FamilyRate:
    train_tflops: float
    eval_tflops: float
    source: str  # where the numbers come from, printed with the plan


@dataclass(frozen=True)
class Rates:
    families: dict[str, FamilyRate]

    def describe(self) -> str:
        """One line per family: its rates and their source."""
        return "\n".join(f"  {name}: {rate.train_tflops:g} TFLOP/s training, {rate.eval_tflops:g} evaluation "
                         f"({rate.source})" for name, rate in self.families.items())


def job_family(dataset: str) -> str:
    return "image_folder" if dataset in datasets.FOLDER_DATASETS else "in_memory"


def uniform(tflops: float, source: str) -> Rates:
    return Rates({name: FamilyRate(tflops, tflops, source) for name in FAMILIES})


def load_rates(device_class: str, tflops: float | None, rates_file: Path | None) -> Rates:
    """--tflops for every family, else what gpu-check measured for this device class (each
    family it measured; the default for the others), else the class's default."""
    if device_class not in DEVICE_TFLOPS:
        raise ConfigError(f"--device-class {device_class!r}: expected one of {', '.join(DEVICE_TFLOPS)}")
    if tflops is not None:
        if not (math.isfinite(tflops) and tflops > 0):
            raise ConfigError(f"--tflops {tflops}: expected a positive number of TFLOP/s")
        return uniform(tflops, "--tflops")
    default = uniform(DEVICE_TFLOPS[device_class],
                      f"the default for a {device_class}, onecycle.experiments.rates.DEVICE_TFLOPS")
    path = rates_file if rates_file is not None else RATES_FILE
    if not path.is_file():
        if rates_file is not None:
            raise ConfigError(f"{rates_file}: file not found (make gpu-check writes {RATES_FILE})")
        return default
    measured = _read(path)
    if measured["device_class"] != device_class:
        return default
    families = dict(default.families)
    for name, rate in measured["families"].items():
        source = f"{path}: {measured.get('device', '?')}, {rate.get('measured_with', '')}".rstrip(", ")
        families[name] = FamilyRate(rate["train_tflops"], rate["eval_tflops"], source)
    return Rates(families)


def _read(path: Path) -> dict:
    try:
        measured = json.loads(path.read_text(encoding="utf-8"))
        families = measured["families"]
        if not isinstance(measured["device_class"], str) or not isinstance(families, dict):
            raise TypeError("device_class must be a string and families a mapping")
        for name, rate in families.items():
            if name not in FAMILIES:
                raise ValueError(f"unknown family {name!r} (known: {', '.join(FAMILIES)})")
            for key in ("train_tflops", "eval_tflops"):
                value = rate[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                    raise ValueError(f"{name}.{key} = {value!r}: expected a positive number")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{path}: not a gpu-check rates record ({error})") from None
    return measured
