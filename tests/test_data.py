"""onecycle.data: real-format fixtures round-trip, real Fashion-MNIST, errors, batching, prepare()."""

from __future__ import annotations

import dataclasses
import gzip
import json
import io
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import HANG_GUARD_S
import onecycle.data as data
from onecycle.data import catalog, sources
from data_fixtures import (idx_bytes, md5_of_bytes, md5_of_file, random_uint8, tar_gz,
                           write_cifar10, write_cifar100, write_idx, write_idx_dataset,
                           write_image, write_image_folder)

# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


def small_idx_arrays(seed: int = 0):
    train = (random_uint8((12, 28, 28), seed), np.arange(12, dtype=np.uint8) % 10)
    test = (random_uint8((5, 28, 28), seed + 1), np.array([9, 0, 3, 3, 1], dtype=np.uint8))
    return train, test


def cifar_rows(count: int, seed: int) -> np.ndarray:
    return random_uint8((count, 3 * 32 * 32), seed)


@pytest.fixture
def cifar10_root(tmp_path):
    root = tmp_path / "cifar10"
    train = [(cifar_rows(3, i), [(i + j) % 10 for j in range(3)]) for i in range(5)]
    test = (cifar_rows(4, 99), [1, 2, 3, 9])
    write_cifar10(root, train, test)
    return root, train, test


def fixture_source(base: data.Source, folder: Path, archive: Path, extracted: Path) -> data.Source:
    """`base` with a fixture archive's md5 and its extracted files' md5s."""
    contents = {f"{folder.name}/{p.name}": md5_of_file(p) for p in sorted(extracted.iterdir())}
    return dataclasses.replace(base, mirrors=("fixture://",),
                               downloads={archive.name: md5_of_file(archive)}, contents=contents)


@pytest.fixture
def cifar10_remote(tmp_path, monkeypatch, cifar10_root):
    """SOURCES['cifar10'] pointing at a fixture archive, and a recording `_fetch` that copies it."""
    root, _, _ = cifar10_root
    archive = tar_gz(tmp_path / "cifar-10-python.tar.gz", root / "cifar-10-batches-py",
                     "cifar-10-batches-py")
    source = fixture_source(data.SOURCES["cifar10"], root / "cifar-10-batches-py", archive,
                            root / "cifar-10-batches-py")
    monkeypatch.setitem(data.SOURCES, "cifar10", source)
    fetched = []

    def copy_fixture(url, folder, filename):
        fetched.append(url)
        Path(folder, filename).write_bytes(archive.read_bytes())

    monkeypatch.setattr(sources, "_fetch", copy_fixture)
    return source, fetched


def first_batch(batches, epoch=0):
    return next(iter(batches.epoch(epoch)))


# ---------------------------------------------------------------------------------------------
# registry and roots
# ---------------------------------------------------------------------------------------------


def test_registry_describes_every_dataset():
    assert set(data.DATASETS) == {"fashion_mnist", "mnist", "cifar10", "cifar100", "digits",
                                  "imagefolder", "imagenet"}
    assert (data.DATASETS["cifar100"].num_classes, data.DATASETS["cifar10"].train_size) == (100, 50_000)
    assert (data.DATASETS["imagenet"].train_size, data.DATASETS["imagenet"].test_size) == (1_281_167, 50_000)
    assert data.DATASETS["imagefolder"].test_size is None
    assert set(data.SOURCES) == set(data.DATASETS) - {"digits"}


def test_default_root_uses_env_then_cwd(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setenv("ONECYCLE_DATA", str(tmp_path / "store"))
    assert data.default_root("cifar10") == tmp_path / "store" / "cifar10"
    monkeypatch.delenv("ONECYCLE_DATA")
    monkeypatch.chdir(tmp_path)
    assert data.default_root("fashion_mnist") == tmp_path / "data" / "fashion_mnist"
    monkeypatch.setattr(catalog, "DEBIAN_FASHION_MNIST", tmp_path)
    assert data.default_root("fashion_mnist") == tmp_path
    monkeypatch.setenv("ONECYCLE_DATA", str(tmp_path / "store"))  # one rule: the variable first, for every dataset
    assert data.default_root("fashion_mnist") == tmp_path / "store" / "fashion_mnist"


def test_prepare_data_reads_and_records_the_root_onecycle_data_names(tmp_path, monkeypatch, capsys):
    # The rule through the data job's command: --root > $ONECYCLE_DATA/<dataset> > default. The
    # variable must win over Debian's copy, the default for fashion_mnist when it is installed.
    from onecycle import cli

    real = data.default_root("fashion_mnist")  # the suite's Fashion-MNIST, wherever it is
    if not (real / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {real} (apt-get install dataset-fashion-mnist)")
    store = tmp_path / "store"
    (store / "fashion_mnist").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (store / "fashion_mnist" / name).symlink_to(real / name)
    monkeypatch.chdir(tmp_path)
    record = tmp_path / "r.json"

    def prepare(*args: str) -> int:
        record.unlink(missing_ok=True)
        capsys.readouterr()
        return cli.main(["prepare-data", "--dataset", "fashion_mnist", "--record", str(record), "--no-download",
                         *args])

    monkeypatch.setenv("ONECYCLE_DATA", str(store))
    assert prepare() == 0
    assert json.loads(record.read_text()) == {"dataset": "fashion_mnist", "root": str(store / "fashion_mnist"),
                                              "root_from": "$ONECYCLE_DATA", "verified": True}
    assert capsys.readouterr().out == f"fashion_mnist: ready at {store / 'fashion_mnist'}\n"
    # Its files are the ones verified: one that is not Fashion-MNIST's is refused, naming it.
    (store / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    (store / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").symlink_to(real / "train-labels-idx1-ubyte.gz")
    assert prepare() == 2 and not record.exists()
    error = capsys.readouterr().err
    assert error.startswith(f"onecycle: error: {store / 'fashion_mnist' / 't10k-labels-idx1-ubyte.gz'}") and \
        error.count("\n") == 1, error
    # An empty $ONECYCLE_DATA is not passed over for another copy: refused in one line naming it.
    monkeypatch.setenv("ONECYCLE_DATA", str(tmp_path / "empty"))
    assert prepare() == 2 and not record.exists()
    error = capsys.readouterr().err
    assert error.startswith(f"onecycle: error: fashion_mnist: {tmp_path / 'empty' / 'fashion_mnist'} lacks ") and \
        error.count("\n") == 1, error
    # --root (a config's data.root) comes first.
    assert prepare("--root", str(real)) == 0
    assert json.loads(record.read_text())["root"] == str(real.resolve())
    assert json.loads(record.read_text())["root_from"] == "--root (data.root)"


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.default_root("svhn")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        data.load_split("digits", "val")


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_fixture_round_trips(tmp_path, gz):
    train, test = small_idx_arrays()
    write_idx_dataset(tmp_path, train, test, gz=gz)
    for split, (images, labels) in (("train", train), ("test", test)):
        loaded = data.load_split("mnist", split, tmp_path)
        assert loaded.images.dtype == torch.uint8 and loaded.images.shape == (len(labels), 1, 28, 28)
        assert np.array_equal(loaded.images[:, 0].numpy(), images)
        assert loaded.labels.dtype == torch.int64
        assert loaded.labels.tolist() == labels.tolist()
        assert loaded.num_classes == 10


def test_idx_header_is_parsed_big_endian(tmp_path):
    path = write_idx(tmp_path / "x", random_uint8((3, 2, 5), 0), gz=False)
    assert path.read_bytes()[:16] == bytes.fromhex("00000803" "00000003" "00000002" "00000005")
    assert data.read_idx(path, 2051).shape == (3, 2, 5)


@pytest.mark.parametrize("mangle, message", [
    (lambda raw: raw[:-7], "truncated: header says (4, 28, 28) = 3136 data bytes, file has 3129"),
    (lambda raw: raw + b"\0", "has extra bytes"),
    (lambda raw: raw[:10], "truncated IDX header"),
    (lambda raw: raw[:2], "truncated IDX file"),
    (lambda raw: (2049).to_bytes(4, "big") + raw[4:], "IDX magic number 2049, expected 2051"),
])
def test_bad_idx_files_name_the_file(tmp_path, mangle, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(mangle(idx_bytes(random_uint8((4, 28, 28), 0))))
    with pytest.raises(ValueError) as err:
        data.read_idx(path, data.IDX_IMAGES_MAGIC)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_gzip_idx_names_the_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(500, np.uint8)))[:-20])
    with pytest.raises(ValueError, match=f"^{path}: corrupt or truncated gzip"):
        data.read_idx(path, data.IDX_LABELS_MAGIC)


def test_idx_label_problems(tmp_path):
    train, test = small_idx_arrays()
    write_idx_dataset(tmp_path, (train[0], train[1][:-1]), test, gz=False)
    with pytest.raises(ValueError, match="has 12 images but .*train-labels-idx1-ubyte has 11 labels"):
        data.load_split("mnist", "train", tmp_path)
    write_idx_dataset(tmp_path, (train[0], np.full(12, 10, np.uint8)), test, gz=False)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte: label 10 outside 0..9"):
        data.load_split("mnist", "train", tmp_path)


def test_idx_images_of_the_wrong_size_are_rejected(tmp_path):
    train, test = small_idx_arrays()
    write_idx_dataset(tmp_path, (train[0][:, :27, :27], train[1]), test, gz=False)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: images are \(27, 27\), "
                                         r"fashion_mnist has 28x28"):
        data.load_split("fashion_mnist", "train", tmp_path)


def test_missing_idx_file_says_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"no t10k-images-idx3-ubyte \(or t10k-images-idx3-ubyte.gz\); "
                             r"run onecycle.data.prepare\('mnist', root\) first"):
        data.load_split("mnist", "test", tmp_path)


# ---------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------


def test_cifar10_fixture_round_trips(cifar10_root):
    root, train, test = cifar10_root
    loaded = data.load_split("cifar10", "train", root)
    rows = np.concatenate([d for d, _ in train])
    assert loaded.images.shape == (15, 3, 32, 32)
    # A row is the 1024 red, then green, then blue values (cifar.html).
    assert np.array_equal(loaded.images[4, 1].numpy().ravel(), rows[4, 1024:2048])
    assert np.array_equal(loaded.images.numpy().reshape(15, -1), rows)
    assert loaded.labels.tolist() == [label for _, labels in train for label in labels]
    loaded_test = data.load_split("cifar10", "test", root)
    assert np.array_equal(loaded_test.images.numpy().reshape(4, -1), test[0])
    assert loaded_test.labels.tolist() == test[1]


def test_cifar100_uses_fine_labels(tmp_path):
    train = (cifar_rows(6, 0), [0, 17, 42, 99, 5, 63], [0, 1, 2, 3, 4, 5])
    test = (cifar_rows(2, 1), [98, 1], [19, 0])
    write_cifar100(tmp_path, train, test)
    loaded = data.load_split("cifar100", "train", tmp_path)
    assert loaded.num_classes == 100 and loaded.labels.tolist() == train[1]
    assert np.array_equal(loaded.images.numpy().reshape(6, -1), train[0])
    assert data.load_split("cifar100", "test", tmp_path).labels.tolist() == test[1]


def test_cifar_batch_problems_name_file_and_key(cifar10_root):
    root, _, _ = cifar10_root
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"^{batch}: not a readable CIFAR python batch"):
        data.load_split("cifar10", "train", root)
    batch.write_bytes(pickle.dumps({b"data": cifar_rows(2, 0), b"fine_labels": [1, 2]}, protocol=2))
    with pytest.raises(ValueError, match=f"^{batch}: missing key 'labels'"):
        data.load_split("cifar10", "train", root)


def test_cifar_pickle_cannot_run_code(cifar10_root):
    root, _, _ = cifar10_root
    batch = root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(b"cos\nsystem\n(S'true'\ntR.")  # protocol-0 pickle calling os.system
    with pytest.raises(ValueError, match="unexpected object os.system"):
        data.load_split("cifar10", "test", root)


# ---------------------------------------------------------------------------------------------
# digits and real Fashion-MNIST
# ---------------------------------------------------------------------------------------------


def test_digits_split_sizes_and_values():
    from sklearn.datasets import load_digits

    train, test = data.load_split("digits", "train"), data.load_split("digits", "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    allowed = {round(v * 255 / 16) for v in range(17)}
    values = set(torch.cat([train.images, test.images]).unique().tolist())
    assert values <= allowed and {0, 255} <= values
    sklearn_targets = np.bincount(load_digits().target)
    assert np.array_equal(np.bincount(torch.cat([train.labels, test.labels]).numpy()), sklearn_targets)


REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not REAL_FASHION.is_dir(),
                    reason="real Fashion-MNIST needs Debian's dataset-fashion-mnist package")
def test_real_fashion_mnist():
    assert data.prepare("fashion_mnist") == REAL_FASHION  # md5s of the IDX bytes verified
    train = data.load_split("fashion_mnist", "train")
    test = data.load_split("fashion_mnist", "test")
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # The widely quoted Fashion-MNIST training-set normalisation constants, published to four
    # decimals (+-5e-5); ours are exact integer sums divided in float64.
    assert train.channel_mean()[0] == pytest.approx(0.2860, abs=5e-5)
    assert train.channel_std()[0] == pytest.approx(0.3530, abs=5e-5)


# ---------------------------------------------------------------------------------------------
# subsets and channel statistics
# ---------------------------------------------------------------------------------------------


def test_subsets_are_nested_seeded_and_train_only(tmp_path):
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1).repeat(28, 1).repeat(28, 2)
    write_idx_dataset(tmp_path, (images, np.zeros(40, np.uint8)), small_idx_arrays()[1], gz=False)
    ids = lambda ds: ds.images[:, 0, 0, 0].tolist()  # noqa: E731 - image n is filled with n
    small = ids(data.load_split("mnist", "train", tmp_path, subset=10, subset_seed=3))
    large = ids(data.load_split("mnist", "train", tmp_path, subset=25, subset_seed=3))
    assert len(small) == 10 and small == sorted(small) and set(small) < set(large)
    assert small != ids(data.load_split("mnist", "train", tmp_path, subset=10, subset_seed=4))
    with pytest.raises(ValueError, match="subset=41 must be in 1..40"):
        data.load_split("mnist", "train", tmp_path, subset=41)
    with pytest.raises(ValueError, match="subset=5 on the 'test' split"):
        data.load_split("mnist", "test", tmp_path, subset=5)


def test_channel_statistics_match_numpy():
    images = torch.from_numpy(random_uint8((9, 3, 5, 4), 7))
    dataset = data.ArrayDataset(images, torch.zeros(9, dtype=torch.int64), 10)
    scaled = images.numpy() / 255.0
    # Both in float64 over 180 values per channel: rounding below 180 u = 2e-14.
    assert dataset.channel_mean() == pytest.approx(scaled.mean(axis=(0, 2, 3)).tolist(), rel=1e-12)
    assert dataset.channel_std() == pytest.approx(scaled.std(axis=(0, 2, 3)).tolist(), rel=1e-12)


def test_mean_image_is_the_per_pixel_mean_of_compute_image_mean():
    images = torch.from_numpy(random_uint8((9, 3, 5, 4), 8))
    dataset = data.ArrayDataset(images, torch.zeros(9, dtype=torch.int64), 10)
    mean = dataset.mean_image()
    assert mean.dtype == torch.float32 and mean.shape == (3, 5, 4)
    # An exact integer sum, divided in float64, rounded once to float32: within 2^-24 = 6e-8.
    np.testing.assert_allclose(mean.numpy(), images.numpy().astype(np.float64).mean(axis=0), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def indexed_dataset(count: int, channels: int = 2, size: int = 6) -> data.ArrayDataset:
    """Random images whose label is their own index, so a batch says where each image came from."""
    return data.ArrayDataset(torch.from_numpy(random_uint8((count, channels, size, size), 1)),
                             torch.arange(count), count)


def raw_batches(dataset, epoch, **kwargs):
    """Batches with mean 0, std 1/255, so the float outputs are the raw pixel values."""
    channels = dataset.images.shape[1]
    batches = data.Batches(dataset, kwargs.pop("batch_size", 8), shuffle=True, drop_last=False,
                           mean=[0.0] * channels, std=[1 / 255] * channels, seed=5, **kwargs)
    return [(x.round().to(torch.uint8), y) for x, y in batches.epoch(epoch)]


def test_batches_are_a_pure_function_of_seed_and_epoch():
    dataset = indexed_dataset(50)
    make = lambda seed: data.Batches(dataset, 8, shuffle=True, drop_last=False,  # noqa: E731
                                     augment="pad_crop_mirror", mean=[0.5, 0.5], std=[0.2, 0.2],
                                     seed=seed)
    uninterrupted = make(11)
    for epoch in range(3):
        list(uninterrupted.epoch(epoch))
    resumed = list(make(11).epoch(3))
    for (x1, y1), (x2, y2) in zip(list(uninterrupted.epoch(3)), resumed, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    labels_of = lambda batches, epoch: torch.cat([y for _, y in batches.epoch(epoch)])  # noqa: E731
    assert not torch.equal(labels_of(uninterrupted, 3), labels_of(uninterrupted, 4))
    assert not torch.equal(labels_of(uninterrupted, 3), labels_of(make(12), 3))
    assert sorted(labels_of(uninterrupted, 4).tolist()) == list(range(50))


def caffe_cursor_batches(lmdb_order: list[int], batch_size: int, batches: int) -> list[list[int]]:
    """Caffe's DataLayer, literally: a cursor over the LMDB that yields batch_size records per
    batch and goes back to the first record after the last (cursor->SeekToFirst())."""
    cursor, out = 0, []
    for _ in range(batches):
        batch = []
        for _ in range(batch_size):
            batch.append(lmdb_order[cursor])
            cursor = (cursor + 1) % len(lmdb_order)
        out.append(batch)
    return out


def test_caffe_lmdb_order_is_caffes_cursor_over_the_files_order():
    # 10 images, batch 3: 3 batches per pass (the tenth image waits for the next pass), so pass
    # 1 starts at image 9 and wraps, as Caffe's stream of batches does.
    dataset = indexed_dataset(10)
    make = lambda seed: data.Batches(dataset, 3, shuffle=True, drop_last=True, augment="mirror",  # noqa: E731
                                     mean=[0, 0], std=None, seed=seed, order="caffe_lmdb")
    batches = make(0)
    ours = [y.tolist() for epoch in range(4) for _, y in batches.epoch(epoch)]
    assert ours == caffe_cursor_batches(list(range(10)), 3, 12)
    assert ours[3] == [9, 0, 1]
    # The order is the LMDB's for every seed; the mirror coins are still the seed's.
    other = make(1)
    assert [y.tolist() for _, y in other.epoch(2)] == [y.tolist() for _, y in batches.epoch(2)]
    assert not torch.equal(first_batch(other, 2)[0], first_batch(batches, 2)[0])


def test_caffe_lmdb_pass_by_hand():
    lmdb = torch.tensor([5, 3, 8, 1, 9])
    assert data.caffe_lmdb_pass(lmdb, 0, 4).tolist() == [5, 3, 8, 1]
    assert data.caffe_lmdb_pass(lmdb, 1, 4).tolist() == [9, 5, 3, 8]
    assert data.caffe_lmdb_pass(lmdb, 2, 4).tolist() == [1, 9, 5, 3]
    with pytest.raises(ValueError, match="count=6 must be in 1..5"):
        data.caffe_lmdb_pass(lmdb, 0, 6)


def test_caffe_lmdb_order_is_for_training_batches():
    common = dict(mean=[0, 0], std=None, seed=0, order="caffe_lmdb")
    with pytest.raises(ValueError, match="order 'caffe_lmdb' is a training order"):
        data.Batches(indexed_dataset(10), 3, shuffle=False, drop_last=True, **common)
    with pytest.raises(ValueError, match="order 'caffe_lmdb' is a training order"):
        data.Batches(indexed_dataset(10), 3, shuffle=True, drop_last=False, **common)
    with pytest.raises(ValueError, match="order='lmdb'"):
        data.Batches(indexed_dataset(10), 3, shuffle=True, drop_last=True, **{**common, "order": "lmdb"})


def test_batch_counts_and_drop_last():
    dataset = indexed_dataset(10)
    common = dict(mean=[0, 0], std=None, seed=0)
    kept = data.Batches(dataset, 4, shuffle=False, drop_last=False, **common)
    dropped = data.Batches(dataset, 4, shuffle=False, drop_last=True, **common)
    assert len(kept) == 3 and [len(y) for _, y in kept.epoch(0)] == [4, 4, 2]
    assert len(dropped) == 2 and torch.cat([y for _, y in dropped.epoch(0)]).tolist() == list(range(8))
    assert len(data.Batches(dataset, 11, shuffle=True, drop_last=False, **common)) == 1
    with pytest.raises(ValueError, match="batch_size=11 exceeds the dataset's 10 examples"):
        data.Batches(dataset, 11, shuffle=True, drop_last=True, **common)


def test_mirror_flips_exactly_the_masked_images():
    dataset = indexed_dataset(400)
    flipped = 0
    for images, labels in raw_batches(dataset, 2, augment="mirror", batch_size=64):
        for image, label in zip(images, labels):
            original = dataset.images[label]
            is_flipped = torch.equal(image, torch.flip(original, dims=[-1]))
            assert is_flipped or torch.equal(image, original)
            flipped += is_flipped
    assert 140 < flipped < 260  # Binomial(400, 1/2): mean 200, sd 10


def test_pad_crop_mirror_outputs_windows_of_the_padded_image():
    dataset = indexed_dataset(120)
    pad = data.CROP_PADDING
    seen_offsets, flips = set(), 0
    for images, labels in raw_batches(dataset, 0, augment="pad_crop_mirror", batch_size=32):
        for image, label in zip(images, labels):
            padded = torch.nn.functional.pad(dataset.images[label], (pad,) * 4)
            matches = [(dy, dx, flip) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                       for flip in (False, True)
                       if torch.equal(image, (lambda w: w.flip(-1) if flip else w)(
                           padded[:, dy:dy + 6, dx:dx + 6]))]
            assert matches, f"image {label} is not a window of its padded original"
            seen_offsets.add(matches[0][:2])
            flips += matches[0][2]
    assert len(seen_offsets) > 40 and 30 < flips < 90  # 81 offsets, flips ~ Binomial(120, 1/2)


def test_normalisation_by_hand():
    images = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # 1 image, 2 ch, 1x2
    dataset = data.ArrayDataset(images, torch.tensor([0]), 2)
    common = dict(shuffle=False, drop_last=False, seed=0)
    x, _ = first_batch(data.Batches(dataset, 1, mean=[0.5, 0.2], std=[0.5, 0.25], **common))
    assert x.dtype == torch.float32
    # (0/255 - .5)/.5 = -1, (1 - .5)/.5 = 1; (.2 - .2)/.25 = 0, (.4 - .2)/.25 = .8; three float32
    # operations on values below 2, each within 2^-24 x 2 = 1.2e-7.
    assert torch.allclose(x[0], torch.tensor([[[-1.0, 1.0]], [[0.0, 0.8]]]), atol=1e-6)
    x, _ = first_batch(data.Batches(dataset, 1, mean=[0.5, 0.2], std=None, **common))
    assert torch.allclose(x[0], torch.tensor([[[-0.5, 0.5]], [[0.0, 0.2]]]), atol=1e-6)


def test_batches_reject_bad_arguments():
    dataset = indexed_dataset(4)
    common = dict(shuffle=True, drop_last=False, seed=0)
    with pytest.raises(ValueError, match="augment='crop'"):
        data.Batches(dataset, 2, augment="crop", mean=[0, 0], std=None, **common)
    with pytest.raises(ValueError, match=r"mean=\(0.5,\) has 1 entries for 2 channels"):
        data.Batches(dataset, 2, mean=[0.5], std=None, **common)
    with pytest.raises(ValueError, match="epoch_index must be a non-negative int, got -1"):
        first_batch(data.Batches(dataset, 2, mean=[0, 0], std=None, **common), -1)


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------

WNIDS = ["n01440764", "n02102040", "n02979186"]


def test_image_folder_lists_classes_in_the_given_order(tmp_path):
    write_image_folder(tmp_path, WNIDS, per_class=3, size=(20, 30), seed=0)
    train = data.load_split("imagefolder", "train", tmp_path, class_list=[WNIDS[2], WNIDS[0]])
    assert train.classes == (WNIDS[2], WNIDS[0]) and train.num_classes == 2 and len(train) == 6
    assert {(Path(p).parent.name, label) for p, label in train.samples} == {(WNIDS[2], 0), (WNIDS[0], 1)}
    assert data.load_split("imagefolder", "test", tmp_path, class_list=WNIDS).split_dir == tmp_path / "val"
    assert len(data.load_split("imagefolder", "train", tmp_path, class_list=WNIDS, subset=4)) == 4


def test_image_folder_all_classes_are_the_train_folders_sorted(tmp_path):
    # data.classes: all, i.e. full ImageNet: ImageFolder's sorted wnid order, the same for val.
    shuffled = [WNIDS[1], WNIDS[2], WNIDS[0]]
    write_image_folder(tmp_path, shuffled, per_class=2, size=(8, 8), seed=0)
    train = data.load_split("imagefolder", "train", tmp_path, class_list="all")
    test = data.load_split("imagefolder", "test", tmp_path, class_list="all")
    assert train.classes == test.classes == tuple(sorted(WNIDS)) and train.num_classes == 3
    (tmp_path / "train" / "n09999999").mkdir()  # a class without a val folder is an error
    with pytest.raises(ValueError, match=r"val/ and train/ hold different class folders: only in val/: \[\], "
                                         r"only in train/: \['n09999999'\]"):
        data.load_split("imagefolder", "test", tmp_path, class_list="all")
    with pytest.raises(ValueError, match=".*/nowhere/train does not exist"):
        data.load_split("imagefolder", "train", tmp_path / "nowhere", class_list="all")


def test_imagenet_is_the_users_folder_with_every_class_and_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet: .* lacks train/; ImageNet cannot be downloaded without "
                                                "a registration"):
        data.prepare("imagenet", tmp_path / "imagenet")
    assert not (tmp_path / "imagenet").exists()
    write_image_folder(tmp_path / "imagenet", WNIDS, per_class=2, size=(8, 8), seed=0)
    assert data.prepare("imagenet", tmp_path / "imagenet") == tmp_path / "imagenet"
    train = data.load_split("imagenet", "train", tmp_path / "imagenet")
    assert train.classes == tuple(sorted(WNIDS)) and len(train) == 6
    with pytest.raises(ValueError, match="class_list is for imagefolder only, not 'imagenet'"):
        data.load_split("imagenet", "train", tmp_path / "imagenet", class_list=WNIDS[:1])


def test_image_folder_missing_class_names_wnid_and_folder(tmp_path):
    write_image_folder(tmp_path, WNIDS, per_class=1, size=(8, 8), seed=0)
    with pytest.raises(ValueError, match=f"class 'n09999999': folder {tmp_path / 'val' / 'n09999999'} "
                                         f"does not exist"):
        data.load_split("imagefolder", "test", tmp_path, class_list=[WNIDS[0], "n09999999"])
    (tmp_path / "train" / "n00000001").mkdir()
    with pytest.raises(ValueError, match="class 'n00000001': folder .* holds no images"):
        data.load_split("imagefolder", "train", tmp_path, class_list=["n00000001"])


def test_folder_batches_center_crop_values_and_seeding(tmp_path):
    pixels = random_uint8((256, 256, 3), 3)
    write_image(tmp_path / "val" / WNIDS[0] / "a.png", pixels)  # Resize(256) leaves 256x256 alone
    dataset = data.load_split("imagefolder", "test", tmp_path, class_list=WNIDS[:1])
    x, y = first_batch(data.FolderBatches(dataset, 1, shuffle=False, drop_last=False,
                                          transform=data.torchvision_preset(train=False),
                                          seed=0, num_workers=0))
    crop = torch.from_numpy(pixels[16:240, 16:240]).permute(2, 0, 1).double() / 255
    expected = (crop - torch.tensor(data.IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(
        data.IMAGENET_STD).view(3, 1, 1)
    assert x.shape == (1, 3, 224, 224) and y.tolist() == [0]
    # A few float32 operations on values below |2.7| ((1 - 0.406) / 0.225): each within 1.6e-7.
    assert torch.allclose(x[0].double(), expected, atol=1e-5)


def test_folder_batches_augmentation_is_seeded_per_sample(tmp_path):
    write_image_folder(tmp_path, WNIDS, per_class=2, size=(40, 50), seed=1)
    dataset = data.load_split("imagefolder", "train", tmp_path, class_list=WNIDS)
    make = lambda workers: data.FolderBatches(dataset, 4, shuffle=True, drop_last=False,  # noqa: E731
                                              transform=data.torchvision_preset(train=True), seed=9,
                                              num_workers=workers)
    in_process = list(make(0).epoch(1))
    with_worker = list(make(1).epoch(1))
    assert len(in_process) == 2 and in_process[0][0].shape == (4, 3, 224, 224)
    for (x1, y1), (x2, y2) in zip(in_process, with_worker, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(in_process[0][0], next(iter(make(0).epoch(2)))[0])


def test_folder_caffe_lmdb_order_is_one_shuffle_streamed_for_every_seed(tmp_path):
    # convert_imageset --shuffle wrote the ImageNet LMDB once: one permutation for all runs,
    # read as a stream across passes.
    write_image_folder(tmp_path, WNIDS, per_class=3, size=(8, 8), seed=4)
    dataset = data.load_split("imagefolder", "train", tmp_path, class_list=WNIDS)  # 9 images
    make = lambda seed: data.FolderBatches(dataset, 2, shuffle=True, drop_last=True,  # noqa: E731
                                           transform=data.torchvision_preset(train=True, crop_size=8),
                                           seed=seed, num_workers=0, order="caffe_lmdb")
    batches = make(0)
    lmdb = torch.cat([batches.pass_order(0), batches.pass_order(1)])[:9].tolist()
    assert sorted(lmdb) == list(range(9)) and lmdb != list(range(9))
    passes = [batches.pass_order(p).tolist() for p in range(3)]
    assert [passes[p][i:i + 2] for p in range(3) for i in (0, 2, 4, 6)] == caffe_cursor_batches(lmdb, 2, 12)
    assert all(torch.equal(make(7).pass_order(p), batches.pass_order(p)) for p in range(3))
    labels = [y.tolist() for _, y in batches.epoch(1)]
    assert labels == [[dataset.samples[i][1] for i in passes[1][j:j + 2]] for j in (0, 2, 4, 6)]


# ---------------------------------------------------------------------------------------------
# prepare(): verification, download, extraction, concurrency
# ---------------------------------------------------------------------------------------------


def test_prepare_rejects_files_with_the_wrong_md5(tmp_path):
    write_idx_dataset(tmp_path, *small_idx_arrays(), gz=True)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: md5 [0-9a-f]{32} does not "
                                         r"match the expected 6bbc9ace898e44ae57da46a324031adb"):
        data.prepare("mnist", tmp_path, download=False)


def test_own_copy_is_accepted_only_with_the_opt_in_and_recorded(tmp_path, capsys):
    # A re-packed MNIST (the fixture's bytes are not the official files): refused in one line
    # without --no-verify, accepted with it, and the record says so, file by file.
    from onecycle import cli

    write_idx_dataset(tmp_path / "mnist", *small_idx_arrays(), gz=True)
    record = tmp_path / "mnist.json"
    args = ["prepare-data", "--dataset", "mnist", "--root", str(tmp_path / "mnist"), "--record", str(record),
            "--no-download"]
    assert cli.main(args) == 2
    assert "does not match the expected" in capsys.readouterr().err and not record.exists()
    assert cli.main([*args, "--no-verify"]) == 0
    assert "checksums not verified (--no-verify); 4 of 4 files differ" in capsys.readouterr().out
    written = json.loads(record.read_text())
    assert written["verified"] is False and "--no-verify" in written["checksums_skipped"]
    images = written["files"]["train-images-idx3-ubyte"]
    assert images == {"md5": md5_of_bytes(idx_bytes(small_idx_arrays()[0][0])),
                      "official_md5": "6bbc9ace898e44ae57da46a324031adb", "matches": False}


def test_own_copy_in_a_wrong_format_still_fails_with_the_opt_in(tmp_path):
    train, test = small_idx_arrays()
    write_idx_dataset(tmp_path, train, test, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(test[1])[:-2])  # truncated labels
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        data.prepare("mnist", tmp_path, download=False, verify=False)


def test_prepare_verifies_decompressed_idx_bytes(tmp_path, monkeypatch):
    train, test = small_idx_arrays()
    write_idx_dataset(tmp_path, train, test, gz=True)
    raw = {"train-images-idx3-ubyte": train[0], "train-labels-idx1-ubyte": train[1],
           "t10k-images-idx3-ubyte": test[0], "t10k-labels-idx1-ubyte": test[1]}
    source = dataclasses.replace(data.SOURCES["mnist"],
                                 contents={k: md5_of_bytes(idx_bytes(v)) for k, v in raw.items()})
    monkeypatch.setitem(data.SOURCES, "mnist", source)
    assert data.prepare("mnist", tmp_path, download=False) == tmp_path
    # Recompressing (as Debian did) changes the .gz bytes but not what is verified.
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=1))
    assert data.prepare("mnist", tmp_path, download=False) == tmp_path


def test_prepare_without_files_says_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.prepare("fashion_mnist", tmp_path / "none", download=False)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/data_batch_1"):
        data.prepare("cifar10", tmp_path / "none", download=False)


def test_prepare_downloads_verifies_and_installs(tmp_path, cifar10_remote):
    _, fetched = cifar10_remote
    root = tmp_path / "store" / "cifar10"
    (root.parent / ".cifar10.download-left-by-a-killed-run").mkdir(parents=True)
    assert data.prepare("cifar10", root) == root
    assert fetched == ["fixture://cifar-10-python.tar.gz"]
    assert len(data.load_split("cifar10", "train", root)) == 15
    assert data.prepare("cifar10", root) == root and len(fetched) == 1  # present: no new download
    assert sorted(p.name for p in root.parent.iterdir()) == [".cifar10.prepare.lock", "cifar10"]


def test_prepare_rejects_a_corrupt_download_and_installs_nothing(tmp_path, cifar10_remote,
                                                                monkeypatch):
    source, _ = cifar10_remote
    monkeypatch.setitem(data.SOURCES, "cifar10",
                        dataclasses.replace(source, downloads={"cifar-10-python.tar.gz": "0" * 32}))
    root = tmp_path / "store" / "cifar10"
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz: md5 .* does not match"):
        data.prepare("cifar10", root)
    assert sorted(p.name for p in root.parent.iterdir()) == [".cifar10.prepare.lock"]


def test_prepare_refuses_to_download_into_an_incomplete_folder(tmp_path, cifar10_remote):
    root = tmp_path / "partial"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"incomplete cifar10 folder \(missing "
                                         r"cifar-10-batches-py/[\w.]+\)"):
        data.prepare("cifar10", root)


def test_extraction_rejects_members_outside_the_target(tmp_path, monkeypatch):
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"owned"
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    monkeypatch.setitem(data.SOURCES, "cifar10", dataclasses.replace(
        data.SOURCES["cifar10"], mirrors=("fixture://",), downloads={archive.name: md5_of_file(archive)}))
    monkeypatch.setattr(sources, "_fetch", lambda url, folder, name: Path(folder, name).write_bytes(
        archive.read_bytes()))
    root = tmp_path / "store" / "cifar10"
    with pytest.raises(ValueError, match="refusing unsafe member '../escaped.txt'"):
        data.prepare("cifar10", root)
    assert not list(tmp_path.rglob("escaped.txt")) and not root.exists()


def test_imagenette_download_is_checked_for_its_class_folders(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    write_image_folder(tree / "imagenette2-320", list(data.IMAGENETTE_WNIDS[:-1]), 1, (8, 8), 0)
    archive = tar_gz(tmp_path / "imagenette2-320.tgz", tree / "imagenette2-320", "imagenette2-320")
    monkeypatch.setitem(data.SOURCES, "imagefolder", dataclasses.replace(
        data.SOURCES["imagefolder"], mirrors=("fixture://",),
        downloads={archive.name: md5_of_file(archive)}))
    monkeypatch.setattr(sources, "_fetch", lambda url, folder, name: Path(folder, name).write_bytes(
        archive.read_bytes()))
    # Imagenette downloads to the default root only (a root given is the user's own images).
    monkeypatch.setenv("ONECYCLE_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=f"lacks train/{data.IMAGENETTE_WNIDS[-1]}/"):
        data.prepare("imagefolder")
    write_image_folder(tree / "imagenette2-320", list(data.IMAGENETTE_WNIDS), 1, (8, 8), 0)
    tar_gz(archive, tree / "imagenette2-320", "imagenette2-320")
    monkeypatch.setitem(data.SOURCES, "imagefolder", dataclasses.replace(
        data.SOURCES["imagefolder"], downloads={archive.name: md5_of_file(archive)}))
    root = data.prepare("imagefolder")
    assert root == tmp_path / "imagefolder"
    assert len(data.load_split("imagefolder", "train", root)) == 10  # root holds train/ and val/


def prepare_in_child(root: Path, barrier, results) -> None:
    """Runs in a forked process: the parent's patched SOURCES and _fetch come along. It only
    touches files (no torch ops), so forking after torch was imported is safe."""
    try:
        barrier.wait(timeout=HANG_GUARD_S)  # start prepare() in both processes together
        start = time.monotonic()
        data.prepare("cifar10", root)
        results.put(("ok", time.monotonic() - start))
    except BaseException as err:  # report it to the parent rather than dying silently
        results.put(("error", repr(err)))


def test_concurrent_prepare_downloads_once_and_never_exposes_a_partial_folder(tmp_path,
                                                                              cifar10_remote,
                                                                              monkeypatch):
    import multiprocessing

    source, _ = cifar10_remote
    archive = tmp_path / "cifar-10-python.tar.gz"
    record = tmp_path / "fetches.txt"

    def slow_recorded_fetch(url, folder, filename):
        with open(record, "a") as log:
            log.write(url + "\n")
        time.sleep(1.5)
        Path(folder, filename).write_bytes(archive.read_bytes())

    monkeypatch.setattr(sources, "_fetch", slow_recorded_fetch)
    root = tmp_path / "shared" / "cifar10"
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    children = [context.Process(target=prepare_in_child, args=(root, barrier, results))
                for _ in range(2)]
    for child in children:
        child.start()
    partial_views = 0
    deadline = time.monotonic() + HANG_GUARD_S
    while any(child.is_alive() for child in children) and time.monotonic() < deadline:
        if root.exists() and data._first_missing(source, root) is not None:
            partial_views += 1
        time.sleep(0.002)
    outcomes = [results.get(timeout=HANG_GUARD_S) for _ in children]
    for child in children:
        child.join(timeout=HANG_GUARD_S)
    assert [status for status, _ in outcomes] == ["ok", "ok"], outcomes
    assert record.read_text().splitlines() == ["fixture://cifar-10-python.tar.gz"]
    assert partial_views == 0
    # Both started together, so the one that did not download waited for the one that did.
    assert min(seconds for _, seconds in outcomes) >= 1.4
    assert len(data.load_split("cifar10", "train", root)) == 15
    assert sorted(p.name for p in root.parent.iterdir()) == [".cifar10.prepare.lock", "cifar10"]


# --- Caffe's data layer (data.normalize caffe_mean_image / caffe_scale) ----------------------

def caffe_reference(image: np.ndarray, mean: np.ndarray | None, scale: float, mirror: bool) -> np.ndarray:
    """data_transformer.cpp, Transform(const Datum&): the loop over (c, h, w), literally."""
    channels, height, width = image.shape
    out = np.empty((channels, height, width), dtype=np.float32)
    for c in range(channels):
        for h in range(height):
            for w in range(width):
                top_w = width - 1 - w if mirror else w
                value = float(image[c, h, w]) - (float(mean[c, h, w]) if mean is not None else 0.0)
                out[c, h, top_w] = value * scale
    return out


def test_caffe_mean_image_is_subtracted_before_the_mirror():
    dataset = indexed_dataset(64, channels=3, size=5)
    mean = dataset.mean_image()
    assert not torch.equal(mean, mean.flip(-1))  # else the order would not show
    batches = data.Batches(dataset, 16, shuffle=True, drop_last=False, augment="mirror",
                           caffe=data.CaffeTransform(mean_image=mean), seed=3)
    seen = set()
    for images, labels in batches.epoch(0):
        for image, label in zip(images, labels):
            source = dataset.images[label].numpy()
            as_is = caffe_reference(source, mean.numpy(), 1.0, mirror=False)
            mirrored = caffe_reference(source, mean.numpy(), 1.0, mirror=True)
            # Pixel minus mean on the 0..255 scale in float32: within 2^-24 x 256 = 1.5e-5.
            matches = [np.allclose(image.numpy(), ref, rtol=0, atol=1e-4) for ref in (as_is, mirrored)]
            assert any(matches), int(label)
            seen.add(matches.index(True))
    assert seen == {0, 1}  # both flipped and unflipped images were checked


def test_caffe_scale_is_lenets_one_256th_without_a_mean():
    dataset = indexed_dataset(10, channels=1, size=4)
    batches = data.Batches(dataset, 10, shuffle=False, drop_last=False,
                           caffe=data.CaffeTransform(scale=data.CAFFE_LENET_SCALE), seed=0)
    (images, _), = list(batches.epoch(0))
    expected = np.stack([caffe_reference(i.numpy(), None, 0.00390625, mirror=False) for i in dataset.images])
    np.testing.assert_array_equal(images.numpy(), expected)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "give either mean .and std. or caffe, not both or neither"),
    ({"mean": [0.5], "caffe": data.CaffeTransform()}, "give either mean"),
    ({"caffe": data.CaffeTransform(mean_image=torch.zeros(1, 3, 3))}, r"mean_image has shape \(1, 3, 3\), the images \(1, 4, 4\)"),
    ({"caffe": data.CaffeTransform(mean_image=torch.zeros(1, 4, 4)), "augment": "pad_crop_mirror"},
     "not 'pad_crop_mirror' .Caffe never pads."),
])
def test_bad_normalisation_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.Batches(indexed_dataset(4, channels=1, size=4), 2, shuffle=False, drop_last=False, seed=0, **kwargs)


# --- Caffe's test sample (train.caffe_test) ---------------------------------------------------

def test_caffe_test_windows_carry_the_cursor_and_wrap():
    # 10 images (label = index), tests of 3 batches x 4: the reader goes on where it stopped.
    dataset = indexed_dataset(10, channels=1, size=4)
    sample = data.CaffeTestSample(dataset, test_iter=3, batch_size=4, mirror=False,
                                  caffe=data.CaffeTransform(), seed=0)
    labels = lambda k: torch.cat([y for _, y in sample.epoch(k)]).tolist()  # noqa: E731
    assert len(sample) == 3
    assert labels(0) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert labels(1) == [2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3]
    for images, ys in sample.epoch(1):  # unmirrored, unscaled: the raw pixels
        assert torch.equal(images, dataset.images[ys].float())


def test_caffe_test_mirror_flips_after_the_mean_and_repeats_per_test():
    dataset = indexed_dataset(64, channels=3, size=5)
    mean = dataset.mean_image()
    sample = data.CaffeTestSample(dataset, test_iter=4, batch_size=16, mirror=True,
                                  caffe=data.CaffeTransform(mean_image=mean), seed=2)
    flipped = 0
    for images, labels in sample.epoch(0):
        for image, label in zip(images, labels):
            source = dataset.images[label].numpy()
            mirrored = caffe_reference(source, mean.numpy(), 1.0, mirror=True)
            as_is = caffe_reference(source, mean.numpy(), 1.0, mirror=False)
            is_flipped = np.allclose(image.numpy(), mirrored, atol=1e-4)  # float32 on 0..255: 1.5e-5
            assert is_flipped or np.allclose(image.numpy(), as_is, atol=1e-4)
            flipped += is_flipped
    assert 16 < flipped < 48  # Binomial(64, 1/2)
    again = [x for x, _ in sample.epoch(0)]
    assert all(torch.equal(a, b) for a, b in zip(again, [x for x, _ in sample.epoch(0)], strict=True))
    other = [x for x, _ in sample.epoch(1)]  # the next test: other flips (same images: 64 of 64)
    assert not all(torch.equal(a, b) for a, b in zip(again, other, strict=True))
