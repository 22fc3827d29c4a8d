"""Caffe's ImageNet data layer for ImageNet-style folders (`data.normalize: caffe_mean_image`).

Smith's ImageNet runs, like BVLC's, read an LMDB that `convert_imageset` filled with every image
squashed to 256x256 (BVLC/caffe examples/imagenet/create_imagenet.sh, RESIZE_HEIGHT =
RESIZE_WIDTH = 256, no aspect kept), and a mean file that `compute_image_mean` wrote over that
LMDB. Caffe's DataTransformer then takes, per image and on 0..255 pixels (scale 1):

- TRAIN: a random crop_size x crop_size window (offsets uniform in 0..256-crop_size), the mean
  image subtracted at each pixel's source position, and a left-right mirror with probability
  1/2 when the prototxt says `mirror: true`;
- TEST: the centre window ((256 - crop_size) // 2 offsets), mean subtracted, and the same
  coin-flip mirror if the TEST layer says `mirror: true` (BVLC's do not; Smith's ImageNet TEST
  layers are not published, so the workflow validates unmirrored).

Crops: 227 for bvlc_alexnet, 224 for bvlc_googlenet, 230 for Smith's resnet50 and
inception-resnet-v2 (docs/paper_reference.md C2, Imagenet/architectures).

Differences that remain, documented rather than hidden:
- images are squashed with torchvision's bilinear resize without antialiasing (OpenCV's
  INTER_LINEAR, which convert_imageset uses, samples the same but rounds in fixed point, so
  pixels can differ by 1);
- JPEGs are decoded by PIL, not OpenCV (levels can differ by 1, EXIF orientation may differ);
- channels stay RGB (Caffe's are BGR, a permutation the first layer's i.i.d. initialisation
  cannot tell apart);
- the mean is summed exactly in float64 (compute_image_mean sums in float32);
- the data order is this suite's (configs/paper.yaml G7).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from onecycle import io
from onecycle.data.catalog import CAFFE_IMAGENET_SIDE
from onecycle.data.folder import load_image

# Mean images are cached, keyed by the image list, so the hundreds of jobs of a paper run
# compute each mean once (as the papers' single mean.binaryproto): under the data root, or
# under $ONECYCLE_MEAN_CACHE for a read-only root (a shared ILSVRC2012 copy, say). The squashed
# images (onecycle.data.squash_cache) are cached in the same folder.
MEAN_CACHE_DIR = ".onecycle-caffe-mean"
MEAN_CACHE_ENV = "ONECYCLE_MEAN_CACHE"
# Part of the cache key: change it whenever `squash` or `compute_mean_image` changes, so that no
# mean computed the old way is reused.
MEAN_FORMAT = "squash 256x256 bilinear no-antialias; exact float64 mean v1"


def cache_dir(root: Path) -> Path:
    """Where the Caffe caches of the images under `root` live: $ONECYCLE_MEAN_CACHE, else
    MEAN_CACHE_DIR under the root."""
    return Path(os.environ.get(MEAN_CACHE_ENV) or Path(root) / MEAN_CACHE_DIR)


def squash(image: Any) -> torch.Tensor:
    """The uint8 (3, 256, 256) image convert_imageset would store for an RGB PIL image."""
    from torchvision.transforms.v2 import functional as F

    pixels = F.pil_to_tensor(image)
    return F.resize(pixels, [CAFFE_IMAGENET_SIDE, CAFFE_IMAGENET_SIDE],
                    interpolation=F.InterpolationMode.BILINEAR, antialias=False)


class CaffeImageNetTransform:
    """RGB PIL image -> float32 (3, crop_size, crop_size): Caffe's DataTransformer on the squashed
    image (module docstring), one sample at a time. Randomness comes from torch's global
    generator, which `data.FolderBatches` seeds per sample. Picklable, for DataLoader workers.
    The per-sample definition of the layer: training reads the same crops, batch by batch, from
    images squashed once (onecycle.data.caffe_batches; tests/test_caffe_batches.py pins them
    equal), and the data benchmark times the two."""
    decode = staticmethod(load_image)  # how data.FolderBatches reads an image for it

    def __init__(self, mean_image: torch.Tensor, crop_size: int, *, train: bool, mirror: bool) -> None:
        side = CAFFE_IMAGENET_SIDE
        if tuple(mean_image.shape) != (3, side, side):
            raise ValueError(f"mean_image has shape {tuple(mean_image.shape)}, expected (3, {side}, {side})")
        if not 0 < crop_size <= side:
            raise ValueError(f"crop_size={crop_size}: Caffe crops inside the {side}x{side} images")
        self.mean_image = mean_image.float()
        self.crop_size, self.train, self.mirror = crop_size, train, mirror

    def __call__(self, image: Any) -> torch.Tensor:
        side, crop = CAFFE_IMAGENET_SIDE, self.crop_size
        # data_transformer.cpp draws the mirror coin first, then the row and column offsets.
        flip = self.mirror and bool(torch.randint(2, ()))
        if self.train:
            row, col = (int(torch.randint(side - crop + 1, ())) for _ in range(2))
        else:
            row = col = (side - crop) // 2
        window = (slice(None), slice(row, row + crop), slice(col, col + crop))
        out = squash(image).float()[window] - self.mean_image[window]
        return out.flip(-1) if flip else out


class _SquashedImages(torch.utils.data.Dataset):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return squash(load_image(self.paths[index]))


def compute_mean_image(paths: list[str], num_workers: int = 0) -> torch.Tensor:
    """Per-pixel mean of the squashed images, float32 (3, 256, 256) on 0..255: what
    compute_image_mean writes, from exact integer sums."""
    if not paths:
        raise ValueError("no images to average")
    side = CAFFE_IMAGENET_SIDE
    total = torch.zeros((3, side, side), dtype=torch.int64)
    loader = torch.utils.data.DataLoader(_SquashedImages(paths), batch_size=64, num_workers=num_workers)
    for batch in loader:
        total += batch.to(torch.int64).sum(dim=0)
    return (total.double() / len(paths)).float()


def mean_image(root: Path, paths: list[str], num_workers: int = 0,
               compute: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
    """The mean image of `paths` (files under `root`), computed once (by `compute`, default
    compute_mean_image) and cached (`cache_dir`). Concurrent jobs wait on one lock: one computes,
    the others read. A cached mean is read without the lock, so a read-only cache still serves."""
    folder = cache_dir(root)
    cached = folder / f"{_image_list_key(root, paths)}.pt"
    if cached.exists():  # written atomically: an existing file is complete
        return torch.load(cached, weights_only=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with io.exclusive_lock(cached.with_suffix(".lock")):
            if not cached.exists():  # another job may have written it while we waited
                computed = compute() if compute is not None else compute_mean_image(paths, num_workers)
                with io.atomic_path(cached) as tmp:
                    torch.save(computed, tmp)
    except OSError as error:
        if error.filename is None or not Path(error.filename).is_relative_to(folder):
            raise  # an image that cannot be read, say: not the cache's fault
        raise ValueError(f"{folder}: cannot write the Caffe mean-image cache ({error.strerror}); "
                         f"make it writable or set ${MEAN_CACHE_ENV} to a writable folder") from None
    return torch.load(cached, weights_only=True)


def _image_list_key(root: Path, paths: list[str]) -> str:
    """A digest of MEAN_FORMAT and each image's path (relative to root) and size: another image
    list, a renamed, added or removed file, or a file of another size gets another mean."""
    digest = hashlib.sha256(f"{MEAN_FORMAT}\n".encode())
    for path in sorted(paths):
        digest.update(f"{os.path.relpath(path, root)}\t{os.path.getsize(path)}\n".encode())
    return digest.hexdigest()[:16]
