"""Write tiny datasets in the real on-disk formats, for tests of onecycle.data.

IDX: LeCun's MNIST format (big-endian magic 0x0000 08 <ndim>, big-endian uint32 sizes, bytes).
CIFAR: Krizhevsky's python batches, dicts with byte-string keys (Python 2 wrote str keys, which
read back as bytes) and numpy arrays pickled under the numpy-1 module name `numpy.core`.
ImageFolder: <root>/<split>/<wnid>/<image>, written with PIL.

`write_fixture_data` writes small copies of every dataset configs/paper.yaml and
configs/paper_imagenet.yaml read, in these formats (tests/test_paper_tiny.py; `make tiny` runs
both configs at tiny scale on them: `python tests/data_fixtures.py DIR`).
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from onecycle.data import IMAGENETTE_WNIDS


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


# Ten classes drawn apart (one colour each) so that a few iterations learn something and the
# range tests' accuracy curves are not flat.
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [128, 128, 128]])
ILSVRC_WNIDS = ("n01440764", "n01443537", "n01484850")  # any three: `imagenet` takes every class folder


def _labels(count: int) -> np.ndarray:
    return np.arange(count) % 10


def _noise(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-30, 31, size=shape)


def _colour_images(labels: np.ndarray, side: int, seed: int) -> np.ndarray:
    """uint8 (N, side, side, 3): each image its class's colour, plus noise."""
    pixels = PALETTE[labels][:, None, None, :] + _noise((len(labels), side, side, 3), seed)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _digit_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (N, 28, 28): a bright 8x8 block where the class puts it, plus noise."""
    images = np.clip(20 + _noise((len(labels), 28, 28), seed), 0, 255)
    for image, label in zip(images, labels):
        row, col = 3 + 14 * (label // 5), 1 + 5 * (label % 5)
        image[row:row + 8, col:col + 5] = 240
    return images.astype(np.uint8)


def _cifar_rows(labels: np.ndarray, seed: int) -> np.ndarray:
    return _colour_images(labels, 32, seed).transpose(0, 3, 1, 2).reshape(len(labels), -1)


def write_fixture_data(root: Path) -> None:
    """MNIST (IDX, gzipped), CIFAR-10/100 (python pickles), Imagenette and ILSVRC folders, small."""
    train, test = _labels(64), _labels(32)
    write_idx_dataset(root / "mnist", (_digit_images(train, 1), train.astype(np.uint8)),
                      (_digit_images(test, 2), test.astype(np.uint8)), gz=True)
    batches = [(_cifar_rows(_labels(16), 10 + i), _labels(16).tolist()) for i in range(5)]
    write_cifar10(root / "cifar10", batches, (_cifar_rows(test, 20), test.tolist()))
    # CIFAR-100's fine labels, ten of them used; coarse labels as CIFAR-100 pairs them (fine // 5).
    write_cifar100(root / "cifar100", (_cifar_rows(_labels(80), 30), _labels(80).tolist(), (_labels(80) // 5).tolist()),
                   (_cifar_rows(test, 31), test.tolist(), (test // 5).tolist()))
    for name, wnids, per_class in (("imagefolder", IMAGENETTE_WNIDS, {"train": 4, "val": 1}),
                                   ("imagenet", ILSVRC_WNIDS, {"train": 3, "val": 1})):
        for split, count in per_class.items():
            for label, wnid in enumerate(wnids):
                for i in range(count):
                    pixels = _colour_images(np.array([label]), 48, zlib.crc32(f"{name}/{split}/{wnid}/{i}".encode()))[0]
                    write_image(root / name / split / wnid / f"{wnid}_{i}.png", pixels[:40])


if __name__ == "__main__":  # make tiny
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data_fixtures.py DIR  (writes fixture copies of every dataset under DIR)")
    write_fixture_data(Path(sys.argv[1]))
