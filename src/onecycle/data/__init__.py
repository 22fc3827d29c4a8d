"""Datasets: download and verify, load small ones as uint8 tensors, batch them with seeded augmentation.

The design rule: small datasets (MNIST, Fashion-MNIST, CIFAR-10/100, the 8x8 digits) live in
memory as one uint8 tensor, on the GPU when there is one, and `Batches` augments whole batches
with tensor ops: no per-sample PIL work (docs/design.md §7; the approach of airbench's
GPU-resident CifarLoader, docs/design.md §11). ImageNet subsets cannot fit in memory: they stay
in folders on disk. Caffe's data layer reads them squashed once into a uint8 cache and crops
whole batches on the device (`CaffeCachedBatches`), as convert_imageset's LMDB; torchvision's
presets decode them in persistent DataLoader workers (`FolderBatches`).
Every epoch's order and augmentation is a pure function of (seed, epoch index), so a run resumed
at an epoch boundary sees exactly the batches of an uninterrupted run with no RNG state to save.

Modules, in the order data flows through them:
  catalog         which datasets exist (`DATASETS`) and where their files live (`default_root`);
  sources         download and verify (`SOURCES`, `prepare`, `compare_with_official`);
  formats         read IDX, CIFAR pickles and sklearn digits into an `ArrayDataset` (`load_split`);
  folder          ImageNet-style folders: `FolderDataset`, `FolderBatches`, `torchvision_preset`;
  batches         in-memory `Batches` with seeded augmentation, `CaffeTransform`, `CaffeTestSample`;
  caffe_imagenet  Caffe's ImageNet data layer for folders (squash, the per-sample crops, mean image);
  squash_cache    every image of a split squashed once, in one uint8 file (`squash_cache`);
  caffe_batches   Caffe's layer batch by batch from that cache, on the device (`CaffeCachedBatches`);
  assembly        a run's data, from its config: `load_data`.
The names below are re-exported here, where callers have always imported them. The catalog's
are imported at once; the others, which need torch, when first asked for (PEP 562), so that
the Snakefile and report jobs, which read only the catalog, do not pay torch's import (~2 CPU s
per process).

Typical use::

    root = prepare("cifar10")                       # download once, verify md5s
    train = load_split("cifar10", "train", root)
    batches = Batches(train, 128, shuffle=True, drop_last=True, augment="mirror",
                      mean=train.channel_mean(), std=None, seed=0, device="cuda")
    for images, labels in batches.epoch(0): ...
"""

from __future__ import annotations

from onecycle.data.catalog import DATASETS, FOLDER_DATASETS, IMAGENET_MEAN, IMAGENET_STD, IMAGENETTE_WNIDS, default_root
from onecycle.lazy import lazy_attributes

# Re-exported names that need torch -> the submodule defining each, imported on first access.
__getattr__ = lazy_attributes(__name__, {
    **dict.fromkeys(("CAFFE_LENET_SCALE", "CROP_PADDING", "ORDERS", "Batches", "CaffeTestSample", "CaffeTransform",
                     "caffe_lmdb_pass", "derived_seed"), "batches"),
    **dict.fromkeys(("FolderBatches", "FolderDataset", "FolderEpochs", "torchvision_preset"), "folder"),
    **dict.fromkeys(("IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "ArrayDataset", "load_split", "read_idx"), "formats"),
    **dict.fromkeys(("SOURCES", "Source", "_first_missing", "compare_with_official", "prepare"), "sources"),
})

__all__ = [
    # catalog
    "DATASETS", "FOLDER_DATASETS", "IMAGENETTE_WNIDS", "IMAGENET_MEAN", "IMAGENET_STD", "default_root",
    # sources
    "SOURCES", "Source", "prepare", "compare_with_official",
    # formats
    "ArrayDataset", "load_split", "read_idx", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC",
    # batches
    "Batches", "CaffeTestSample", "CaffeTransform", "CAFFE_LENET_SCALE", "CROP_PADDING", "ORDERS",
    "caffe_lmdb_pass", "derived_seed",
    # folder
    "FolderBatches", "FolderDataset", "FolderEpochs", "torchvision_preset",
    # a private helper that callers reach for: tests/test_data.py waits on `_first_missing`
    "_first_missing",
]
