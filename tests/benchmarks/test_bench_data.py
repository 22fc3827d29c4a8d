"""The data paths against their baselines, one epoch each, data loading alone.

In memory: one pass of BATCHES batches of 128 CIFAR-shaped (3x32x32 uint8) images with pad-4
random crops, random flips and normalisation.

Subject: `Batches` (augment "pad_crop_mirror"), batched tensor ops on the target device.
Baseline: what torchvision.datasets.CIFAR10 does per item (uint8 HWC array -> PIL image ->
transform) in a DataLoader, with the per-sample transforms of the usual CIFAR recipe
(kuangliu/pytorch-cifar, torchvision's tutorials): RandomCrop(32, padding=4) and
RandomHorizontalFlip on the PIL image, then ToTensor and Normalize; batches are copied to the
device. With workers (CUDA runs only) they are persistent, so the warm-up round pays their start.

ImageNet folders (test_cached_caffe_batches_vs_per_sample_decoding): Caffe's data layer over an
Imagenette-sized folder of JPEGs written here, per-sample decoding against the squashed cache.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch
from PIL import Image
from torchvision import transforms

from onecycle.data import ArrayDataset, Batches

BATCHES = 20
BATCH_SIZE = 128
ROUNDS = 5
CLASSES = 10


class PilImages(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's __getitem__ on in-memory arrays (no files to write)."""

    def __init__(self, dataset: ArrayDataset, transform) -> None:
        self.images = dataset.images.permute(0, 2, 3, 1).numpy()  # HWC, as CIFAR10.data
        self.labels = dataset.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


@dataclass(frozen=True)
class PassSummary:
    batches: int
    kinds: set[tuple]  # (shape, dtype, device type) of the image batches
    pixel_mean: float
    label_counts: list[int]


def consume(pairs, device: torch.device) -> PassSummary:
    """Use every batch on the device (pixel sum, label counts) and read the results back once,
    so a pass's time includes all the work it queued."""
    count, kinds = 0, set()
    pixel_sum = torch.zeros((), dtype=torch.float64, device=device)
    label_counts = torch.zeros(CLASSES, dtype=torch.int64, device=device)
    for x, y in pairs:
        count += 1
        kinds.add((tuple(x.shape), x.dtype, x.device.type))
        pixel_sum += x.sum(dtype=torch.float64)
        label_counts += torch.bincount(y, minlength=CLASSES)
    return PassSummary(count, kinds, pixel_sum.item() / (count * BATCH_SIZE * 3 * 32 * 32),
                       label_counts.tolist())


@pytest.mark.parametrize("num_workers", [0, 4])
def test_batches_vs_dataloader(paired, device, num_workers):
    if num_workers and device.type == "cpu":
        pytest.skip("on CPU the clock is this process's CPU time (conftest), which leaves out "
                    "the workers' work; run with ONECYCLE_BENCH_DEVICE=cuda")
    generator = torch.Generator().manual_seed(0)
    count = BATCHES * BATCH_SIZE  # one pass is exactly BATCHES full batches on both sides
    images = torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8)
    dataset = ArrayDataset(images, torch.randint(0, CLASSES, (count,), generator=generator), CLASSES)
    mean, std = dataset.channel_mean(), dataset.channel_std()
    batches = Batches(dataset, BATCH_SIZE, shuffle=True, drop_last=True, augment="pad_crop_mirror",
                      mean=mean, std=std, seed=0, device=device)
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(
        PilImages(dataset, transform), batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
        num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=device.type == "cuda")
    epochs = itertools.count()  # every round is a new epoch on both sides

    def loader_pass() -> PassSummary:
        on_device = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader)
        return consume(on_device, device)

    pair = paired(baseline=loader_pass, subject=lambda: consume(batches.epoch(next(epochs)), device),
                  labels=(f"DataLoader+per-sample transforms ({num_workers} workers)", "Batches"),
                  work=BATCHES, unit="batches", rounds=ROUNDS)

    expected_kinds = {((BATCH_SIZE, 3, 32, 32), torch.float32, device.type)}
    every_label_once = torch.bincount(dataset.labels, minlength=CLASSES).tolist()
    for summary in (pair.baseline, pair.subject):
        assert summary.batches == BATCHES
        assert summary.kinds == expected_kinds
        assert summary.label_counts == every_label_once
    # Same normalisation and the same crop distribution (zero padding -> (0 - mean)/std): the
    # pass means (~ -0.23) agree to sampling noise (sd ~0.001 between epochs of these 2 560).
    assert pair.subject.pixel_mean == pytest.approx(pair.baseline.pixel_mean, abs=0.02)


# --- ImageNet folders: Caffe's data layer, per-sample decoding against the squashed cache -------

# An Imagenette-sized folder: Imagenette's 320px images are about 320 x 430 (fastai/imagenette),
# ILSVRC's about 400 x 350 on average; 350 x 500 JPEGs at quality 90 of smooth, noisy content are
# 40-70 kB, the size of real photographs there.
FOLDER_IMAGES_PER_CLASS = 20
FOLDER_SIZE = (350, 500)
FOLDER_BATCH = 25
FOLDER_ROUNDS = 5
CROP = 227  # bvlc_alexnet's


def _photo_like(seed: int) -> Image.Image:
    """A smooth random field (coarse 8 x 10 colours, bilinearly enlarged) plus pixel noise."""
    rng = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (1, 3, 8, 10), generator=rng, dtype=torch.uint8).float()
    smooth = torch.nn.functional.interpolate(coarse, size=FOLDER_SIZE, mode="bilinear", align_corners=False)[0]
    noisy = smooth + torch.randint(-12, 13, smooth.shape, generator=rng)
    return Image.fromarray(noisy.clamp(0, 255).byte().permute(1, 2, 0).numpy())


@pytest.fixture(scope="module")
def imagenette_sized(tmp_path_factory):
    from onecycle import data as datasets

    root = tmp_path_factory.mktemp("imagenette_sized")
    for label, wnid in enumerate(datasets.IMAGENETTE_WNIDS):
        for split in ("train", "val"):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(FOLDER_IMAGES_PER_CLASS if split == "train" else 1):
                _photo_like(1000 * label + i).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def test_cached_caffe_batches_vs_per_sample_decoding(paired, device, imagenette_sized, monkeypatch):
    """One epoch of Caffe's ImageNet data layer (random 227 crops, mirror, mean image) over an
    Imagenette-sized folder, through the data path alone. Baseline: the per-sample path (PIL
    decode, squash, crop in float32 per image; caffe_imagenet.CaffeImageNetTransform in
    FolderBatches). Subject: the squashed uint8 cache, built before the timed rounds (what every
    epoch after the first reads), cropped per batch on the device (CaffeCachedBatches). On CPU
    both run in this process (no DataLoader workers), so the CPU-time clock sees all the work:
    the ratio is images per CPU second."""
    from onecycle import data as datasets
    from onecycle.data.caffe_batches import CaffeCachedBatches
    from onecycle.data.caffe_imagenet import CaffeImageNetTransform
    from onecycle.data.squash_cache import split_mean_image, squash_cache

    monkeypatch.delenv("ONECYCLE_MEAN_CACHE", raising=False)
    split = datasets.load_split("imagefolder", "train", imagenette_sized)
    cache = squash_cache(split, num_workers=0)
    mean = split_mean_image(split, cache)
    common = {"shuffle": True, "drop_last": True, "seed": 0, "device": device}
    per_sample = datasets.FolderBatches(split, FOLDER_BATCH, num_workers=0, **common,
                                        transform=CaffeImageNetTransform(mean, CROP, train=True, mirror=True))
    cached = CaffeCachedBatches(split, cache, FOLDER_BATCH, mean_image=mean, crop_size=CROP, train=True,
                                mirror=True, **common)
    epochs = {"baseline": itertools.count(), "subject": itertools.count()}

    def one_epoch(batches, side):
        return folder_summary(batches.epoch(next(epochs[side])), device)

    pair = paired(baseline=lambda: one_epoch(per_sample, "baseline"), subject=lambda: one_epoch(cached, "subject"),
                  labels=("per-sample decode+squash+crop (FolderBatches)", "squashed cache, crops per batch"),
                  work=len(per_sample) * FOLDER_BATCH, unit="images", rounds=FOLDER_ROUNDS, target=5.0)
    # Both sides ran the same epochs (warm-up and timed rounds alike): the same pixels, bit for bit.
    assert pair.baseline == pair.subject
    assert pair.subject.batches == len(split) // FOLDER_BATCH
    assert pair.subject.kinds == {((FOLDER_BATCH, 3, CROP, CROP), torch.float32, device.type)}


# The consumer reads every batch but only a grid of its pixels (every CHECK_STRIDE-th row and
# column, all images and channels): summing all of them in float64 cost ~5 ms a batch here, work
# of the consumer, not of the data path, that would dilute the ratio on both sides alike.
CHECK_STRIDE = 7


def folder_summary(pairs, device: torch.device) -> PassSummary:
    """`consume` for folder batches: the mean of a grid of every batch's pixels, from float64
    sums in order (the same pixels give the same bits), and label counts."""
    count, kinds, checked = 0, set(), 0
    pixel_sum = torch.zeros((), dtype=torch.float64, device=device)
    label_counts = torch.zeros(CLASSES, dtype=torch.int64, device=device)
    for x, y in pairs:
        count += 1
        kinds.add((tuple(x.shape), x.dtype, x.device.type))
        grid = x[:, :, ::CHECK_STRIDE, ::CHECK_STRIDE]
        pixel_sum += grid.sum(dtype=torch.float64)
        checked += grid.numel()
        label_counts += torch.bincount(y, minlength=CLASSES)
    return PassSummary(count, kinds, pixel_sum.item() / checked, label_counts.tolist())
