"""ImageNet-style folders (<split>/<wnid>/*.JPEG): the images stay on disk and DataLoader workers decode them.

`FolderDataset` lists a split's (path, class index) samples for a class list; `FolderEpochs` is
what every folder loader shares (the epochs' orders, `batches_of`); `FolderBatches` yields
epochs with the interface of `Batches`, each sample decoded and transformed in persistent
DataLoader workers under its own derived seed, so augmentation does not depend on the number of
workers. torchvision's presets (`torchvision_preset`) decode with torchvision.io and ship uint8
crops, normalised per batch on the training device. Caffe's data layer reads squashed images
decoded once (onecycle.data.squash_cache, caffe_batches). These datasets are too large to hold
in memory (`catalog.FOLDER_DATASETS`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


# torchvision's ImageNet presets crop 224 from images resized to 256: eval crops keep that ratio
# at other sides (AlexNet's 227 from 259, Inception-ResNet-v2's 299 from 342, as timm's 0.875).
EVAL_CROP_RATIO = 224 / 256


def decode_rgb(path: str) -> torch.Tensor:
    """uint8 (3, H, W) RGB pixels of the image at `path`, decoded by torchvision.io (libjpeg-turbo,
    libpng); PIL for what it cannot read (ILSVRC2012 holds a few CMYK JPEGs), which names a file
    that is no image (`load_image`)."""
    from torchvision import io as tvio

    try:
        return tvio.decode_image(tvio.read_file(path), mode=tvio.ImageReadMode.RGB)
    except RuntimeError:
        from torchvision.transforms.v2.functional import pil_to_tensor

        return pil_to_tensor(load_image(path))


@dataclass(frozen=True)
class TorchvisionPreset:
    """torchvision references/classification presets on uint8 tensors: train RandomResizedCrop
    + flip, eval Resize + CenterCrop, with ImageNet mean/std applied per batch on the device
    (`normalise`), so workers ship uint8 crops, a quarter of float32's bytes. (Smith's Caffe
    ImageNet runs used fixed crops of 256x256 images, mirror and a mean file instead:
    onecycle.data.caffe_batches.)"""
    train: bool
    crop_size: int = 224
    decode = staticmethod(decode_rgb)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision import transforms

        crop = self.crop_size
        geometry = ([transforms.RandomResizedCrop(crop, antialias=True), transforms.RandomHorizontalFlip()]
                    if self.train else
                    [transforms.Resize(round(crop / EVAL_CROP_RATIO), antialias=True), transforms.CenterCrop(crop)])
        return transforms.Compose(geometry)(image)

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float32 (x/255 - mean)/std, as ToTensor and Normalize."""
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        return images.float().div_(255).sub_(mean).div_(std)


def torchvision_preset(*, train: bool, crop_size: int = 224) -> TorchvisionPreset:
    """torchvision's ImageNet preset for training or evaluation (`TorchvisionPreset`)."""
    return TorchvisionPreset(train, crop_size)


class _SeededFolderImages(torch.utils.data.Dataset):
    """Item (epoch, i) is sample i decoded by `transform.decode` and transformed under torch seed
    derived_seed("folder", seed, epoch, i), so augmentation does not depend on the number of
    workers or on which worker loads it, and persistent workers serve every epoch."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform, seed: int):
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = item
        path, label = self.samples[index]
        image = self.transform.decode(path)
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(derived_seed("folder", self.seed, epoch, index))
            return self.transform(image), label


class FolderEpochs:
    """What every folder loader shares: `len`, the order epoch e reads (`pass_order`) and its
    batches, `epoch(e)` = `batches_of(the order, batch_size, e)`. Epoch e's order is
    torch.randperm under derived_seed("folder-order", seed, e), or with order "caffe_lmdb" the
    stream of Caffe's data layer over one fixed permutation, the same for every run, as
    `convert_imageset --shuffle` wrote the ImageNet LMDB once (BVLC
    examples/imagenet/create_imagenet.sh). Data-parallel ranks cut the order and ask for their
    own part (`batches_of`, onecycle.training.distributed)."""

    def __init__(self, dataset: FolderDataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                 device: torch.device | str, order: str) -> None:
        _check_order(order, shuffle, drop_last)
        self._num_batches = _batch_count(len(dataset), batch_size, drop_last)
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.seed, self.order, self.device = seed, order, torch.device(device)
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
        if self.drop_last:
            order = order[: self._num_batches * self.batch_size]
        return self.batches_of(order, self.batch_size, epoch_index)

    def batches_of(self, indices: torch.Tensor, batch_size: int, epoch_index: int
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the dataset's samples `indices`, in order, `batch_size` at a time (the last
        one may be short), each augmented as in epoch `epoch_index`, on the device."""
        raise NotImplementedError


class _EpochPlan:
    """The DataLoader's batch sampler: the batches of (epoch, index) items it is set to. The
    sampler lives in the main process, so persistent workers serve any epoch it is set to."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FolderBatches(FolderEpochs):
    """Epochs of (images, labels) batches from a `FolderDataset`, same interface as `Batches`.
    `transform` decodes each image (its `decode`, from the path) and maps it to a tensor:
    `torchvision_preset` (uint8, normalised per batch on the device by its `normalise`) or
    caffe_imagenet.CaffeImageNetTransform (float32; the per-sample reference of Caffe's layer);
    picklable, for the workers. Images are decoded by `num_workers` DataLoader workers, started
    once and kept for every epoch (persistent_workers)."""

    def __init__(self, dataset: FolderDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 transform: Any, seed: int, num_workers: int = 4,
                 device: torch.device | str = "cpu", order: str = "reshuffle") -> None:
        super().__init__(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, device=device,
                         order=order)
        self.transform, self.num_workers = transform, num_workers
        self._normalise = getattr(transform, "normalise", None)
        self._plan = _EpochPlan()
        self._loader: torch.utils.data.DataLoader | None = None

    def batches_of(self, indices: torch.Tensor, batch_size: int, epoch_index: int
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        items = [(epoch_index, index) for index in indices.tolist()]
        self._plan.batches = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
        for images, labels in self._data_loader():
            images = images.to(self.device, non_blocking=True)
            yield (images if self._normalise is None else self._normalise(images),
                   labels.to(self.device, non_blocking=True))

    def _data_loader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:  # made once: its workers serve every epoch
            self._loader = torch.utils.data.DataLoader(
                _SeededFolderImages(self.dataset.samples, self.transform, self.seed), batch_sampler=self._plan,
                num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                pin_memory=self.device.type == "cuda")
        return self._loader
