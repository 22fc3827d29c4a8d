"""The data `onecycle.advice.advise` trains and scores on: the training data split into a part
to train on and a held-out part to score on, re-batched in a seeded order per seed.

`AdviceData` is what advise reads; `split_data` makes one from a DataLoader or a map-style
Dataset. A pipeline that is neither (the suite's in-memory batches, onecycle.training.advise_job)
builds an AdviceData itself.

A library module: it imports torch only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

# The held-out fraction by default: a fifth of the training data, as the LeNet bounds study
# scored its range tests on 2 000 images against 10 000 trained on (configs/bounds_study.yaml).
DEFAULT_HOLDOUT = 0.2


@dataclass(frozen=True)
class AdviceData:
    """train(seed): a re-iterable of (inputs, targets) training batches, each pass an epoch in
    an order drawn from `seed`, without the held-out examples; held_out: a re-iterable of the
    fixed held-out batches every range test and trial is scored on; steps_per_epoch: the real
    training's iterations per epoch, over all the training data (for its schedule and budget)."""

    train: Callable[[int], Iterable]
    held_out: Iterable
    steps_per_epoch: int


def split_data(data: DataLoader | Dataset, *, holdout: float = DEFAULT_HOLDOUT, batch_size: int | None = None,
               eval_batch_size: int | None = None, seed: int = 0) -> AdviceData:
    """A seeded random `holdout` fraction of `data`'s examples held out, the rest trained on.

    data: a DataLoader built with a batch_size (its dataset, batch_size, collate_fn, drop_last
    and num_workers are reused; its sampler is not: each seed shuffles with its own generator),
    or a map-style Dataset with `batch_size`. eval_batch_size: the held-out batches' size
    (default the training batch size). The real training is taken to be one pass of `data` per
    epoch: steps_per_epoch = len(data) for a DataLoader, else len(dataset) / batch_size.
    """
    loader_options: dict[str, Any] = {}
    if isinstance(data, DataLoader):
        if data.batch_size is None:
            raise ValueError("data: a DataLoader with a batch_sampler (batch_size None) cannot be re-batched; "
                             "build it with batch_size, or pass its dataset and batch_size")
        if batch_size is not None and batch_size != data.batch_size:
            raise ValueError(f"batch_size={batch_size} differs from the DataLoader's {data.batch_size}: give one")
        batch_size, dataset, steps_per_epoch = data.batch_size, data.dataset, len(data)
        loader_options = {"collate_fn": data.collate_fn, "num_workers": data.num_workers}
        drop_last = data.drop_last
    else:
        dataset, drop_last = data, False
        if batch_size is None:
            raise ValueError("batch_size is required with a Dataset (a DataLoader brings its own)")
    _check_split(dataset, holdout, batch_size)
    if not isinstance(data, DataLoader):
        steps_per_epoch = math.ceil(len(dataset) / batch_size)
    held = round(holdout * len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    held_out_set, train_set = Subset(dataset, order[:held]), Subset(dataset, order[held:])
    if len(train_set) < batch_size and drop_last:
        raise ValueError(f"holdout={holdout} leaves {len(train_set)} examples to train on, fewer than one "
                         f"batch of {batch_size} (drop_last)")
    held_out = DataLoader(held_out_set, batch_size=eval_batch_size or batch_size, shuffle=False, **loader_options)

    def train(train_seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(train_seed)
        return DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator,
                          drop_last=drop_last, **loader_options)

    return AdviceData(train, held_out, steps_per_epoch)


def _check_split(dataset: Any, holdout: Any, batch_size: Any) -> None:
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(f"data must be a map-style Dataset (len and indexing) or a DataLoader over one, got "
                        f"{type(dataset).__name__}: advise holds out some of its examples")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(holdout, bool) or not isinstance(holdout, numbers.Real) or not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction strictly between 0 and 1, got {holdout!r}")
    held = round(holdout * len(dataset))
    if held < 1 or held >= len(dataset):
        raise ValueError(f"holdout={holdout} of {len(dataset)} examples holds out {held}: "
                         "both parts need at least one example")
