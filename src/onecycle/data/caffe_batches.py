"""Caffe's ImageNet data layer, batch by batch, from images squashed once (`data.normalize:
caffe_mean_image` on an ImageNet folder).

`CaffeCachedBatches` reads each batch's squashed uint8 images from the split's cache
(onecycle.data.squash_cache), moves them to the training device as uint8, and there crops,
mirrors and subtracts the mean image, batch by batch, as data.Batches does for the in-memory
datasets. Its crops are those of the per-sample definition (caffe_imagenet.
CaffeImageNetTransform under data.FolderBatches): sample i of epoch e draws its mirror coin and
crop offsets, in that order, from a generator seeded with derived_seed("folder", seed, e, i),
and a mirrored crop is mirror(x - mean) (Caffe subtracts at the source pixel), so the two give
equal pixels (tests/test_caffe_batches.py). Reading the next batch's rows from the cache runs on
a background thread while the current batch trains.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from onecycle.data.batches import derived_seed
from onecycle.data.caffe_imagenet import CAFFE_IMAGENET_SIDE
from onecycle.data.folder import FolderDataset, FolderEpochs
from onecycle.data.squash_cache import SquashCache

# Batches read ahead from the cache while the device works on the current one.
PREFETCH_BATCHES = 2


class CaffeCachedBatches(FolderEpochs):
    """Epochs of Caffe data-layer batches (float32, crop_size x crop_size, mean subtracted) of a
    `FolderDataset` whose images `cache` holds squashed; same interface as data.Batches. `train`:
    random crops (else the centre one); `mirror`: a coin-flip mirror per image."""

    def __init__(self, dataset: FolderDataset, cache: SquashCache, batch_size: int, *, shuffle: bool,
                 drop_last: bool, seed: int, mean_image: torch.Tensor, crop_size: int, train: bool,
                 mirror: bool, device: torch.device | str = "cpu", order: str = "reshuffle") -> None:
        super().__init__(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, device=device,
                         order=order)
        side = CAFFE_IMAGENET_SIDE
        if tuple(mean_image.shape) != (3, side, side):
            raise ValueError(f"mean_image has shape {tuple(mean_image.shape)}, expected (3, {side}, {side})")
        if not 0 < crop_size <= side:
            raise ValueError(f"crop_size={crop_size}: Caffe crops inside the {side}x{side} images")
        self.cache, self.crop_size, self.train, self.mirror = cache, crop_size, train, mirror
        self._rows = cache.rows(dataset.samples)
        self._labels = torch.tensor([label for _, label in dataset.samples], dtype=torch.int64)
        self.mean_image = mean_image.to(self.device, torch.float32)
        self._mirrored_mean = self.mean_image.flip(-1)

    def batches_of(self, indices: torch.Tensor, batch_size: int, epoch_index: int
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        chunks = [indices[start:start + batch_size] for start in range(0, len(indices), batch_size)]
        host = (self._host_batch(chunk, epoch_index) for chunk in chunks)
        for images, labels, offsets, flips in _read_ahead(host, PREFETCH_BATCHES):
            yield self._crop(images, offsets, flips), labels.to(self.device, non_blocking=True)

    def draws(self, indices: torch.Tensor, epoch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, col) crop offsets (int64 (B, 2)) and mirror flags (bool (B,)) of these samples in
        this epoch: CaffeImageNetTransform's draws (data_transformer.cpp: the coin, then the offsets)."""
        side, crop = CAFFE_IMAGENET_SIDE, self.crop_size
        offsets = torch.full((len(indices), 2), (side - crop) // 2, dtype=torch.int64)
        flips = torch.zeros(len(indices), dtype=torch.bool)
        if not (self.train or self.mirror):
            return offsets, flips
        for k, index in enumerate(indices.tolist()):
            generator = torch.Generator().manual_seed(derived_seed("folder", self.seed, epoch_index, index))
            flips[k] = self.mirror and bool(torch.randint(2, (), generator=generator))
            if self.train:
                offsets[k, 0] = int(torch.randint(side - crop + 1, (), generator=generator))
                offsets[k, 1] = int(torch.randint(side - crop + 1, (), generator=generator))
        return offsets, flips

    def _host_batch(self, indices: torch.Tensor, epoch_index: int) -> tuple[torch.Tensor, ...]:
        images = self.cache.images.index_select(0, self._rows[indices])  # uint8 (B, 3, 256, 256)
        if self.device.type == "cuda":
            images = images.pin_memory()
        return (images, self._labels[indices], *self.draws(indices, epoch_index))

    def _crop(self, images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Every image's window minus the mean's same window, written straight into the batch
        (one subtraction per image, uint8 to float32 on the way). A mirrored image is
        mirror(x - mean), as Caffe subtracts at the source pixel: its window mirrored, minus the
        mirrored mean's window that covers the same source pixels."""
        side, crop = CAFFE_IMAGENET_SIDE, self.crop_size
        images = images.to(self.device, non_blocking=True)
        batch = torch.empty((len(images), images.shape[1], crop, crop), dtype=torch.float32, device=self.device)
        for k, ((row, col), flip) in enumerate(zip(offsets.tolist(), flips.tolist())):
            rows = slice(row, row + crop)
            if flip:
                start = side - col - crop  # mirror(mean)[:, :, start + j] == mean[:, :, col + crop - 1 - j]
                torch.sub(images[k, :, rows, col:col + crop].flip(-1), self._mirrored_mean[:, rows, start:start + crop],
                          out=batch[k])
            else:
                torch.sub(images[k, :, rows, col:col + crop], self.mean_image[:, rows, col:col + crop], out=batch[k])
        return batch


def _read_ahead(items: Iterable[Any], depth: int) -> Iterator[Any]:
    """`items`, produced up to `depth` ahead on a background thread (torch's indexing and the
    memory map's page faults release the GIL); an error there is raised here, in order."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():  # the consumer may have stopped reading
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as error:  # handed to the consumer, raised there
            offer((done, error))

    thread = threading.Thread(target=produce, name="caffe-batches-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
