"""Write tiny datasets in the real on-disk formats, for tests of onecycle.data.

IDX: LeCun's MNIST format (big-endian magic 0x0000 08 <ndim>, big-endian uint32 sizes, bytes).
CIFAR: Krizhevsky's python batches, dicts with byte-string keys (Python 2 wrote str keys, which
read back as bytes) and numpy arrays pickled under the numpy-1 module name `numpy.core`.
ImageFolder: <root>/<split>/<wnid>/<image>, written with PIL.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def random_uint8(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    data = idx_bytes(array)
    target = path.with_name(path.name + ".gz") if gz else path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(gzip.compress(data) if gz else data)
    return target


def write_idx_dataset(root: Path, train: tuple[np.ndarray, np.ndarray],
                      test: tuple[np.ndarray, np.ndarray], *, gz: bool) -> None:
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)


def cifar_pickle(batch: dict) -> bytes:
    # Protocol 2 names globals in text lines, so renaming numpy's module keeps the stream valid.
    return pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray\n",
                                                   b"numpy.core.multiarray\n")


def write_cifar10(root: Path, train_batches: list[tuple[np.ndarray, list[int]]],
                  test: tuple[np.ndarray, list[int]]) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    named = [(f"data_batch_{i + 1}", batch) for i, batch in enumerate(train_batches)]
    for file, (data, labels) in [*named, ("test_batch", test)]:
        batch = {b"batch_label": file.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
        (folder / file).write_bytes(cifar_pickle(batch))
    meta = {b"num_cases_per_batch": len(train_batches[0][1]),
            b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(cifar_pickle(meta))
    return folder


def write_cifar100(root: Path, train: tuple[np.ndarray, list[int], list[int]],
                   test: tuple[np.ndarray, list[int], list[int]]) -> Path:
    """train/test: (data, fine_labels, coarse_labels)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for file, (data, fine, coarse) in (("train", train), ("test", test)):
        batch = {b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
                 b"batch_label": file.encode(), b"fine_labels": fine, b"coarse_labels": coarse,
                 b"data": data}
        (folder / file).write_bytes(cifar_pickle(batch))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(cifar_pickle(meta))
    return folder


def write_image(path: Path, pixels: np.ndarray) -> None:
    """pixels: uint8 (H, W, 3); the suffix picks the format (PNG is lossless, JPEG is not)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="RGB").save(path)


def write_image_folder(root: Path, classes: list[str], per_class: int, size: tuple[int, int],
                       seed: int) -> dict[Path, np.ndarray]:
    """train/ and val/ trees with `per_class` images per class, alternating PNG and JPEG.
    Returns the pixels of every PNG written."""
    written = {}
    for split_index, split in enumerate(("train", "val")):
        for class_index, wnid in enumerate(classes):
            for i in range(per_class):
                pixels = random_uint8((*size, 3), seed + 1000 * split_index + 100 * class_index + i)
                path = root / split / wnid / f"{wnid}_{i}.{'png' if i % 2 == 0 else 'JPEG'}"
                write_image(path, pixels)
                if path.suffix == ".png":
                    written[path] = pixels
    return written


def tar_gz(archive: Path, folder: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def md5_of_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5_of_file(path: Path) -> str:
    return md5_of_bytes(path.read_bytes())
