"""Reading each on-disk format into memory: IDX (MNIST, Fashion-MNIST), CIFAR's python pickles, sklearn digits.

`load_split` turns a prepared dataset's split into an `ArrayDataset` (uint8 images and int64
labels in memory) or, for ImageNet-style folders, a `FolderDataset` read by onecycle.data.folder;
`subset` keeps a seeded, nested part of the train split. Every reader validates what it reads
(headers, sizes, label ranges) and the CIFAR unpickler accepts nothing but numpy arrays. How
a file is found and opened plain or gzipped lives here too, as sources' md5 checks read the
same files (sources imports this module, so not the other way round).
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onecycle.data.catalog import DATASETS, SPLITS, dataset_info, default_root
from onecycle.data.folder import ALL_CLASSES, FolderDataset, _load_folder_split


_GZIP_MAGIC = b"\x1f\x8b"  # IDX files start with two zero bytes, so the two cannot be confused


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as probe:
        is_gzip = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _content_file(root: Path, relative: str) -> Path | None:
    """The file `relative` under root, or its gzipped form `relative.gz` (how IDX files ship)."""
    for candidate in (root / relative, root / f"{relative}.gz"):
        if candidate.is_file():
            return candidate
    return None


@dataclass(eq=False)
class ArrayDataset:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def channel_mean(self) -> tuple[float, ...]:
        """Per-channel mean over all pixels, on the [0, 1] scale."""
        count, total, _ = self._channel_sums()
        return tuple(s / (count * 255) for s in total)

    def channel_std(self) -> tuple[float, ...]:
        """Per-channel population standard deviation (ddof 0) over all pixels, on the [0, 1] scale."""
        count, total, squares = self._channel_sums()
        # Exact integer sums, so the variance formula loses nothing to cancellation.
        return tuple(math.sqrt((count * q - s * s) / count**2) / 255 for s, q in zip(total, squares))

    def mean_image(self) -> torch.Tensor:
        """Per-pixel mean over all images, float32 (C, H, W) on the 0..255 scale: what Caffe's
        tools/compute_image_mean writes to a mean.binaryproto (exact integer sums, then / N)."""
        total = torch.zeros(self.images.shape[1:], dtype=torch.int64)
        for chunk in self.images.split(4096):
            total += chunk.to(device="cpu", dtype=torch.int64).sum(dim=0)
        return (total.double() / len(self)).float()

    def _channel_sums(self) -> tuple[int, list[int], list[int]]:
        channels = self.images.shape[1]
        total = torch.zeros(channels, dtype=torch.int64)
        squares = torch.zeros(channels, dtype=torch.int64)
        for chunk in self.images.split(4096):  # int64 copies of a chunk, not of the whole set
            wide = chunk.to(device="cpu", dtype=torch.int64)
            total += wide.sum(dim=(0, 2, 3))
            squares += (wide * wide).sum(dim=(0, 2, 3))
        count = self.images.shape[0] * self.images.shape[2] * self.images.shape[3]
        return count, total.tolist(), squares.tolist()


def load_split(name: str, split: str, root: Path | None = None, subset: int | None = None,
               subset_seed: int = 0, class_list: Sequence[str] | str | None = None
               ) -> ArrayDataset | FolderDataset:
    """Load `split` ("train" | "test") of dataset `name` from `root` (call `prepare` first).

    `subset` keeps the first `subset` examples of a permutation of the train split seeded by
    `subset_seed` (in their original order), so smaller subsets nest inside larger ones. SC
    Table 1 trains ResNet-56 on 10k..40k of CIFAR-10's 50k images (docs/paper_reference.md A3); how
    Smith drew his `train{10,20,30,40}k_lmdb` subsets is not documented (docs/paper_reference.md B2,
    Fig 6a), so ours are uniform random, not class-balanced. The test split is always
    evaluated whole. `class_list` (imagefolder only) picks ImageNet classes by WordNet id, in
    class-index order; default: Imagenette's ten; "all": every class folder under train/.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if subset is not None and split != "train":
        raise ValueError(f"subset={subset} on the {split!r} split: subsets are of the train split "
                         f"only; evaluation always uses the full test set")
    if class_list is not None and name != "imagefolder":
        raise ValueError(f"class_list is for imagefolder only, not {name!r} (imagenet has all its classes)")
    root = Path(root) if root is not None else default_root(name)
    if name in ("mnist", "fashion_mnist"):
        dataset = _load_idx_split(name, root, split, info.num_classes)
    elif name in ("cifar10", "cifar100"):
        dataset = _load_cifar_split(name, root, split, info.num_classes)
    elif name == "digits":
        dataset = _load_digits_split(split)
    else:
        dataset = _load_folder_split(root, split, ALL_CLASSES if name == "imagenet" else class_list)
    return dataset if subset is None else _take_subset(dataset, subset, subset_seed)


def _take_subset(dataset: ArrayDataset | FolderDataset, subset: int, seed: int
                 ) -> ArrayDataset | FolderDataset:
    if not 0 < subset <= len(dataset):
        raise ValueError(f"subset={subset} must be in 1..{len(dataset)} (the train split's size)")
    permutation = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    kept = permutation[:subset].sort().values
    if isinstance(dataset, ArrayDataset):
        return ArrayDataset(dataset.images[kept], dataset.labels[kept], dataset.num_classes)
    return FolderDataset(dataset.split_dir, dataset.classes,
                         tuple(dataset.samples[i] for i in kept.tolist()))


# IDX (LeCun et al.'s MNIST format): a big-endian magic number 0x0000 <type> <ndim>, then ndim
# big-endian uint32 sizes, then the data. Type 0x08 = unsigned byte, so labels (1-D) have magic
# 0x00000801 = 2049 and images (3-D) 0x00000803 = 2051.
IDX_LABELS_MAGIC = 2049
IDX_IMAGES_MAGIC = 2051


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file (gzipped or plain) into a uint8 array, validating header and size."""
    with _open_maybe_gzip(path) as stream:
        try:
            data = stream.read()
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: IDX magic number {magic}, expected {expected_magic} "
                         f"(wrong file or corrupt)")
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} of {header_size} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected_bytes = math.prod(shape)
    found_bytes = len(data) - header_size
    if found_bytes != expected_bytes:
        problem = "truncated" if found_bytes < expected_bytes else "has extra bytes"
        raise ValueError(f"{path}: {problem}: header says {shape} = {expected_bytes} data bytes, "
                         f"file has {found_bytes}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _load_idx_split(name: str, root: Path, split: str, num_classes: int) -> ArrayDataset:
    prefix = "train" if split == "train" else "t10k"
    images_path = _required_file(name, root, f"{prefix}-images-idx3-ubyte")
    labels_path = _required_file(name, root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    size = DATASETS[name].image_size
    if images.shape[1:] != (size, size):
        raise ValueError(f"{images_path}: images are {images.shape[1:]}, {name} has {size}x{size}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has "
                         f"{len(labels)} labels")
    _check_label_range(labels_path, labels, num_classes)
    return ArrayDataset(torch.from_numpy(images).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)), num_classes)


def _required_file(name: str, root: Path, relative: str) -> Path:
    path = _content_file(root, relative)
    if path is None:
        raise FileNotFoundError(f"{root}: no {relative} (or {relative}.gz); "
                                f"run onecycle.data.prepare({name!r}, root) first")
    return path


def _check_label_range(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if len(labels) == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{path}: label {low if low < 0 else high} outside 0..{num_classes - 1}")


_CIFAR_FILES = {  # folder, train files, test files, label key
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                ("test_batch",), "labels"),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "fine_labels"),
}
_CIFAR_PIXELS = 3 * 32 * 32


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR batches are pickles; allow only what a pickled numpy array needs, so a
    tampered file cannot run code. `numpy.core` is how the numpy-1 era files name it."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as stream:
            # latin1: the files were written by Python 2 (as torchvision loads them).
            batch = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable CIFAR python batch ({err})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, found {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(f"{path}: missing key {key!r} (has {sorted(batch)})")
    data, labels = batch["data"], np.asarray(batch[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _CIFAR_PIXELS:
        raise ValueError(f"{path}: 'data' must be uint8 (N, {_CIFAR_PIXELS}), found "
                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but {labels.size} {label_key!r}")
    _check_label_range(path, labels, num_classes)
    return data, labels


def _load_cifar_split(name: str, root: Path, split: str, num_classes: int) -> ArrayDataset:
    folder, train_files, test_files, label_key = _CIFAR_FILES[name]
    parts = [_read_cifar_batch(_required_file(name, root, f"{folder}/{file}"), label_key, num_classes)
             for file in (train_files if split == "train" else test_files)]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    # Rows are the red, then green, then blue 32x32 planes (cifar.html), i.e. already CHW.
    return ArrayDataset(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()),
                        torch.from_numpy(labels), num_classes)


DIGITS_TRAIN_SIZE = 1437  # 80 % of 1797, rounded; the other 360 are the test split


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("dataset 'digits' needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    return bunch.images, bunch.target


def _load_digits_split(split: str) -> ArrayDataset:
    """scikit-learn's 1797 8x8 digits; it has no split, so a fixed permutation (torch.randperm,
    seed 0) gives the first 1437 to train and the last 360 to test (~80/20).

    Pixel values are counts 0..16 (the UCI set's 4x4-block counts) and become uint8 by
    round(v * 255 / 16), half to even (8 -> 127.5 -> 128), so 16 maps to 255 like other images.
    """
    images, targets = _load_sklearn_digits()
    pixels = np.rint(images * 255.0 / 16.0).astype(np.uint8)
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))
    chosen = order[:DIGITS_TRAIN_SIZE] if split == "train" else order[DIGITS_TRAIN_SIZE:]
    return ArrayDataset(torch.from_numpy(pixels)[chosen].unsqueeze(1).contiguous(),
                        torch.from_numpy(targets.astype(np.int64))[chosen],
                        DATASETS["digits"].num_classes)
