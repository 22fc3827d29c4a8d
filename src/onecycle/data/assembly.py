"""A run's data: train batches, test batches over the full test set, and what the model needs to know.

Assembles, from a run's `data` config, the sources (onecycle.data) into batches: in-memory
`Batches` for the small datasets; for ImageNet folders `CaffeCachedBatches` (Caffe's data
layer, from images squashed once) or `FolderBatches` (torchvision's presets); with the
normalisation the config names (the training images' statistics, or Caffe's scale or mean image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from onecycle import data as datasets
from onecycle.data.caffe_batches import CaffeCachedBatches
from onecycle.data.squash_cache import split_mean_image, squash_cache
from onecycle.errors import ConfigError
from onecycle.experiments.config import RunConfig
from onecycle.models import MODELS
from onecycle.training import processes


@dataclass
class DataBundle:
    train: Any  # data.Batches, CaffeCachedBatches or FolderBatches: __len__ and epoch(i)
    test: Any
    num_classes: int
    in_channels: int
    train_size: int  # training images, for epochs counted in another batch (epoch_batch_size)
    caffe_test: Any = None  # data.CaffeTestSample when train.caffe_test asks for it


def load_data(cfg: RunConfig | Any, device: torch.device, eval_subset: int | None = None) -> DataBundle:
    """Train batches (shuffled, augmented) and test batches over the full test set, or over a
    fixed subset of it when `eval_subset` is given (range tests only)."""
    d = cfg.data
    root = Path(d.root) if d.root else None
    info = datasets.DATASETS[d.dataset]
    train_set = datasets.load_split(d.dataset, "train", root, subset=d.train_subset, class_list=d.classes)
    test_set = datasets.load_split(d.dataset, "test", root, class_list=d.classes)
    if isinstance(train_set, datasets.FolderDataset):
        train, test = folder_batches(cfg, train_set, test_set, device)
        return DataBundle(train, test, train_set.num_classes, info.in_channels, len(train_set))
    if eval_subset is not None and eval_subset < len(test_set):
        # A fixed held-out subset, the same for every seed, so range tests are comparable.
        keep = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0))[:eval_subset]
        test_set = datasets.ArrayDataset(test_set.images[keep], test_set.labels[keep], test_set.num_classes)
    if cfg.train.batch_size > len(train_set):
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} is larger than the "
                          f"{len(train_set)} training images of {d.dataset}")
    common = {**normalisation(d, train_set, root), "device": device}
    train = datasets.Batches(train_set, cfg.train.batch_size, shuffle=True, drop_last=True,
                             augment=d.augment, seed=cfg.seed, order=d.order, **common)
    test = datasets.Batches(test_set, cfg.train.eval_batch_size, shuffle=False, drop_last=False,
                            augment="none", seed=0, **common)
    spec = cfg.train.caffe_test if eval_subset is None else None  # not for range tests
    caffe_test = None if spec is None else datasets.CaffeTestSample(
        test_set, test_iter=spec.test_iter, batch_size=spec.batch, mirror=spec.mirror, seed=cfg.seed, **common)
    return DataBundle(train, test, info.num_classes, info.in_channels, len(train_set), caffe_test)


def folder_batches(cfg: RunConfig | Any, train_set: datasets.FolderDataset, test_set: datasets.FolderDataset,
                   device: torch.device) -> tuple[Any, Any]:
    """(train, test) batches of an ImageNet folder: Caffe's data layer from the squashed-image
    caches (normalize 'caffe_mean_image'; built here if the workflow's caffe_cache job has not),
    or torchvision's ImageNet presets decoded in persistent DataLoader workers."""
    d = cfg.data
    # Decoding runs in up to 8 workers per process, never more than the job's cores (shared by
    # the data-parallel processes of a multi-GPU job).
    workers = max(1, min(8, len(os.sched_getaffinity(0)) // processes.world_size_from_env()))
    # Crops default to the side the model was built for (AlexNet 227, Inception-ResNet-v2 299).
    crop = d.crop_size or MODELS[cfg.model.arch].input_size
    if d.normalize != "caffe_mean_image":
        common = {"seed": cfg.seed, "num_workers": workers, "device": device}
        return (datasets.FolderBatches(train_set, cfg.train.batch_size, shuffle=True, drop_last=True, order=d.order,
                                       transform=datasets.torchvision_preset(train=True, crop_size=crop), **common),
                datasets.FolderBatches(test_set, cfg.train.eval_batch_size, shuffle=False, drop_last=False,
                                       transform=datasets.torchvision_preset(train=False, crop_size=crop),
                                       **{**common, "seed": 0}))
    # As for CIFAR: one mean file over the whole training split, even for a train_subset run.
    full = (datasets.load_split(d.dataset, "train", Path(d.root) if d.root else None, class_list=d.classes)
            if d.train_subset else train_set)
    train_cache, test_cache = squash_cache(full, workers), squash_cache(test_set, workers)
    common = {"mean_image": split_mean_image(full, train_cache), "crop_size": crop, "device": device}
    return (CaffeCachedBatches(train_set, train_cache, cfg.train.batch_size, shuffle=True, drop_last=True,
                               seed=cfg.seed, train=True, mirror=d.augment == "mirror", order=d.order, **common),
            CaffeCachedBatches(test_set, test_cache, cfg.train.eval_batch_size, shuffle=False, drop_last=False,
                               seed=0, train=False, mirror=False, **common))


def normalisation(d: Any, train_set: datasets.ArrayDataset, root: Path | None) -> dict[str, Any]:
    """`Batches` keywords for data.normalize, from the statistics of the training images."""
    if d.normalize == "caffe_scale":
        return {"caffe": datasets.CaffeTransform(scale=datasets.CAFFE_LENET_SCALE)}
    if d.normalize == "caffe_mean_image":
        # Smith's prototxts name one mean file, computed on the whole training set; SC's
        # reduced-data runs (Table 1) swap only the LMDB source, so a subset keeps that mean.
        full = datasets.load_split(d.dataset, "train", root) if d.train_subset else train_set
        return {"caffe": datasets.CaffeTransform(mean_image=full.mean_image())}
    return {"mean": train_set.channel_mean(),
            "std": train_set.channel_std() if d.normalize == "mean_std" else None}
