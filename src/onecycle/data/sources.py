"""Getting a dataset onto disk, verified: mirrors, md5 checks, safe tar extraction, one download at a time.

`SOURCES` says where each dataset downloads from and the md5s a verified copy has; `prepare`
makes a dataset ready under its root (download into a staging folder under an exclusive lock,
verify, rename into place) and `compare_with_official` reports how a user's own copy differs from
the official files. Reading the verified files is onecycle.data.formats' job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onecycle import io
from onecycle.data.catalog import FOLDER_DATASETS, IMAGENETTE_WNIDS, SPLITS, dataset_info, default_root
from onecycle.data.folder import class_folders
from onecycle.data.formats import _content_file, _load_sklearn_digits, _open_maybe_gzip, load_split


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
    An imagefolder `root` given explicitly holds the user's own images and is never downloaded
    into; an image folder's val/ and train/ must hold the same class folders.

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
    own_images = name == "imagefolder" and root is not None
    root = Path(root) if root is not None else default_root(name)
    if name == "digits":
        _load_sklearn_digits()
        return root
    source = SOURCES[name]
    if not _is_present(source, root):
        if not source.mirrors:
            raise FileNotFoundError(f"{name}: {root} lacks {_first_missing(source, root)}; {source.hint}")
        if own_images:  # a root given for imagefolder holds the user's images: Imagenette is not theirs
            raise FileNotFoundError(f"{name}: {root} lacks {_first_missing(source, root)}; {source.hint} "
                                    f"(Imagenette downloads only to the default root, {default_root(name)})")
        if not download:
            raise FileNotFoundError(f"{name}: {root} lacks {_first_missing(source, root)}; "
                                    f"call prepare({name!r}, download=True) or {source.hint}")
        with _exclusive_lock(root):
            if not _is_present(source, root):  # another process may have finished while we waited
                _download_and_install(name, source, root)
    if name in FOLDER_DATASETS:
        class_folders(root)  # val/ scores the classes train/ trains, no fewer and no more
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
