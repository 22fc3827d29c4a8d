"""Hostile input of issue 24 through the real `onecycle` command: each case ends in one line naming
the key or file (exit 2, nothing written), or, for result files a report reads, in a run named
broken and counted nowhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import HANG_GUARD_S, REPO
from data_fixtures import write_image_folder
from onecycle import data
from onecycle.data import caffe_imagenet, catalog
from onecycle.experiments.expansion import expand
from onecycle.experiments.loading import deep_merge
from test_cli import _assert_one_line_error, _onecycle


def _smoke(results: Path) -> dict:
    workflow = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    workflow["results_dir"] = str(results)
    return workflow


def _lenet_experiment() -> dict:
    return yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["experiments"]["fmnist_lenet"]


@pytest.mark.parametrize("patch, fragments", [
    ({"seeds": [0, 2**63]}, ["'seeds'", "9223372036854775808 is outside 0..2^63-1"]),
    ({"seeds": [-1]}, ["-1 is outside 0..2^63-1"]),
    ({"experiments": {"fmnist_lenet": {"base": {"data": {"train_subset": 60_001}}}}},
     ["train_subset = 60001 is more than the 60000 training images of fashion_mnist"]),
    ({"results_dir": "."}, ["results_dir '.' is the current folder, the root or a folder above"]),
    ({"results_dir": "/"}, ["results_dir '/' is the current folder"]),
    ({"results_dir": "./results/.."}, ["is the current folder"]),
    ({"experiments": {"fmnist_lenet": {"groups": {"g" * 256: {"train": {"epochs": 1}}}}}},
     ["group name 'ggg", "is 256 bytes; it becomes a folder name, which may have 255"]),
])
def test_workflow_values_no_file_can_hold_are_refused_before_any_job(tmp_path, patch, fragments):
    workflow = deep_merge(_smoke(tmp_path / "results"), patch)
    if "groups" in str(patch):
        workflow["experiments"]["fmnist_lenet"]["groups"]["g" * 256]["schedule"] = {
            "policy": "inv", "params": {"base_lr": 0.01, "gamma": 1.0e-4, "power": 0.75}}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(workflow))
    _assert_one_line_error(_onecycle("report", "--config", tmp_path / "w.yaml", cwd=tmp_path), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.yaml"]


@pytest.mark.parametrize("names, fragment", [
    (["fm", "fm_claims"], "experiment 'fm_claims': its report files fm_claims.* would be experiment 'fm''s too"),
    (["a", "a_range_test"], "experiment 'a_range_test': its report files a_range_test.* would be experiment 'a''s too"),
    (["claims_scorecard"], "its report files claims_scorecard.* would be the suite's own too"),
    (["a" * 230], "would pass the 255 bytes a file name may have"),
])
def test_experiment_names_whose_files_collide_are_refused(tmp_path, names, fragment):
    workflow = _smoke(tmp_path / "results")
    workflow["experiments"] = {name: _lenet_experiment() for name in names}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(workflow))
    _assert_one_line_error(_onecycle("report", "--config", tmp_path / "w.yaml"), "experiments: ", fragment)
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------------
# Data: the root read, image folders
# --------------------------------------------------------------------------------------------

def test_one_root_rule_for_every_dataset(tmp_path, monkeypatch):
    # data.root > $ONECYCLE_DATA > the dataset's default (Debian's copy for fashion_mnist).
    monkeypatch.setattr(catalog, "DEBIAN_FASHION_MNIST", tmp_path)
    monkeypatch.setenv("ONECYCLE_DATA", str(tmp_path / "store"))
    assert data.default_root("fashion_mnist") == tmp_path / "store" / "fashion_mnist"
    assert data.default_root("cifar10") == tmp_path / "store" / "cifar10"
    monkeypatch.delenv("ONECYCLE_DATA")
    assert data.default_root("fashion_mnist") == tmp_path


def test_each_root_a_job_reads_gets_its_own_data_record(tmp_path):
    workflow = _smoke(tmp_path / "results")
    exp = workflow["experiments"]["fmnist_lenet"]
    exp["groups"]["inv_8ep"]["data"] = {"root": "/srv/my fashion"}
    plan = expand(workflow, "w.yaml")
    assert plan.data_sources() == {"fashion_mnist": ("fashion_mnist", None),
                                   "fashion_mnist-root-" + _hex8("/srv/my fashion"): ("fashion_mnist",
                                                                                       "/srv/my fashion")}
    inv, onecycle = plan.trains["fmnist_lenet/inv_8ep/seed0"], plan.trains["fmnist_lenet/onecycle_4ep/seed0"]
    assert plan.data_inputs(inv)["data"] != plan.data_inputs(onecycle)["data"] == plan.data_record("fashion_mnist")


def _hex8(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


def test_own_image_folder_is_never_downloaded_into(tmp_path):
    # The README's own-images config: a missing or empty root is one line, no download attempt.
    result = _onecycle("prepare-data", "--dataset", "imagefolder", "--root", tmp_path / "mine", "--record",
                       tmp_path / "r.json")
    _assert_one_line_error(result, f"imagefolder: {tmp_path / 'mine'} lacks train/",
                           "Imagenette downloads only to the default root")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "mine").exists()


def _pets(tmp_path: Path) -> Path:
    classes = ["cat", "dog"]
    write_image_folder(tmp_path / "pets", classes, per_class=2, size=(20, 24), seed=0)
    config = {"name": "pets", "data": {"dataset": "imagefolder", "root": str(tmp_path / "pets"), "classes": "all"},
              "model": {"arch": "resnet20"}, "schedule": {"policy": "fixed", "params": {"base_lr": 0.001}},
              "train": {"batch_size": 2, "epochs": 1, "eval_batch_size": 4, "device": "cpu"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "pets"


def test_a_val_class_train_lacks_is_one_line(tmp_path):
    pets = _pets(tmp_path)
    shutil.copytree(pets / "val" / "dog", pets / "val" / "fox")
    expected = f"{pets}: val/ and train/ hold different class folders: only in val/: ['fox'], only in train/: []"
    _assert_one_line_error(_onecycle("train", "--config", tmp_path / "run.yaml", "--out", tmp_path / "out"), expected)
    _assert_one_line_error(_onecycle("prepare-data", "--dataset", "imagefolder", "--root", pets, "--record",
                                     tmp_path / "r.json"), expected)
    assert not (tmp_path / "out" / "metrics.json").exists() and not (tmp_path / "r.json").exists()


def test_a_file_that_is_no_image_is_named(tmp_path):
    pets = _pets(tmp_path)
    bad = pets / "val" / "cat" / "notes.jpg"  # val: scored whole (no batch is dropped)
    bad.write_text("not an image")
    result = _onecycle("train", "--config", tmp_path / "run.yaml", "--out", tmp_path / "out")
    # The run's start line, then the error in one line, the last (a DataLoader worker raised it).
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and [line for line in lines if line.startswith("onecycle: ")] == [lines[-1]]
    assert lines[-1] == f"onecycle: error: {bad}: not an image PIL can read (no image format it knows)"
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("command", ["train", "caffe-cache"])
def test_a_file_that_is_no_image_is_named_on_the_caffe_cache_path(tmp_path, command):
    # data.normalize 'caffe_mean_image': the split is decoded and squashed once into the Caffe
    # image cache (onecycle.data.squash_cache), by the workflow's data job (`caffe-cache`, one
    # DataLoader worker per core) or by a training started by hand. Either names the file in one
    # line and leaves no cache behind.
    pets = _pets(tmp_path)
    config = yaml.safe_load((tmp_path / "run.yaml").read_text())
    config["data"].update({"normalize": "caffe_mean_image", "crop_size": 16})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    bad = pets / "train" / "dog" / "notes.JPEG"
    bad.write_text("not an image")
    if command == "train":
        result = _onecycle("train", "--config", tmp_path / "run.yaml", "--out", tmp_path / "out")
    else:
        splits = json.dumps([{"root": str(pets), "classes": ["cat", "dog"]}])
        result = _onecycle("caffe-cache", "--dataset", "imagefolder", "--splits", splits, "--record",
                           tmp_path / "r.json")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and [line for line in lines if line.startswith("onecycle: ")] == [lines[-1]]
    assert lines[-1] == f"onecycle: error: {bad}: not an image PIL can read (no image format it knows)"
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "metrics.json").exists()
    cache = pets / caffe_imagenet.MEAN_CACHE_DIR  # made before the images are read
    assert not (tmp_path / "r.json").exists() and cache.is_dir() and list(cache.glob("*.u8")) == []


# --------------------------------------------------------------------------------------------
# Result files a report reads
# --------------------------------------------------------------------------------------------

@pytest.fixture
def smoke_copy(tmp_path):
    """The committed smoke results and config in a folder of their own."""
    shutil.copytree(REPO / "results" / "smoke", tmp_path / "results" / "smoke")
    (tmp_path / "smoke.yaml").write_text((REPO / "configs" / "smoke.yaml").read_text())
    return tmp_path


def _report(work: Path):
    result = _onecycle("report", "--config", "smoke.yaml", cwd=work)
    assert result.returncode == 0, result.stderr
    return pd.read_csv(work / "results/smoke/tables/fmnist_lenet.csv").set_index("group")


def test_a_nan_in_a_finished_runs_history_marks_it_broken(smoke_copy):
    history = smoke_copy / "results/smoke/train/fmnist_lenet/inv_8ep/seed1/history.csv"
    frame = pd.read_csv(history)
    frame.loc[2, "test_loss"] = float("nan")
    frame.to_csv(history, index=False)
    row = _report(smoke_copy).loc["inv_8ep"]
    assert row[["n", "n_completed", "n_broken"]].tolist() == [3, 2, 1]
    assert row["note"] == (f"broken, not counted: seed 1 (history.csv holds a non-finite test_loss at iteration "
                           f"{frame.loc[2, 'iteration']})")


@pytest.mark.parametrize("damage", ["empty history", "corrupt history", "corrupt bounds", "bounds not an object"])
def test_a_bad_range_test_file_is_named_and_the_run_left_out(smoke_copy, damage):
    seed = Path("results/smoke/range_test/fmnist_lenet/seed1")  # as the plan names it, from the workflow's folder
    name = "history.csv" if "history" in damage else "bounds.json"
    text = {"empty history": "", "corrupt history": 'lr,"unclosed\n1,2\n', "corrupt bounds": '{"suggestions": ',
            "bounds not an object": "[1, 2]"}[damage]
    (smoke_copy / seed / name).write_text(text)
    _report(smoke_copy)
    page = (smoke_copy / "results/smoke/report.html").read_text()
    # The runs table's row of range test seed 1 (group, seed, status: onecycle.report.html_runs).
    assert f"<td>range test</td><td>1</td><td>broken: {seed / name}" in page.replace("\n", "")
    assert "Of the 8 planned runs, 1 broken" in page


def test_a_corrupt_combined_bounds_file_is_one_line_naming_it(smoke_copy):
    combined = smoke_copy / "results/smoke/range_test/fmnist_lenet/bounds.json"
    combined.write_text("{")
    _assert_one_line_error(_onecycle("report", "--config", "smoke.yaml", cwd=smoke_copy),
                           f"{combined.relative_to(smoke_copy)}: unreadable bounds file")


def test_stale_and_missing_runs_are_named_and_never_counted(smoke_copy):
    # The config's inv_8ep LR edited after the runs; one onecycle run's metrics.json deleted.
    config = yaml.safe_load((smoke_copy / "smoke.yaml").read_text())
    config["experiments"]["fmnist_lenet"]["groups"]["inv_8ep"]["schedule"]["params"]["base_lr"] = 0.05
    (smoke_copy / "smoke.yaml").write_text(yaml.safe_dump(config))
    (smoke_copy / "results/smoke/train/fmnist_lenet/onecycle_4ep/seed2/metrics.json").unlink()
    table = _report(smoke_copy)
    assert table.loc["inv_8ep", "n"] == 0 and table.loc["inv_8ep", "verdict"] == "pending"
    assert table.loc["inv_8ep", "note"] == "stale, not counted: " + "; ".join(
        f"seed {seed} (schedule.params.base_lr: ran 0.01, planned 0.05)" for seed in (0, 1, 2))
    assert table.loc["onecycle_4ep", "n"] == 2
    markdown = (smoke_copy / "results/smoke/tables/fmnist_lenet.md").read_text()
    assert ("Not counted: 3 stale, 1 missing run(s) of 6 planned (stale and broken ones named in the notes); "
            "refresh with `snakemake --cores all --configfile YOUR_CONFIG.yaml --rerun-incomplete`.") in markdown
    claims = pd.read_csv(smoke_copy / "results/smoke/tables/fmnist_lenet_claims.csv")
    assert set(claims.verdict) == {"pending"} and claims.note.str.startswith("stale, not counted: inv_8ep/seed0").all()
    page = (smoke_copy / "results/smoke/report.html").read_text()
    assert "Of the 8 planned runs, 3 stale, 1 missing" in page
    assert "stale: schedule.params.base_lr: ran 0.01, planned 0.05" in page


@pytest.mark.slow
def test_the_data_job_verifies_each_root_the_trainings_read(tmp_path):
    # A group reading its own copy: its data job is its own, with that root, and its own record;
    # before, the one data job verified the default copy while this group trained on another.
    import os
    import subprocess
    import sys

    workflow = _smoke(tmp_path / "results")
    mine = tmp_path / "my fashion"
    workflow["experiments"]["fmnist_lenet"]["groups"]["inv_8ep"]["data"] = {"root": str(mine)}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(workflow))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    result = subprocess.run([shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "--configfile", str(tmp_path / "w.yaml"), "-n", "-p", "--cores", "1"],
                            env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
    commands = sorted("onecycle prepare-data" + line.split("onecycle prepare-data", 1)[1].rstrip()
                      for line in result.stdout.splitlines() if "onecycle prepare-data" in line)
    data = tmp_path / "results" / "data"
    assert commands == sorted([
        f"onecycle prepare-data --dataset fashion_mnist  --record {data / 'fashion_mnist.json'}  "
        f"> {tmp_path / 'results/logs/data/fashion_mnist.log'} 2>&1",
        f"onecycle prepare-data --dataset fashion_mnist --root '{mine}' --record "
        f"{data / ('fashion_mnist-root-' + _hex8(str(mine)) + '.json')}  "
        f"> {tmp_path / ('results/logs/data/fashion_mnist-root-' + _hex8(str(mine)) + '.log')} 2>&1"])
