"""The dataset catalog: which datasets exist, their shapes and sources, and where each lives on disk.

`DATASETS` describes every dataset a run may name (classes, channels, image side, split sizes,
citation); `default_root` says where a dataset's files are looked for when no root is given. The
ImageNet constants (Imagenette's class ids, torchvision's normalisation statistics) live here too,
as facts about the data that downloading (sources), reading (formats) and folders share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    train_size: int | None  # None for imagefolder: it depends on the class list
    test_size: int | None
    source: str


# The side Caffe's ImageNet images are squashed to: convert_imageset's --resize_height /
# --resize_width in create_imagenet.sh (onecycle.data.caffe_imagenet).
CAFFE_IMAGENET_SIDE = 256

# Datasets read from ImageNet-style folders (FolderDataset / FolderBatches), not held in memory.
FOLDER_DATASETS = ("imagefolder", "imagenet")

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
    """Where a dataset is read when its config gives no `data.root`: $ONECYCLE_DATA/<name> when
    that is set, else the dataset's own default, Debian's copy for fashion_mnist when installed,
    else ./data/<name>. One rule for every dataset (docs/running.md, "Where data is read"): the
    data job verifies the root training reads, whichever it is."""
    dataset_info(name)
    base = os.environ.get("ONECYCLE_DATA")
    if base:
        return Path(base) / name
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return DEBIAN_FASHION_MNIST
    return Path.cwd() / "data" / name
