"""Decode once: every image of an ImageNet-folder split squashed to 256x256 uint8, in one file.

Caffe's own path (BVLC examples/imagenet/create_imagenet.sh): `convert_imageset` decoded and
squashed every JPEG once into an LMDB of 256x256 images, and training only cropped, mirrored and
subtracted the mean from those. The per-sample path instead decodes and squashes each JPEG again
in every epoch (~250 images/s per CPU core for Imagenette's sizes). This cache is the LMDB's
equivalent: `caffe_imagenet.squash` of every image of a split, in the split's sample order, as
one uint8 array (N, 3, 256, 256), lossless (the pixels the per-sample path computes, bit for
bit), read through a memory map; onecycle.data.caffe_batches forms the batches from it.

- Where: the Caffe cache folder of the data root (caffe_imagenet.cache_dir: under the root, or
  $ONECYCLE_MEAN_CACHE for a read-only root). Size: 196 608 bytes an image, 2.6 GB for
  Imagenette's two splits, 252 GB for ILSVRC2012's training split (as convert_imageset's LMDB).
- Key: a digest of SQUASH_FORMAT and every image's (path relative to the root, size, mtime_ns),
  in order. Any added, removed, renamed or rewritten file gives another key, hence a rebuild;
  hashing the contents would read every image (140 GB for ILSVRC) at each job's start to know
  whether the cache still holds. A tool that rewrites a file sets its mtime, so only a file
  changed in place with its size and nanosecond mtime restored by hand would go unseen.
- One file, `squash-<split>-<key>.u8` (`<split>`: a digest of the split's folder and class
  list): a HEADER_BYTES JSON header (format, key, count, shape), then the pixels. A rebuilt
  cache deletes its split's older files (a job still reading one keeps its pages until it
  ends), so a changed ILSVRC2012 copy does not leave 252 GB behind. Built into a temporary file, renamed into place (onecycle.io.atomic_path) under an
  exclusive lock, so a reader sees a whole cache or none; one that does not fit its header
  (truncated, overwritten, another format) is refused in one line naming the file.
- Built by the workflow's data job (`onecycle caffe-cache`, rule caffe_cache) with progress
  lines; a training job started by hand builds what is missing itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from onecycle import io
from onecycle.data.caffe_imagenet import CAFFE_IMAGENET_SIDE, cache_dir, mean_image, squash
from onecycle.data.folder import load_image

# Part of the key and the header: change it whenever `squash` or the file layout changes.
SQUASH_FORMAT = "onecycle squash cache v1: uint8 (N, 3, 256, 256), squash 256x256 bilinear no-antialias"
HEADER_BYTES = 4096  # the JSON header, padded with spaces; the pixels start here (page-aligned)
IMAGE_SHAPE = (3, CAFFE_IMAGENET_SIDE, CAFFE_IMAGENET_SIDE)
IMAGE_BYTES = int(np.prod(IMAGE_SHAPE))
# Progress lines while a cache is built: one every PROGRESS_EVERY_S seconds, and at the end.
PROGRESS_EVERY_S = 10.0


class SquashCache:
    """The squashed images of one split (`data.FolderDataset`), memory-mapped read-only.
    `images` is a uint8 tensor (N, 3, 256, 256) over the file; `rows(samples)` says where each
    sample of the split (or of a subset of it) lies."""

    def __init__(self, path: Path, paths: Sequence[str]) -> None:
        self.path = path
        count = _check_file(path, len(paths))
        # Copy-on-write mapping: lazy like a read-only one, and writable, which torch.from_numpy
        # asks for; nothing is ever written through it.
        array = np.memmap(path, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=(count, *IMAGE_SHAPE))
        self.images = torch.from_numpy(array)
        self._row = {sample: row for row, sample in enumerate(paths)}

    def __len__(self) -> int:
        return len(self._row)

    def rows(self, samples: Sequence[tuple[str, int]]) -> torch.Tensor:
        """int64 rows of `samples` ((path, label) pairs of the split this cache was built from)."""
        try:
            return torch.tensor([self._row[path] for path, _ in samples], dtype=torch.int64)
        except KeyError as error:
            raise ValueError(f"{error.args[0]}: not in the Caffe image cache {self.path}") from None

    def mean_image(self, chunk: int = 256) -> torch.Tensor:
        """float32 (3, 256, 256): the per-pixel mean, from exact integer sums (as
        caffe_imagenet.compute_mean_image, without decoding anything again)."""
        total = torch.zeros(IMAGE_SHAPE, dtype=torch.int64)
        for start in range(0, len(self.images), chunk):
            total += self.images[start:start + chunk].to(torch.int64).sum(dim=0)
        return (total.double() / len(self.images)).float()


def squash_cache(split: Any, num_workers: int = 0, log: TextIO | None = None) -> SquashCache:
    """The cache of `split` (a data.FolderDataset: split_dir, samples), built first if missing.
    Concurrent callers wait on one lock: one builds, the others read. Progress lines go to `log`
    (default: standard output, the job's log in the workflow)."""
    root = Path(split.split_dir).parent
    paths = [path for path, _ in split.samples]
    folder = cache_dir(root)
    split_id = _split_id(root, split)
    path = folder / f"squash-{split_id}-{cache_key(root, paths)}.u8"
    if not path.exists():  # written atomically: an existing file is complete (or refused below)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with io.exclusive_lock(path.with_suffix(".lock")):
                if not path.exists():
                    _build(path, paths, num_workers, log or sys.stdout)
                    for stale in folder.glob(f"squash-{split_id}-*.u8"):  # this split's older caches
                        if stale != path:
                            stale.unlink(missing_ok=True)
        except OSError as error:
            if error.filename is None or not Path(error.filename).is_relative_to(folder):
                raise  # an image that cannot be read, say: not the cache's fault
            raise ValueError(f"{folder}: cannot write the Caffe image cache ({error.strerror}); make it "
                             "writable or set $ONECYCLE_MEAN_CACHE to a writable folder") from None
    return SquashCache(path, paths)


def split_mean_image(split: Any, cache: SquashCache) -> torch.Tensor:
    """The mean file of a training split (cached by caffe_imagenet.mean_image), summed from its
    squashed images: the numbers compute_mean_image gets by decoding them all again."""
    return mean_image(Path(split.split_dir).parent, [path for path, _ in split.samples], compute=cache.mean_image)


def _split_id(root: Path, split: Any) -> str:
    """Digest of the split's folder (relative to the root) and class list: which split a cache
    file is of, whatever its images are now."""
    text = "\n".join([os.path.relpath(split.split_dir, root), *split.classes])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def cache_key(root: Path, paths: Sequence[str]) -> str:
    """Digest of SQUASH_FORMAT and each image's (relative path, size, mtime_ns), in order."""
    digest = hashlib.sha256(f"{SQUASH_FORMAT}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _header(path: Path, count: int) -> bytes:
    text = json.dumps({"format": SQUASH_FORMAT, "key": path.stem, "count": count,
                       "shape": list(IMAGE_SHAPE)})
    return text.encode().ljust(HEADER_BYTES)


def _check_file(path: Path, count: int) -> int:
    """`count` if the file at `path` is a whole cache of `count` images; else a one-line error."""
    fix = "delete it and run again (the workflow's caffe_cache job, or any job that reads it, rebuilds it)"
    with open(path, "rb") as stream:
        head = stream.read(HEADER_BYTES)
    size = path.stat().st_size
    expected = HEADER_BYTES + count * IMAGE_BYTES
    if head != _header(path, count) or size != expected:
        raise ValueError(f"{path}: corrupt Caffe image cache ({size} bytes, expected {expected} with the header "
                         f"of {count} images in format {SQUASH_FORMAT!r}); {fix}")
    return count


class _SquashInto(torch.utils.data.Dataset):
    """Image i squashed and written to row i of the cache file being built: each DataLoader worker
    writes its rows itself, so no pixels go through shared memory (Docker caps /dev/shm at 64 MB)."""

    def __init__(self, paths: Sequence[str], target: Path) -> None:
        self.paths, self.target, self._rows = paths, target, None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> int:
        if self._rows is None:  # opened once per worker process
            self._rows = np.memmap(self.target, dtype=np.uint8, mode="r+", offset=HEADER_BYTES,
                                   shape=(len(self.paths), *IMAGE_SHAPE))
        self._rows[index] = squash(load_image(self.paths[index])).numpy()
        return index

    def flush(self) -> None:
        if self._rows is not None:
            self._rows.flush()


def _build(path: Path, paths: Sequence[str], num_workers: int, log: TextIO) -> None:
    if not paths:
        raise ValueError("no images to cache")
    started = time.monotonic()
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as stream:
            stream.write(_header(path, len(paths)))
            stream.truncate(HEADER_BYTES + len(paths) * IMAGE_BYTES)
        dataset = _SquashInto(paths, tmp)
        loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=num_workers)
        done, last = 0, started
        for indices in loader:
            done += len(indices)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or done == len(paths):
                rate = done / max(now - started, 1e-9)
                print(f"squashing {Path(paths[0]).parent.parent}: {done}/{len(paths)} images, {rate:.0f}/s, "
                      f"ETA {(len(paths) - done) / rate:.0f} s", file=log, flush=True)
                last = now
        dataset.flush()  # rows written in this process (num_workers 0); workers' maps flush on exit
