"""In-memory batches with seeded, batched augmentation, and the seeds and pass orders every loader shares.

`Batches` moves an `ArrayDataset`'s uint8 images to the device once and indexes, flips and crops
whole batches with tensor ops, normalised as (x/255 - mean)/std or as Caffe's data layer did
(`CaffeTransform`); `CaffeTestSample` replays Caffe's test phases. Every epoch's order and
augmentation is drawn from `derived_seed`, a pure function of (seed, epoch index): a run resumed
at an epoch boundary sees exactly the batches of an uninterrupted one. The folder loader
(onecycle.data.folder) draws its order from the same seeds and `ORDERS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # formats imports folder, which imports this module's seeds: no runtime import
    from onecycle.data.formats import ArrayDataset


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
