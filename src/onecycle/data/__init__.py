"""Datasets: download and verify, load small ones as uint8 tensors, batch them with seeded augmentation.

Small datasets (MNIST, Fashion-MNIST, CIFAR-10/100, the 8x8 digits) live in memory as one uint8
tensor, on the GPU when there is one, and `Batches` augments whole batches with tensor ops: no
per-sample PIL work (docs/design.md §7; the approach of airbench's GPU-resident CifarLoader,
docs/design.md §11). ImageNet subsets cannot fit in memory and go through
torchvision's folder loader and a DataLoader (`FolderBatches`).

Every epoch's order and augmentation is a pure function of (seed, epoch index), so a run resumed
at an epoch boundary sees exactly the batches of an uninterrupted run with no RNG state to save.

Typical use::

    root = prepare("cifar10")                       # download once, verify md5s
    train = load_split("cifar10", "train", root)
    batches = Batches(train, 128, shuffle=True, drop_last=True, augment="mirror",
                      mean=train.channel_mean(), std=None, seed=0, device="cuda")
    for images, labels in batches.epoch(0): ...
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onecycle import io


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    train_size: int | None  # None for imagefolder: it depends on the class list
    test_size: int | None
    source: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info for info in (
        DatasetInfo("fashion_mnist", 10, 1, 28, 60_000, 10_000,
                    "Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747; "
                    "https://github.com/zalandoresearch/fashion-mnist"),
        DatasetInfo("mnist", 10, 1, 28, 60_000, 10_000,
                    "LeCun, Bottou, Bengio & Haffner 1998; http://yann.lecun.com/exdb/mnist/"),
        DatasetInfo("cifar10", 10, 3, 32, 50_000, 10_000,
                    "Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images; "
                    "https://www.cs.toronto.edu/~kriz/cifar.html"),
        DatasetInfo("cifar100", 100, 3, 32, 50_000, 10_000,
                    "Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images; "
                    "https://www.cs.toronto.edu/~kriz/cifar.html"),
        DatasetInfo("digits", 10, 1, 8, 1_437, 360,
                    "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), "
                    "as shipped by scikit-learn (sklearn.datasets.load_digits)"),
        DatasetInfo("imagefolder", 10, 3, 224, None, None,
                    "ImageNet (Russakovsky et al. 2015) subsets; default Imagenette, "
                    "https://github.com/fastai/imagenette"),
        # ILSVRC2012: 1 281 167 training and 50 000 validation images (Russakovsky et al. 2015,
        # Table 2), every class folder of the user's copy (the CLR paper's AlexNet/GoogLeNet).
        DatasetInfo("imagenet", 1000, 3, 224, 1_281_167, 50_000,
                    "ILSVRC2012 (Russakovsky et al. 2015), https://image-net.org/download.php"),
    )
}

# The ten ImageNet classes of Imagenette (fastai/imagenette README; torchvision.datasets.Imagenette),
# in sorted order, which is also the class-index order torchvision gives them.
IMAGENETTE_WNIDS: tuple[str, ...] = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)

# torchvision's references/classification presets normalise ImageNet with these statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Where Debian's `dataset-fashion-mnist` package puts the real IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

SPLITS = ("train", "test")


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def default_root(name: str) -> Path:
    """$ONECYCLE_DATA/<name>, else ./data/<name>; for fashion_mnist Debian's folder when installed."""
    dataset_info(name)
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return DEBIAN_FASHION_MNIST
    base = os.environ.get("ONECYCLE_DATA")
    return (Path(base) if base else Path.cwd() / "data") / name


# ----------------------------------------------------------------------------------------------
# Download and verification
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where a dataset downloads from and what a verified copy holds.

    `downloads` are checked against the md5 their publisher (as recorded by torchvision) gives;
    `contents` are checked on every `prepare`. Gzipped content files are checked on their
    decompressed bytes: Debian recompressed the Fashion-MNIST .gz files (their md5s differ from
    upstream's) but the IDX bytes inside are the upstream ones, and so is any copy a user gunzipped.
    """
    mirrors: tuple[str, ...]             # base URLs, tried in order
    downloads: dict[str, str]            # file name at the mirror -> md5 of that file
    contents: dict[str, str]             # path under the root -> md5 of its (decompressed) bytes
    extract: bool                        # the downloads are tar archives to extract
    archive_folder: str | None = None    # the folder inside the archive that becomes the root
    required_dirs: tuple[str, ...] = ()  # non-empty folders a present copy must have
    downloaded_dirs: tuple[str, ...] = ()  # and a fresh download must also have
    hint: str = ""                       # how to get the data by hand


_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_source(mirrors: tuple[str, ...], gz_md5s: tuple[str, ...], raw_md5s: tuple[str, ...],
                hint: str) -> Source:
    return Source(mirrors=mirrors,
                  downloads={f"{stem}.gz": md5 for stem, md5 in zip(_IDX_STEMS, gz_md5s)},
                  contents=dict(zip(_IDX_STEMS, raw_md5s)), extract=False, hint=hint)


def _cifar_folder_md5s(folder: str, pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    return {f"{folder}/{file}": md5 for file, md5 in pairs}


SOURCES: dict[str, Source] = {
    # .gz md5s: torchvision.datasets.MNIST / FashionMNIST `resources`. Decompressed md5s: the
    # widely recorded md5sums of the uncompressed official files (they match Debian's copy).
    "mnist": _idx_source(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
         "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
         "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"),
        "put the four IDX files (gzipped or not) from http://yann.lecun.com/exdb/mnist/ there"),
    "fashion_mnist": _idx_source(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
         "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
        "apt-get install dataset-fashion-mnist, or pass root= a folder with the four IDX files"),
    # md5s: torchvision.datasets.CIFAR10 / CIFAR100 (tgz_md5, train_list, test_list, meta).
    "cifar10": Source(
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        downloads={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
        contents=_cifar_folder_md5s("cifar-10-batches-py", (
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("test_batch", "40351d587109b95175f43aff81a1287e"),
            ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"))),
        extract=True,
        hint="extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz there"),
    "cifar100": Source(
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        downloads={"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
        contents=_cifar_folder_md5s("cifar-100-python", (
            ("train", "16019d7e3df5f24257cddd939b257f8d"),
            ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
            ("meta", "7973b15100ade9c7d40fb424638fde48"))),
        extract=True,
        hint="extract https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz there"),
    # Archive md5: torchvision.datasets.Imagenette `_ARCHIVES["320px"]`. Nobody publishes md5s
    # of the extracted images, so a download is checked by its archive md5 and its layout (every
    # Imagenette class folder under train/ and val/), and a user's own ImageNet folder by layout.
    "imagefolder": Source(
        mirrors=("https://s3.amazonaws.com/fast-ai-imageclas/",),
        downloads={"imagenette2-320.tgz": "3df6f0d01a2c9592104656642f5e78a3"},
        contents={}, extract=True, archive_folder="imagenette2-320",
        required_dirs=("train", "val"),
        downloaded_dirs=tuple(f"{split}/{wnid}" for split in ("train", "val")
                              for wnid in IMAGENETTE_WNIDS),
        hint="pass root= a folder with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"),
    # ImageNet needs a registration, so nothing downloads: a user's extracted copy is checked
    # by its layout (the val images sorted into class folders, e.g. by ILSVRC2012's valprep.sh).
    "imagenet": Source(
        mirrors=(), downloads={}, contents={}, extract=False, required_dirs=("train", "val"),
        hint="ImageNet cannot be downloaded without a registration at https://image-net.org: put "
             "ILSVRC2012 there as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (or set $ONECYCLE_DATA "
             "to the folder above an imagenet/ copy)"),
}


def prepare(name: str, root: Path | None = None, download: bool = True, verify: bool = True) -> Path:
    """Make dataset `name` ready and verified under `root` (default: `default_root(name)`); return root.

    A copy already there is verified (md5s of the raw files) and used as it is; `verify=False`,
    an explicit opt-in for a user's own copy that is not byte-identical to the official files (a
    re-packed or converted MNIST or CIFAR), skips those md5s and reads every split once instead,
    so that a copy in the wrong format still fails here (`compare_with_official` says how it
    differs, for the record). A download is always verified. Otherwise, under
    an exclusive lock on a sibling file `.<root name>.prepare.lock` (so concurrent callers
    download once and the others wait), the files download into a temporary sibling folder, are
    verified there and only then renamed to `root`: nobody ever sees a half-downloaded or
    half-extracted copy. digits ships with scikit-learn: nothing to download.
    """
    dataset_info(name)
    root = Path(root) if root is not None else default_root(name)
    if name == "digits":
        _load_sklearn_digits()
        return root
    source = SOURCES[name]
    if not _is_present(source, root):
        if not source.mirrors:
            raise FileNotFoundError(f"{name}: {root} lacks {_first_missing(source, root)}; {source.hint}")
        if not download:
            raise FileNotFoundError(f"{name}: {root} lacks {_first_missing(source, root)}; "
                                    f"call prepare({name!r}, download=True) or {source.hint}")
        with _exclusive_lock(root):
            if not _is_present(source, root):  # another process may have finished while we waited
                _download_and_install(name, source, root)
    if verify:
        _check_contents(source, root)
    else:
        for split in SPLITS:
            load_split(name, split, root)
    return root


def compare_with_official(name: str, root: Path) -> dict[str, dict[str, Any]]:
    """Each content file's md5 beside the official one, for a copy prepared with verify=False
    (folder datasets have none: {})."""
    source = SOURCES.get(name)
    files = source.contents.items() if source is not None else ()
    report = {}
    for relative, expected in files:
        path = _content_file(Path(root), relative)
        actual = _md5(path, decompress=True)
        report[relative] = {"md5": actual, "official_md5": expected, "matches": actual == expected}
    return report


def _is_present(source: Source, root: Path) -> bool:
    return _first_missing(source, root) is None


def _first_missing(source: Source, root: Path, dirs: Sequence[str] | None = None) -> str | None:
    for relative in source.contents:
        if _content_file(root, relative) is None:
            return relative
    for relative in source.required_dirs if dirs is None else dirs:
        folder = root / relative
        if not folder.is_dir() or not any(folder.iterdir()):
            return f"{relative}/"
    return None


def _content_file(root: Path, relative: str) -> Path | None:
    """The file `relative` under root, or its gzipped form `relative.gz` (how IDX files ship)."""
    for candidate in (root / relative, root / f"{relative}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _check_contents(source: Source, root: Path) -> None:
    for relative, expected in source.contents.items():
        _check_md5(_content_file(root, relative), expected, decompress=True)


def _check_md5(path: Path, expected: str, *, decompress: bool) -> None:
    actual = _md5(path, decompress=decompress)
    if actual != expected:
        raise ValueError(f"{path}: md5 {actual} does not match the expected {expected} "
                         f"(corrupt, truncated or not the official file); delete it and prepare again")


def _md5(path: Path, *, decompress: bool) -> str:
    digest = hashlib.md5()
    with _open_maybe_gzip(path) if decompress else open(path, "rb") as stream:
        try:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: unreadable, corrupt or truncated ({err})") from None
    return digest.hexdigest()


_GZIP_MAGIC = b"\x1f\x8b"  # IDX files start with two zero bytes, so the two cannot be confused


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as probe:
        is_gzip = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


@contextlib.contextmanager
def _exclusive_lock(root: Path) -> Iterator[None]:
    """io.exclusive_lock on a sibling lock file, `.<root name>.prepare.lock`."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with io.exclusive_lock(root.parent / f".{root.name}.prepare.lock"):
        yield


def _download_and_install(name: str, source: Source, root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: incomplete {name} folder (missing {_first_missing(source, root)}); "
                         f"delete it so prepare() can download into it, or pass another root")
    staging_prefix = f".{root.name}.download-"
    # We hold the lock, so any staging folder already there was left by a killed process.
    for stale in root.parent.glob(f"{staging_prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix, dir=root.parent))
    try:
        for filename, md5 in source.downloads.items():
            archive = _download_from_mirrors(name, source, filename, staging, root)
            _check_md5(archive, md5, decompress=False)
            if source.extract:
                _extract_tar(archive, staging)
                archive.unlink()
        ready = staging / source.archive_folder if source.archive_folder else staging
        missing = _first_missing(source, ready, source.required_dirs + source.downloaded_dirs)
        if missing is not None:
            raise ValueError(f"{name}: the download ({', '.join(source.downloads)}) lacks {missing}")
        _check_contents(source, ready)
        # rename(2) is atomic and replaces an empty directory, so `root` goes from absent (or
        # empty) to complete in one step.
        os.rename(ready, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_from_mirrors(name: str, source: Source, filename: str, folder: Path, root: Path) -> Path:
    errors = []
    for mirror in source.mirrors:
        try:
            _fetch(mirror + filename, folder, filename)
            return folder / filename
        except OSError as err:  # URLError and HTTPError are OSErrors
            errors.append(f"{mirror}: {err}")
    raise FileNotFoundError(f"{name}: not in {root} and downloading {filename} failed "
                            f"({'; '.join(errors)}); {source.hint}")


def _fetch(url: str, folder: Path, filename: str) -> None:
    """Download `url` to folder/filename (checksums are checked by the caller)."""
    from torchvision.datasets.utils import download_url  # deferred: torchvision imports slowly

    try:
        download_url(url, str(folder), filename)
    except RuntimeError as err:  # torchvision reports some HTTP failures this way
        raise OSError(str(err)) from err


def _extract_tar(archive: Path, destination: Path) -> None:
    """Extract with tarfile's "data" filter: members outside `destination`, links pointing out of
    it, devices and setuid bits are refused instead of written."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(destination, filter="data")
    except tarfile.FilterError as err:
        raise ValueError(f"{archive}: refusing unsafe member {err.tarinfo.name!r} ({err})") from None
    except (tarfile.ReadError, EOFError, zlib.error) as err:
        raise ValueError(f"{archive}: corrupt or truncated archive ({err})") from None


# ----------------------------------------------------------------------------------------------
# In-memory datasets
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Batching with seeded, batched augmentation
# ----------------------------------------------------------------------------------------------

AUGMENTATIONS = ("none", "mirror", "pad_crop_mirror")
# He et al. 2016 (arXiv:1512.03385) §4.2: "4 pixels are padded on each side, and a 32x32 crop is
# randomly sampled from the padded image or its horizontal flip".
CROP_PADDING = 4


def derived_seed(*parts: str | int) -> int:
    """A 64-bit seed from a tuple: sha256 of the parts joined by ':' (first 8 bytes, little-endian).

    Hashing keeps nearby tuples such as (seed 0, epoch 1) and (seed 1, epoch 0) unrelated.
    """
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _epoch_generator(kind: str, seed: int, epoch_index: int) -> torch.Generator:
    if not isinstance(epoch_index, int) or epoch_index < 0:
        raise ValueError(f"epoch_index must be a non-negative int, got {epoch_index!r}")
    return torch.Generator().manual_seed(derived_seed(kind, seed, epoch_index))


def _batch_count(size: int, batch_size: int, drop_last: bool) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if size == 0:
        raise ValueError("the dataset is empty")
    if drop_last and batch_size > size:
        raise ValueError(f"batch_size={batch_size} exceeds the dataset's {size} examples "
                         f"with drop_last: no batch at all")
    return size // batch_size if drop_last else -(-size // batch_size)


# How training passes order the examples (data.order; configs/paper.yaml G7). "reshuffle": a
# fresh seeded permutation per pass. "caffe_lmdb": Caffe's data layer, which reads its LMDB front
# to back in the order the converter wrote it, the cursor wrapping at the end: the same order
# every pass, each pass starting where the previous one stopped (`caffe_lmdb_pass`).
ORDERS = ("reshuffle", "caffe_lmdb")


def _check_order(order: str, shuffle: bool, drop_last: bool) -> None:
    if order not in ORDERS:
        raise ValueError(f"order={order!r}; expected one of {ORDERS}")
    if order == "caffe_lmdb" and not (shuffle and drop_last):
        raise ValueError("order 'caffe_lmdb' is a training order: it needs shuffle=True and drop_last=True")


def caffe_lmdb_pass(lmdb_order: torch.Tensor, pass_index: int, count: int) -> torch.Tensor:
    """The `count` example indices Caffe's data layer reads in pass `pass_index` of an LMDB that
    holds the examples in `lmdb_order`: pass p reads positions p * count ... p * count + count - 1,
    modulo the LMDB's length, so consecutive passes continue one stream of batches."""
    if not 0 < count <= len(lmdb_order):
        raise ValueError(f"count={count} must be in 1..{len(lmdb_order)}")
    start = (pass_index * count) % len(lmdb_order)
    return torch.roll(lmdb_order, -start)[:count]


@dataclass(frozen=True, eq=False)
class CaffeTransform:
    """Caffe's DataTransformer (src/caffe/data_transformer.cpp) on 0..255 pixels:
    out = (x - mean_image) * scale.

    Caffe subtracts the mean at each pixel's *source* position and then writes the pixel to its
    mirrored position, so a mirrored image is mirror(x - mean_image), not mirror(x) - mean_image.
    Smith's CIFAR runs use a mean file and no scale (inputs about -128..128; docs/paper_reference.md
    D6); Caffe's LeNet uses no mean and scale 0.00390625 = 1/256 (BVLC/caffe
    examples/mnist/lenet_train_test.prototxt, S12).
    """
    scale: float = 1.0
    mean_image: torch.Tensor | None = None  # float32 (C, H, W), 0..255: ArrayDataset.mean_image()


# Caffe LeNet's data layer `scale: 0.00390625` (BVLC/caffe examples/mnist/lenet_train_test.prototxt).
CAFFE_LENET_SCALE = 0.00390625


class Batches:
    """Epochs of (images, labels) batches from an in-memory `ArrayDataset`.

    The uint8 images move to `device` once. Per batch they are indexed, augmented with batched
    tensor ops and normalised to float32, either as (x/255 - mean)/std or, with `caffe`, as
    Caffe's data layer did (`CaffeTransform`).

    augment:
      "none";
      "mirror": each image flipped left-right with probability 1/2, nothing else. This is how
        Smith's Caffe runs augment CIFAR (`mirror: true`, crop size = image size, no padding;
        docs/paper_reference.md D6, A3);
      "pad_crop_mirror": CROP_PADDING zero pixels on each side, a random crop back to size, then
        the random flip (He et al. 2016 §4.2, the common variant).
    std None subtracts the mean only; a per-channel mean then stands in for Caffe's per-pixel
    mean image, which `caffe=CaffeTransform(mean_image=...)` subtracts exactly (docs/paper_reference.md D6).

    Epoch e's order, flips and crop offsets are drawn, in that order, at its start from a CPU
    torch.Generator seeded with derived_seed("batches", seed, e): a pure function of (seed,
    epoch), the same on every device, with no RNG state to checkpoint. With order "caffe_lmdb"
    the order is instead the stream of Caffe's data layer over the dataset in its files' order
    (`caffe_lmdb_pass`), as Caffe's MNIST and CIFAR converters wrote their LMDBs.
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 augment: str = "none", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, caffe: CaffeTransform | None = None,
                 seed: int, device: torch.device | str = "cpu", order: str = "reshuffle") -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment={augment!r}; expected one of {AUGMENTATIONS}")
        _check_order(order, shuffle, drop_last)
        if (mean is None) == (caffe is None):
            raise ValueError("give either mean (and std) or caffe, not both or neither")
        self._num_batches = _batch_count(len(dataset), batch_size, drop_last)
        channels = dataset.images.shape[1]
        self.device = torch.device(device)
        self._mean = self._std = self._mean_image = None
        if caffe is not None:
            self._scale = float(caffe.scale)
            if caffe.mean_image is not None:
                if tuple(caffe.mean_image.shape) != tuple(dataset.images.shape[1:]):
                    raise ValueError(f"mean_image has shape {tuple(caffe.mean_image.shape)}, the images "
                                     f"{tuple(dataset.images.shape[1:])}")
                if augment == "pad_crop_mirror":
                    # Caffe crops inside the image and its mean file; it has no zero padding.
                    raise ValueError("a Caffe mean image goes with augment 'none' or 'mirror', "
                                     "not 'pad_crop_mirror' (Caffe never pads)")
                self._mean_image = caffe.mean_image.to(self.device, torch.float32).unsqueeze(0)
        else:
            self._mean = _channel_vector("mean", mean, channels, self.device)
            self._std = None if std is None else _channel_vector("std", std, channels, self.device)
            if self._std is not None and bool((self._std <= 0).any()):
                raise ValueError(f"std={tuple(std)} must be positive")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.seed, self.order = augment, seed, order
        self._images = dataset.images.to(self.device)
        self._labels = dataset.labels.to(self.device)

    def __len__(self) -> int:
        return self._num_batches

    def epoch(self, epoch_index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = len(self._labels)
        generator = _epoch_generator("batches", self.seed, epoch_index)
        if self.order == "caffe_lmdb":  # Caffe's MNIST and CIFAR converters keep the files' order
            order = caffe_lmdb_pass(torch.arange(size), epoch_index, self._num_batches * self.batch_size)
        else:
            order = torch.randperm(size, generator=generator) if self.shuffle else torch.arange(size)
        flips = offsets = None
        if self.augment != "none":
            flips = (torch.rand(size, generator=generator) < 0.5).to(self.device)
        if self.augment == "pad_crop_mirror":
            offsets = torch.randint(0, 2 * CROP_PADDING + 1, (size, 2), generator=generator)
            offsets = offsets.to(self.device)
        order = order.to(self.device)
        for b in range(self._num_batches):
            window = slice(b * self.batch_size, (b + 1) * self.batch_size)
            indices = order[window]
            images = self._images.index_select(0, indices)
            if offsets is not None:
                images = _crop_windows(images, offsets[window], CROP_PADDING)
            flipped = None if flips is None else flips[window].view(-1, 1, 1, 1)
            if flipped is not None:
                images = torch.where(flipped, images.flip(-1), images)
            yield self._normalise(images, flipped), self._labels.index_select(0, indices)

    def select(self, indices: torch.Tensor, flips: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images `indices` (CPU int64), each flipped where `flips` (CPU bool) says, normalised as
        every batch is; no crops. For samples that are not an epoch's (CaffeTestSample)."""
        indices = indices.to(self.device)
        images = self._images.index_select(0, indices)
        flipped = None if flips is None else flips.to(self.device).view(-1, 1, 1, 1)
        if flipped is not None:
            images = torch.where(flipped, images.flip(-1), images)
        return self._normalise(images, flipped), self._labels.index_select(0, indices)

    def _normalise(self, images: torch.Tensor, flipped: torch.Tensor | None) -> torch.Tensor:
        if self._mean is None:  # Caffe's transform, on the 0..255 scale
            pixels = images.float()
            if self._mean_image is not None:
                mean = self._mean_image
                if flipped is not None:  # mirror(x - mean): a flipped image loses the flipped mean
                    mean = torch.where(flipped, mean.flip(-1), mean)
                pixels.sub_(mean)
            return pixels.mul_(self._scale) if self._scale != 1.0 else pixels
        scaled = images.float().div_(255).sub_(self._mean)
        return scaled if self._std is None else scaled.div_(self._std)


class CaffeTestSample:
    """The images of Caffe's test phases (docs/paper_reference.md D6): each test scores `test_iter`
    batches of `batch_size` images read in order from the test set, the reader's cursor going on
    from where the previous test stopped and wrapping at the end (SC: 200 x 125 = 25 000 images
    of the 10k set; Part 1: 200 x 32 = 6 400). With `mirror` (hyperParam1's TEST data layers)
    each image is flipped with probability 1/2, after the mean is subtracted (`CaffeTransform`).

    `epoch(k)` yields the k-th test's batches: it starts at image k * test_iter * batch_size
    (mod the set's size), and its flips are drawn from derived_seed("caffe-test", seed, k), a
    pure function of the evaluation's index, so a resumed run scores the same images. The
    cursor advances per evaluation of this suite; Caffe's also counted its test at iteration 0
    and tested every test_interval iterations, so which window a given evaluation sees differs
    from Caffe's, not how many images or how they are drawn.
    """

    def __init__(self, dataset: ArrayDataset, *, test_iter: int, batch_size: int, mirror: bool,
                 caffe: CaffeTransform | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        for name, value in (("test_iter", test_iter), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.test_iter, self.batch_size, self.mirror, self.seed = test_iter, batch_size, mirror, seed
        self.drop_last = False  # for distributed sharding: every batch is a whole test batch
        # The normalisation of `Batches`, on the same device, over the whole test set in order.
        self._all = Batches(dataset, batch_size, shuffle=False, drop_last=False, mean=mean, std=std,
                            caffe=caffe, seed=seed, device=device)
        self._size = len(dataset)

    def __len__(self) -> int:
        return self.test_iter

    def epoch(self, test_index: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images = self.test_iter * self.batch_size
        start = (test_index * images) % self._size
        order = (start + torch.arange(images)) % self._size
        generator = _epoch_generator("caffe-test", self.seed, test_index)
        flips = (torch.rand(images, generator=generator) < 0.5) if self.mirror else None
        for b in range(self.test_iter):
            window = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield self._all.select(order[window], None if flips is None else flips[window])


def _channel_vector(what: str, values: Sequence[float], channels: int, device: torch.device
                    ) -> torch.Tensor:
    values = tuple(float(v) for v in values)
    if len(values) != channels:
        raise ValueError(f"{what}={values} has {len(values)} entries for {channels} channels")
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, channels, 1, 1)


def _crop_windows(images: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad every image by `padding` and cut one HxW window each, at (row, col) `offsets`."""
    count, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = offsets[:, 0:1] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(width, device=images.device)   # (B, W)
    return padded[torch.arange(count, device=images.device).view(-1, 1, 1, 1),
                  torch.arange(channels, device=images.device).view(1, -1, 1, 1),
                  rows.view(count, 1, height, 1),
                  cols.view(count, 1, 1, width)]


# ----------------------------------------------------------------------------------------------
# ImageNet subsets from folders
# ----------------------------------------------------------------------------------------------

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


def _load_folder_split(root: Path, split: str, class_list: Sequence[str] | str | None) -> FolderDataset:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    if class_list == ALL_CLASSES:
        # Every class folder of the train split, sorted: ImageNet's 1000 wnids in the class-index
        # order torchvision's ImageFolder gives them. The val split must hold the same folders.
        train_dir = root / _FOLDER_SPLIT_DIRS["train"]
        if not train_dir.is_dir():
            raise ValueError(f"class_list 'all': {train_dir} does not exist")
        class_list = sorted(entry.name for entry in train_dir.iterdir() if entry.is_dir())
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
        from torchvision.datasets.folder import default_loader  # PIL, converted to RGB

        self.samples, self.transform, self.epoch_seed = samples, transform, epoch_seed
        self.loader = default_loader

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
