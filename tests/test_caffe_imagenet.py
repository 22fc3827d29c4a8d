"""Caffe's ImageNet data layer (onecycle.data.caffe_imagenet) against hand computations: the squash,
data_transformer.cpp's crop/mean/mirror loop written out literally, the mean file, its cache,
and the config checks that guard it."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest
import torch
from data_fixtures import random_uint8, write_image, write_image_folder
from PIL import Image

from onecycle import cli, data
from onecycle.data import caffe_imagenet
from onecycle.data.caffe_imagenet import CAFFE_IMAGENET_SIDE as SIDE
from onecycle.data.caffe_imagenet import CaffeImageNetTransform, compute_mean_image, mean_image, squash
from onecycle.experiments.config import ConfigError, RunConfig, parse
from onecycle.training.distributed import ShardedTrainBatches
from onecycle.data import squash_cache
from onecycle.data.assembly import folder_batches

# ---------------------------------------------------------------------------------------------
# squash: convert_imageset --resize_height 256 --resize_width 256
# ---------------------------------------------------------------------------------------------


def test_squash_keeps_a_256_image_and_halves_a_512_one_by_2x2_means():
    base = 1 + random_uint8((SIDE, SIDE, 3), 0).astype(np.int64) % 253  # 1..253: room for +-1
    assert torch.equal(squash(Image.fromarray(base.astype(np.uint8))), torch.from_numpy(base).permute(2, 0, 1).byte())
    # Bilinear at exactly half size, no antialiasing (OpenCV's INTER_LINEAR): each output pixel
    # is the mean of a 2x2 block. A +-1 pattern inside each block keeps that mean an integer.
    pattern = np.array([[1, -1], [-1, 1]])[..., None]
    big = np.kron(base, np.ones((2, 2, 1), dtype=np.int64)) + np.tile(pattern, (SIDE, SIDE, 1))
    squashed = squash(Image.fromarray(big.astype(np.uint8)))
    assert squashed.dtype == torch.uint8 and squashed.shape == (3, SIDE, SIDE)
    assert torch.equal(squashed, torch.from_numpy(base).permute(2, 0, 1).byte())


def test_squash_ignores_the_aspect_ratio():
    assert squash(Image.new("RGB", (500, 80), (1, 2, 3))).shape == (3, SIDE, SIDE)


# ---------------------------------------------------------------------------------------------
# The transform vs data_transformer.cpp, loop for loop
# ---------------------------------------------------------------------------------------------


def caffe_transform_loop(datum: np.ndarray, mean: np.ndarray, crop: int, h_off: int, w_off: int,
                         do_mirror: bool) -> np.ndarray:
    """DataTransformer<Dtype>::Transform(const Datum&, Dtype*), scale 1, written out as in
    BVLC/caffe src/caffe/data_transformer.cpp (datum and mean: (C, H, W))."""
    channels, height, width = datum.shape
    flat_datum, flat_mean = datum.reshape(-1), mean.reshape(-1)
    out = np.empty(channels * crop * crop)
    for c in range(channels):
        for h in range(crop):
            for w in range(crop):
                data_index = (c * height + h_off + h) * width + w_off + w
                top_index = (c * crop + h) * crop + (crop - 1 - w if do_mirror else w)
                out[top_index] = flat_datum[data_index] - flat_mean[data_index]
    return out.reshape(channels, crop, crop)


@pytest.fixture
def picture():
    pixels = random_uint8((SIDE, SIDE, 3), 5)  # already 256x256: the squash keeps it
    mean = torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(1)) * 255
    return Image.fromarray(pixels), pixels.transpose(2, 0, 1).astype(np.float64), mean


def test_test_phase_is_the_centre_crop_minus_the_mean(picture):
    image, datum, mean = picture
    crop = 8
    out = CaffeImageNetTransform(mean, crop, train=False, mirror=False)(image)
    offset = (SIDE - crop) // 2  # 124
    expected = caffe_transform_loop(datum, mean.double().numpy(), crop, offset, offset, False)
    assert out.dtype == torch.float32
    # Here and below: pixel minus mean on the 0..255 scale, the float32 transform against a
    # float64 loop, differ by the float32 roundings of values below 256, 2^-24 x 256 = 1.5e-5.
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)


def test_other_sizes_are_squashed_before_the_crop(picture):
    _, _, mean = picture
    image = Image.fromarray(random_uint8((300, 512, 3), 6))
    datum = squash(image).double().numpy()
    out = CaffeImageNetTransform(mean, 227, train=False, mirror=False)(image)
    expected = caffe_transform_loop(datum, mean.double().numpy(), 227, 14, 14, False)  # (256-227)//2
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)


def test_train_phase_crops_anywhere_inside_and_mirrors_half_the_time(picture):
    # crop 254 leaves offsets 0, 1, 2 on each axis. Every output must be the literal loop's at
    # one (row, col, mirror); over 200 seeds all 3 x 3 x 2 choices turn up.
    image, datum, mean = picture
    crop, mean64 = SIDE - 2, mean.double().numpy()
    candidates = {(row, col, flip): caffe_transform_loop(datum, mean64, crop, row, col, flip)
                  for row in range(3) for col in range(3) for flip in (False, True)}
    transform = CaffeImageNetTransform(mean, crop, train=True, mirror=True)
    seen = set()
    for seed in range(200):
        torch.manual_seed(seed)
        out = transform(image).double().numpy()
        found = [key for key, value in candidates.items() if np.allclose(out, value, atol=1e-4)]
        assert len(found) == 1, seed
        seen.add(found[0])
    assert seen == set(candidates)


def test_test_phase_mirrors_only_if_asked(picture):
    # Caffe's coin does not depend on the phase; only the offsets do (centred in TEST).
    image, datum, mean = picture
    crop, mean64, offset = 8, mean.double().numpy(), (SIDE - 8) // 2
    plain, mirrored = (caffe_transform_loop(datum, mean64, crop, offset, offset, flip) for flip in (False, True))
    transform = CaffeImageNetTransform(mean, crop, train=False, mirror=True)
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = transform(image).double().numpy()
        seen.add(next(flip for flip, value in ((False, plain), (True, mirrored)) if np.allclose(out, value, atol=1e-4)))
    assert seen == {False, True}


def test_mirror_false_never_flips(picture):
    image, datum, mean = picture
    transform = CaffeImageNetTransform(mean, SIDE, train=True, mirror=False)  # crop = image: offset 0
    expected = caffe_transform_loop(datum, mean.double().numpy(), SIDE, 0, 0, False)
    for seed in range(10):
        torch.manual_seed(seed)
        np.testing.assert_allclose(transform(image).numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"crop_size": 257}, "crop_size=257: Caffe crops inside the 256x256 images"),
    ({"mean_image": torch.zeros(3, 224, 224)}, r"mean_image has shape \(3, 224, 224\)"),
])
def test_transform_refuses_what_caffe_cannot_do(kwargs, message):
    arguments = {"mean_image": torch.zeros(3, SIDE, SIDE), "crop_size": 227, "train": True, "mirror": True}
    with pytest.raises(ValueError, match=message):
        CaffeImageNetTransform(**{**arguments, **kwargs})


# ---------------------------------------------------------------------------------------------
# The mean file: compute_image_mean, computed once per image list
# ---------------------------------------------------------------------------------------------


def _images(tmp_path, count, seed=0):
    paths = []
    for i in range(count):
        path = tmp_path / "train" / "n01440764" / f"{i}.png"
        write_image(path, random_uint8((SIDE, SIDE, 3), seed + i))
        paths.append(str(path))
    return paths


def test_mean_image_is_the_exact_per_pixel_mean(tmp_path):
    paths = _images(tmp_path, 3)
    stacked = np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in paths]).astype(np.float64)
    computed = compute_mean_image(paths)
    assert computed.dtype == torch.float32 and computed.shape == (3, SIDE, SIDE)
    # A mean of values below 256 rounded to float32: within 2^-24 x 256 = 1.5e-5.
    np.testing.assert_allclose(computed.numpy(), stacked.mean(axis=0), rtol=0, atol=1e-4)


def test_mean_image_is_cached_per_image_list(tmp_path, monkeypatch):
    paths = _images(tmp_path, 2)
    first = mean_image(tmp_path, paths)

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed a cached mean")

    monkeypatch.setattr(caffe_imagenet, "compute_mean_image", must_not_run)
    assert torch.equal(mean_image(tmp_path, list(reversed(paths))), first)  # order does not matter
    monkeypatch.undo()
    # A changed image (another size on disk) or another list is another mean.
    Image.new("RGB", (SIDE, SIDE), (9, 9, 9)).save(paths[1])
    changed = mean_image(tmp_path, paths)
    assert not torch.equal(changed, first)
    np.testing.assert_allclose(changed.numpy(), compute_mean_image(paths).numpy())
    assert len(list((tmp_path / caffe_imagenet.MEAN_CACHE_DIR).glob("*.pt"))) == 2


def test_concurrent_jobs_compute_the_mean_once(tmp_path, monkeypatch):
    paths = _images(tmp_path, 2)
    calls = []
    real = caffe_imagenet.compute_mean_image

    def slow_compute(*args, **kwargs):
        calls.append(1)
        time.sleep(0.5)  # long enough for the other thread to reach the lock
        return real(*args, **kwargs)

    monkeypatch.setattr(caffe_imagenet, "compute_mean_image", slow_compute)
    results = [None, None]

    def job(index):
        results[index] = mean_image(tmp_path, paths)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and torch.equal(results[0], results[1])


def test_unwritable_cache_is_one_line(tmp_path):
    paths = _images(tmp_path, 1)
    (tmp_path / caffe_imagenet.MEAN_CACHE_DIR).write_text("not a folder")
    with pytest.raises(ValueError, match=r"cannot write the Caffe mean-image cache .* set \$ONECYCLE_MEAN_CACHE"):
        mean_image(tmp_path, paths)


def read_only_lock(lock_path):
    # What open() raises for the lock file on a read-only filesystem (root ignores chmod here).
    raise OSError(30, "Read-only file system", str(lock_path))


def test_read_only_root_serves_a_cached_mean_and_names_the_cache_otherwise(tmp_path, monkeypatch):
    paths = _images(tmp_path, 2)
    first = mean_image(tmp_path, paths)
    monkeypatch.setattr(caffe_imagenet.io, "exclusive_lock", read_only_lock)
    assert torch.equal(mean_image(tmp_path, paths), first)  # cached: no lock, no write
    with pytest.raises(ValueError, match="Read-only file system"):
        mean_image(tmp_path, paths[:1])  # not cached: it would have to write


def test_mean_cache_can_live_elsewhere(tmp_path, monkeypatch):
    paths = _images(tmp_path / "data", 1)
    monkeypatch.setenv(caffe_imagenet.MEAN_CACHE_ENV, str(tmp_path / "cache"))
    mean_image(tmp_path / "data", paths)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    assert not (tmp_path / "data" / caffe_imagenet.MEAN_CACHE_DIR).exists()


def test_an_unreadable_image_is_not_blamed_on_the_cache(tmp_path):
    paths = _images(tmp_path, 1)
    with pytest.raises(OSError) as raised:
        mean_image(tmp_path, [*paths, str(tmp_path / "missing.JPEG")])
    assert not isinstance(raised.value, ValueError)


# ---------------------------------------------------------------------------------------------
# Config checks: a pipeline's ignored keys and impossible crops fail before any data is read
# ---------------------------------------------------------------------------------------------


def _folder_config(data, arch="resnet50"):
    return {"name": "t", "data": {"dataset": "imagefolder", **data}, "model": {"arch": arch},
            "train": {"epochs": 1, "batch_size": 2},
            "schedule": {"policy": "fixed", "params": {"base_lr": 0.1}}}


@pytest.mark.parametrize("data, arch, message", [
    ({"normalize": "caffe_scale"}, "resnet50", "takes normalize 'mean_std' .* or 'caffe_mean_image'"),
    ({"augment": "mirror"}, "resnet50", "torchvision's ImageNet presets, which fix the augmentation"),
    ({"normalize": "caffe_mean_image", "augment": "pad_crop_mirror"}, "resnet50", "never pads"),
    ({"normalize": "caffe_mean_image", "crop_size": 300}, "resnet50", "crop_size = 300 does not fit"),
    ({"normalize": "caffe_mean_image"}, "inception_resnet_v2", "299x299 inputs do not fit .* set data.crop_size"),
    ({"normalize": "caffe_mean_image", "crop_size": 230}, "alexnet", "alexnet takes 227x227 inputs only"),
])
def test_folder_config_errors(data, arch, message):
    with pytest.raises(ConfigError, match=message):
        parse(RunConfig, _folder_config(data, arch), "c.yaml")


def test_crop_size_is_for_folders_only():
    raw = {**_folder_config({}), "data": {"dataset": "cifar10", "crop_size": 24}}
    with pytest.raises(ConfigError, match="crop_size is for ImageNet folders"):
        parse(RunConfig, raw, "c.yaml")


def test_folder_configs_that_run():
    caffe = parse(RunConfig, _folder_config({"normalize": "caffe_mean_image", "augment": "mirror",
                                             "crop_size": 230}, "inception_resnet_v2"), "c.yaml")
    assert (caffe.data.normalize, caffe.data.crop_size) == ("caffe_mean_image", 230)
    alexnet = _folder_config({"normalize": "caffe_mean_image", "augment": "mirror"}, "alexnet")
    assert parse(RunConfig, alexnet, "c.yaml").data.crop_size is None  # its own 227


def test_folder_batches_with_caffe_transform_are_seeded_per_sample(tmp_path):
    # The crops and mirrors of sample i come from its own seed, in the main process or a worker.
    write_image_folder(tmp_path, ["n01440764", "n02102040"], per_class=3, size=(40, 60), seed=2)
    dataset = data.load_split("imagefolder", "train", tmp_path, class_list=["n01440764", "n02102040"])
    mean = mean_image(tmp_path, [path for path, _ in dataset.samples])
    transform = CaffeImageNetTransform(mean, 227, train=True, mirror=True)
    make = lambda workers, shuffle=True: data.FolderBatches(  # noqa: E731
        dataset, 3, shuffle=shuffle, drop_last=True, transform=transform, seed=4, num_workers=workers)
    in_process, with_worker = list(make(0).epoch(0)), list(make(1).epoch(0))
    assert len(in_process) == 2 and in_process[0][0].shape == (3, 3, 227, 227)
    for (x1, y1), (x2, y2) in zip(in_process, with_worker, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # The same images in the same order: another epoch draws other crops and mirrors.
    ordered = make(0, shuffle=False)
    epoch0, epoch1 = next(iter(ordered.epoch(0))), next(iter(ordered.epoch(1)))
    assert torch.equal(epoch0[1], epoch1[1]) and not torch.equal(epoch0[0], epoch1[0])
    # Data-parallel ranks' shards put together are the one-process batches (distributed.py).
    one_process = make(0, shuffle=True)
    shards = [ShardedTrainBatches(one_process, rank, 3) for rank in range(3)]
    for (x, y), *parts in zip(one_process.epoch(2), *(shard.epoch(2) for shard in shards), strict=True):
        assert torch.equal(x, torch.cat([px for px, _ in parts])) and torch.equal(y, torch.cat([py for _, py in parts]))


def _folder_run(raw: dict) -> RunConfig:
    return parse(RunConfig, raw, "c.yaml")


def test_a_train_subset_keeps_the_full_splits_mean(tmp_path):
    # As Smith's reduced-data runs swapped only the LMDB: one mean file over the whole split.
    write_image_folder(tmp_path, ["n01440764", "n02102040"], per_class=4, size=(20, 30), seed=3)
    cfg = _folder_run(_folder_config({"root": str(tmp_path), "classes": ["n01440764", "n02102040"],
                                      "normalize": "caffe_mean_image", "train_subset": 3}, "resnet50"))
    full = data.load_split("imagefolder", "train", tmp_path, class_list=cfg.data.classes)
    subset = data.load_split("imagefolder", "train", tmp_path, subset=3, class_list=cfg.data.classes)
    test_split = data.load_split("imagefolder", "test", tmp_path, class_list=cfg.data.classes)
    train, test = folder_batches(cfg, subset, test_split, torch.device("cpu"))
    expected = compute_mean_image([path for path, _ in full.samples])
    # Summed from the squashed cache, exactly as from the decoded images: the same integer sums.
    assert torch.equal(train.mean_image, expected) and torch.equal(test.mean_image, expected)
    assert not torch.equal(expected, compute_mean_image([path for path, _ in subset.samples]))
    assert (train.crop_size, train.mirror, test.train) == (224, False, False)  # resnet50's side; augment none
    assert len(train.dataset) == 3 and len(train.cache) == len(full)  # the subset reads the full split's cache


def test_caffe_cache_command_fills_the_caches_the_training_jobs_read(tmp_path, monkeypatch, capsys):
    # The workflow's caffe_cache job (onecycle caffe-cache) squashes and averages, with progress
    # lines; load_data then decodes nothing.
    write_image_folder(tmp_path, ["n01440764", "n02102040"], per_class=2, size=(20, 30), seed=8)
    classes = ["n01440764", "n02102040"]
    splits = json.dumps([{"root": str(tmp_path), "classes": classes}])
    record = tmp_path / "imagefolder.caffe_cache.json"
    assert cli.main(["caffe-cache", "--dataset", "imagefolder", "--splits", splits, "--record", str(record)]) == 0
    written = json.loads(record.read_text())
    assert written["splits"] == [{"root": str(tmp_path), "classes": classes}]
    assert [(c["split"], c["images"]) for c in written["caches"]] == [("train", 4), ("test", 4)]
    printed = capsys.readouterr().out
    assert "squashing " in printed and ": 4/4 images" in printed

    def must_not_run(*args, **kwargs):
        raise AssertionError("a training job decoded the images again")

    monkeypatch.setattr(caffe_imagenet, "compute_mean_image", must_not_run)
    monkeypatch.setattr(squash_cache, "_build", must_not_run)
    cfg = _folder_run(_folder_config({"root": str(tmp_path), "classes": classes, "normalize": "caffe_mean_image"}))
    split = {name: data.load_split("imagefolder", name, tmp_path, class_list=classes) for name in ("train", "test")}
    train, test = folder_batches(cfg, split["train"], split["test"], torch.device("cpu"))
    monkeypatch.undo()
    assert torch.equal(train.mean_image, compute_mean_image([path for path, _ in split["train"].samples]))
    assert [c["cache"] for c in written["caches"]] == [str(train.cache.path), str(test.cache.path)]


@pytest.mark.parametrize("splits, message", [
    ("not json", "--splits: expected a JSON list .*; not JSON"),
    ("{}", "--splits: expected a JSON list .* got '{}'"),
    ("[3]", "--splits: expected a JSON list .* got '\\[3\\]'"),
    ('[{"root": null, "clases": null}]', "--splits: expected a JSON list"),
])
def test_caffe_cache_command_refuses_bad_splits_and_writes_nothing(tmp_path, capsys, splits, message):
    record = tmp_path / "record.json"
    assert cli.main(["caffe-cache", "--dataset", "imagefolder", "--splits", splits, "--record", str(record)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and re.search(message, error), error
    assert not record.exists()


def test_caffe_cache_command_is_for_folder_datasets(tmp_path, capsys):
    record = tmp_path / "record.json"
    assert cli.main(["caffe-cache", "--dataset", "cifar10", "--splits", "[]", "--record", str(record)]) == 2
    assert "Caffe's image caches are for ImageNet folders" in capsys.readouterr().err
    assert not record.exists()
