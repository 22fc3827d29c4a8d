"""The in-memory data path against torchvision's: one pass of BATCHES batches of 128 CIFAR-shaped
(3x32x32 uint8) images with pad-4 random crops, random flips and normalisation.

Subject: `Batches` (augment "pad_crop_mirror"), batched tensor ops on the target device.
Baseline: what torchvision.datasets.CIFAR10 does per item (uint8 HWC array -> PIL image ->
transform) in a DataLoader, with the per-sample transforms of the usual CIFAR recipe
(kuangliu/pytorch-cifar, torchvision's tutorials): RandomCrop(32, padding=4) and
RandomHorizontalFlip on the PIL image, then ToTensor and Normalize; batches are copied to the
device. With workers (CUDA runs only) they are persistent, so the warm-up round pays their start.
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
