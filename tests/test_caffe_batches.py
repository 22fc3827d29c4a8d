"""Decode once (onecycle.data.squash_cache, caffe_batches): batches formed from the squashed uint8
cache are the per-sample Caffe transform's, pixel for pixel; the cache follows its sources and is
refused in one line when it is damaged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import random_uint8, write_image, write_image_folder

from onecycle import cli, data
from onecycle.data import squash_cache
from onecycle.data.caffe_batches import CaffeCachedBatches, _read_ahead
from onecycle.data.caffe_imagenet import CaffeImageNetTransform, compute_mean_image, squash
from onecycle.data.folder import load_image
from onecycle.data.squash_cache import HEADER_BYTES, split_mean_image
from onecycle.training.distributed import ShardedTestBatches, ShardedTrainBatches

WNIDS = ["n01440764", "n02102040", "n02979186"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """train/ and val/ of three classes, PNGs and JPEGs of two sizes (both squashed, one up and
    one down), written here; the Caffe caches under the folder."""
    monkeypatch.delenv("ONECYCLE_MEAN_CACHE", raising=False)
    write_image_folder(tmp_path, WNIDS, per_class=4, size=(300, 410), seed=1)
    write_image_folder(tmp_path / "small", WNIDS, per_class=1, size=(90, 120), seed=2)
    for split in ("train", "val"):  # one smaller image per class, beside the others
        for wnid in WNIDS:
            (tmp_path / "small" / split / wnid / f"{wnid}_0.png").rename(tmp_path / split / wnid / "small.png")
    return tmp_path


def _splits(root, **kwargs):
    return {name: data.load_split("imagefolder", name, root, class_list=WNIDS, **kwargs) for name in ("train", "test")}


def _both(split, cache, mean, *, batch, train, mirror, shuffle=True, drop_last=True, order="reshuffle", seed=5):
    """(the per-sample reference: CaffeImageNetTransform in FolderBatches, the cached batches)."""
    reference = data.FolderBatches(split, batch, shuffle=shuffle, drop_last=drop_last, seed=seed, num_workers=0,
                                   order=order, transform=CaffeImageNetTransform(mean, 227, train=train, mirror=mirror))
    cached = CaffeCachedBatches(split, cache, batch, shuffle=shuffle, drop_last=drop_last, seed=seed, order=order,
                                mean_image=mean, crop_size=227, train=train, mirror=mirror)
    return reference, cached


def _assert_equal_epochs(reference, cached, epochs):
    for epoch in epochs:
        pairs = list(zip(reference.epoch(epoch), cached.epoch(epoch), strict=True))
        assert len(pairs) == len(reference)
        for (x1, y1), (x2, y2) in pairs:
            # The same float32 subtraction of the same uint8 pixel and mean value: exact.
            assert x2.dtype == torch.float32 and torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("order", ["reshuffle", "caffe_lmdb"])
def test_cached_batches_are_the_per_sample_transforms_pixel_for_pixel(folder, order):
    splits = _splits(folder)
    caches = {name: squash_cache.squash_cache(split) for name, split in splits.items()}
    mean = split_mean_image(splits["train"], caches["train"])
    reference, cached = _both(splits["train"], caches["train"], mean, batch=4, train=True, mirror=True, order=order)
    _assert_equal_epochs(reference, cached, epochs=(0, 1, 7))
    draws = [cached.draws(torch.arange(len(splits["train"])), epoch)[1] for epoch in (0, 1)]
    assert 0 < int(draws[0].sum()) < len(splits["train"]) and not torch.equal(*draws)  # mirrors happen, per epoch
    # Validation: the centre crop, unmirrored, every image once, the last batch short.
    reference, cached = _both(splits["test"], caches["test"], mean, batch=4, train=False, mirror=False,
                              shuffle=False, drop_last=False, seed=0)
    _assert_equal_epochs(reference, cached, epochs=(0,))
    assert [len(y) for _, y in cached.epoch(0)] == [4, 4, 4, 3]


def test_the_cache_holds_the_squashed_images_and_their_exact_mean(folder):
    split = _splits(folder)["train"]
    cache = squash_cache.squash_cache(split, num_workers=2)  # rows written by two worker processes
    assert cache.images.dtype == torch.uint8 and tuple(cache.images.shape) == (len(split), 3, 256, 256)
    for row, (path, _) in enumerate(split.samples):
        assert torch.equal(cache.images[row], squash(load_image(path))), path
    paths = [path for path, _ in split.samples]
    assert torch.equal(cache.mean_image(chunk=5), compute_mean_image(paths))  # exact integer sums
    # A train subset reads the full split's rows.
    subset = data.load_split("imagefolder", "train", folder, class_list=WNIDS, subset=5)
    assert [paths[row] for row in cache.rows(subset.samples).tolist()] == [path for path, _ in subset.samples]


def test_a_subset_and_data_parallel_shards_read_the_same_pixels(folder):
    full = _splits(folder)["train"]
    subset = data.load_split("imagefolder", "train", folder, class_list=WNIDS, subset=9)
    cache = squash_cache.squash_cache(full)
    mean = split_mean_image(full, cache)
    reference, cached = _both(subset, cache, mean, batch=3, train=True, mirror=True)
    _assert_equal_epochs(reference, cached, epochs=(0, 2))
    shards = [ShardedTrainBatches(cached, rank, 3) for rank in range(3)]
    for (x, y), *parts in zip(cached.epoch(2), *(shard.epoch(2) for shard in shards), strict=True):
        assert torch.equal(x, torch.cat([px for px, _ in parts])) and torch.equal(y, torch.cat([py for _, py in parts]))
    test = _splits(folder)["test"]
    evaluation = CaffeCachedBatches(test, squash_cache.squash_cache(test), 4, shuffle=False, drop_last=False, seed=0,
                                    mean_image=mean, crop_size=227, train=False, mirror=False)
    ranks = [torch.cat([x for x, _ in ShardedTestBatches(evaluation, rank, 2).epoch(0)]) for rank in (0, 1)]
    assert torch.equal(torch.cat(ranks), torch.cat([x for x, _ in evaluation.epoch(0)]))


def test_the_cache_is_rebuilt_when_its_sources_change_and_only_then(folder, monkeypatch):
    split = _splits(folder)["train"]
    first = squash_cache.squash_cache(split)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cache was built again")

    with monkeypatch.context() as patch:
        patch.setattr(squash_cache, "_build", must_not_run)
        assert squash_cache.squash_cache(_splits(folder)["train"]).path == first.path
    # Rewrite one image (new pixels, same name): its size and mtime change, so does the key (the
    # mtime is moved on by 1 ms as well, for file systems that keep it coarsely).
    path = split.samples[0][0]
    stat = os.stat(path)
    write_image(Path(path), random_uint8((300, 410, 3), 99))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = squash_cache.squash_cache(_splits(folder)["train"])
    assert changed.path != first.path and not first.path.exists()  # the split's old cache is gone
    assert torch.equal(changed.images[0], squash(load_image(path)))
    assert not torch.equal(changed.images[0], first.images[0])
    # An image added to the split: another key again.
    write_image(folder / "train" / WNIDS[1] / "added.png", random_uint8((64, 64, 3), 7))
    added = squash_cache.squash_cache(_splits(folder)["train"])
    assert len(added) == len(split) + 1 and added.path not in (first.path, changed.path)
    assert not changed.path.exists()
    # Another class list of the same folder is another split: its cache stands beside this one's.
    other = squash_cache.squash_cache(data.load_split("imagefolder", "train", folder, class_list=WNIDS[:2]))
    assert other.path.exists() and added.path.exists()


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_a_damaged_cache_is_refused_in_one_line_naming_it(folder, damage, capsys):
    split = _splits(folder)["train"]
    path = squash_cache.squash_cache(split).path
    if damage == "truncate":
        os.truncate(path, path.stat().st_size - 1000)
    else:
        with open(path, "r+b") as stream:
            stream.write(b"{}")
    with pytest.raises(ValueError) as raised:
        squash_cache.squash_cache(split)
    message = str(raised.value)
    assert message.startswith(f"{path}: corrupt Caffe image cache") and "\n" not in message
    assert "delete it and run again" in message
    # Through the workflow's data job: one line, exit status 2.
    splits = json.dumps([{"root": str(folder), "classes": WNIDS}])
    record = folder / "record.json"
    assert cli.main(["caffe-cache", "--dataset", "imagefolder", "--splits", splits, "--record", str(record)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{path}: corrupt Caffe image cache" in error
    assert not record.exists()


def test_the_cache_file_is_one_header_then_the_pixels(folder):
    split = _splits(folder)["train"]
    cache = squash_cache.squash_cache(split)
    raw = np.fromfile(cache.path, dtype=np.uint8, offset=HEADER_BYTES).reshape(len(split), 3, 256, 256)
    assert np.array_equal(raw, cache.images.numpy())
    assert not list(cache.path.parent.glob("*.tmp*"))  # written atomically: no temporary file left


def test_read_ahead_keeps_the_order_raises_errors_in_place_and_stops_when_dropped():
    assert list(_read_ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise RuntimeError("unreadable batch")

    reader = _read_ahead(failing(), depth=2)
    assert next(reader) == 1
    with pytest.raises(RuntimeError, match="unreadable batch"):
        next(reader)
    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    reader = _read_ahead(endless(), depth=2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()  # the consumer stops: the background thread ends too (close joins it)
    assert len(produced) <= 3 + 2 + 1
