"""ImageNet-style folders (<split>/<wnid>/*.JPEG): the images stay on disk and DataLoader workers decode them.

`FolderDataset` lists a split's (path, class index) samples for a class list; `FolderBatches`
yields epochs with the interface of `Batches`, each sample transformed (`torchvision_preset`, or
caffe_imagenet's Caffe transform) under its own derived seed so augmentation does not depend on
the number of workers. These datasets are too large to hold in memory (`FOLDER_DATASETS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from onecycle.data.batches import _batch_count, _check_order, _epoch_generator, caffe_lmdb_pass, derived_seed
from onecycle.data.catalog import IMAGENET_MEAN, IMAGENET_STD, IMAGENETTE_WNIDS


_FOLDER_SPLIT_DIRS = {"train": "train", "test": "val"}
# `class_list` value for every class folder of the train split (data.classes: all).
ALL_CLASSES = "all"


@dataclass(frozen=True, eq=False)
class FolderDataset:
    """One split of an ImageNet-style folder (<split_dir>/<wnid>/*.JPEG), images left on disk."""
    split_dir: Path
    classes: tuple[str, ...]              # WordNet ids; position = class index
    samples: tuple[tuple[str, int], ...] = field(repr=False)  # (image path, class index)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)


class UnreadableImage(ValueError):
    """An image file PIL cannot read, named in one line. Raised in a DataLoader worker, it reaches
    the main process re-created from the worker's whole traceback text (torch's
    ExceptionWrapper.reraise): the constructor keeps the traceback's last line, the message."""

    def __init__(self, message: str) -> None:
        last = message.strip().splitlines()[-1] if message.strip() else message
        super().__init__(last.split(f"{type(self).__name__}: ", 1)[-1])


def load_image(path: str) -> Any:
    """An image file as an RGB PIL image (torchvision's default loader); UnreadableImage naming
    the file if it is not an image (text named .jpg, a truncated JPEG)."""
    from PIL import UnidentifiedImageError
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except UnidentifiedImageError:  # its message repeats the path, inside a file object's repr
        raise UnreadableImage(f"{path}: not an image PIL can read (no image format it knows)") from None
    except (OSError, ValueError, SyntaxError) as error:  # a truncated or damaged file of a known format
        raise UnreadableImage(f"{path}: not an image PIL can read ({error})") from None


def class_folders(root: Path) -> list[str]:
    """Every class folder of the train split, sorted: ImageNet's 1000 wnids in the class-index order
    torchvision's ImageFolder gives them. The val split must hold the same folders: a class that
    only one split has would be trained on but never scored, or scored but never trained on."""
    train_dir, val_dir = (root / _FOLDER_SPLIT_DIRS[split] for split in ("train", "test"))
    found = {}
    for folder in (train_dir, val_dir):
        if not folder.is_dir():
            raise ValueError(f"{folder} does not exist (an image folder holds train/<class>/ and val/<class>/)")
        found[folder.name] = {entry.name for entry in folder.iterdir() if entry.is_dir()}
    train, val = found[train_dir.name], found[val_dir.name]
    if train != val:
        raise ValueError(f"{root}: val/ and train/ hold different class folders: only in val/: "
                         f"{sorted(val - train)[:5]}, only in train/: {sorted(train - val)[:5]}")
    return sorted(train)


def _load_folder_split(root: Path, split: str, class_list: Sequence[str] | str | None) -> FolderDataset:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    if class_list == ALL_CLASSES:
        class_list = class_folders(root)
    classes = tuple(IMAGENETTE_WNIDS if class_list is None else class_list)
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"class_list={list(classes)} must be non-empty without repeats")
    split_dir = root / _FOLDER_SPLIT_DIRS[split]
    for wnid in classes:
        folder = split_dir / wnid
        if not folder.is_dir():
            raise ValueError(f"class {wnid!r}: folder {folder} does not exist")
    samples = make_dataset(str(split_dir), {wnid: i for i, wnid in enumerate(classes)},
                           extensions=IMG_EXTENSIONS, allow_empty=True)
    found = {label for _, label in samples}
    for i, wnid in enumerate(classes):
        if i not in found:
            raise ValueError(f"class {wnid!r}: folder {split_dir / wnid} holds no images")
    return FolderDataset(split_dir, classes, tuple(samples))


# Datasets read from ImageNet-style folders (FolderDataset / FolderBatches), not held in memory.
FOLDER_DATASETS = ("imagefolder", "imagenet")


# torchvision's ImageNet presets crop 224 from images resized to 256: eval crops keep that ratio
# at other sides (AlexNet's 227 from 259, Inception-ResNet-v2's 299 from 342, as timm's 0.875).
EVAL_CROP_RATIO = 224 / 256


def torchvision_preset(*, train: bool, crop_size: int = 224):
    """torchvision references/classification presets, PIL image -> normalised float32 tensor:
    train RandomResizedCrop + flip, eval Resize + CenterCrop, then ImageNet mean/std. (Smith's
    Caffe ImageNet runs used fixed crops of 256x256 images, mirror and a mean file instead:
    onecycle.data.caffe_imagenet.)"""
    from torchvision import transforms

    geometry = ([transforms.RandomResizedCrop(crop_size), transforms.RandomHorizontalFlip()] if train
                else [transforms.Resize(round(crop_size / EVAL_CROP_RATIO)), transforms.CenterCrop(crop_size)])
    return transforms.Compose([*geometry, transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class _SeededFolderImages(torch.utils.data.Dataset):
    """Sample i of an epoch is transformed under torch seed derived_seed("folder", seed, epoch, i),
    so augmentation does not depend on the number of workers or on which worker loads it."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform, epoch_seed: tuple[int, int]):
        self.samples, self.transform, self.epoch_seed = samples, transform, epoch_seed
        self.loader = load_image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = self.loader(path)
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(derived_seed("folder", *self.epoch_seed, index))
            return self.transform(image), label


class FolderBatches:
    """Epochs of (images, labels) batches from a `FolderDataset`, same interface as `Batches`.
    `transform` takes each decoded RGB PIL image to a float tensor (`torchvision_preset` or
    caffe_imagenet.CaffeImageNetTransform; picklable, for the workers). Images are decoded by
    `num_workers` DataLoader workers; epoch e's order (`pass_order`) is torch.randperm under
    derived_seed("folder-order", seed, e), or with order "caffe_lmdb" the stream of Caffe's data
    layer over one fixed permutation, the same for every run, as `convert_imageset --shuffle`
    wrote the ImageNet LMDB once (BVLC examples/imagenet/create_imagenet.sh)."""

    def __init__(self, dataset: FolderDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 transform: Callable[[Any], torch.Tensor], seed: int, num_workers: int = 4,
                 device: torch.device | str = "cpu", order: str = "reshuffle") -> None:
        _check_order(order, shuffle, drop_last)
        self._num_batches = _batch_count(len(dataset), batch_size, drop_last)
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.transform, self.seed, self.num_workers, self.order = transform, seed, num_workers, order
        self.device = torch.device(device)
        self._lmdb_order = (torch.randperm(len(dataset), generator=torch.Generator().manual_seed(
            derived_seed("folder-lmdb"))) if order == "caffe_lmdb" else None)

    def __len__(self) -> int:
        return self._num_batches

    def pass_order(self, epoch_index: int) -> torch.Tensor:
        """The dataset indices epoch `epoch_index` reads, in order (data-parallel ranks cut it)."""
        size = len(self.dataset)
        if self._lmdb_order is not None:
            return caffe_lmdb_pass(self._lmdb_order, epoch_index, self._num_batches * self.batch_size)
        generator = _epoch_generator("folder-order", self.seed, epoch_index)
        return torch.randperm(size, generator=generator) if self.shuffle else torch.arange(size)

    def epoch(self, epoch_index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.pass_order(epoch_index)
        loader = torch.utils.data.DataLoader(
            _SeededFolderImages(self.dataset.samples, self.transform, (self.seed, epoch_index)),
            batch_size=self.batch_size, sampler=order.tolist(), drop_last=self.drop_last,
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        for images, labels in loader:
            yield (images.to(self.device, non_blocking=True),
                   labels.to(self.device, non_blocking=True))
