"""Data-parallel training (onecycle.training.distributed): 2 gloo processes on CPU against 1 process.

What must hold: with equal shards, the average of the ranks' gradients is the one-process
gradient, and everything else (data, schedule, evaluation) is the same computation, so the two
runs differ only in the order of float sums (two processes instead of one, and the processes'
torch thread count against the test's). They are compared in float64 with one step and then a
coasting LR of 0, to FLOAT64_RTOL: the derivation is in tests/conftest.py. On top of that, the
logged train loss of a data-parallel step is each rank's loss rounded to float32 before the
all-reduce (Context.step_values), the mean of two such values: u32 = 2^-24 of it.

Run as a script under torchrun (`torchrun ... tests/test_ddp.py worker ...`), this file is a
rank that records which files it writes, then runs the real CLI.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import (FLOAT64_RTOL, HANG_GUARD_S, REPO, coasting_schedule, float64_training, needs_fashion_mnist,
                      tiny_run)
from onecycle import io

# A data-parallel step's logged loss: float32 rounding of each rank's loss, on top.
LOGGED_RTOL = 2.0 ** -24 + FLOAT64_RTOL
OUTPUTS = {"config.json", "history.csv", "train_log.csv", "metrics.json"}


def _run_config():
    """LeNet on 256 Fashion-MNIST images, total batch 64 = 2 x 32: 8 iterations, every one logged,
    evaluated on the full 10k test set after each of 2 epochs; a checkpoint at every chance. One
    step at LR 0.01, then LR 0: the weights coast on the first step's momentum (tests/conftest.py)."""
    from onecycle.experiments.loading import deep_merge

    config = deep_merge(tiny_run(), {
        "name": "tiny/ddp/seed0", "group": "ddp", "data": {"train_subset": 256},
        "train": {"batch_size": 64, "log_every": 1, "device": "cpu", "checkpoint_every_s": 1.0e-6},
    })
    config["schedule"] = coasting_schedule(0.01)
    return config


def _train_float64(config, out):
    from onecycle.experiments.config import RunConfig, parse
    from onecycle.training.run import train

    with float64_training():
        return train(parse(RunConfig, config), out)


def _torchrun_worker(config, out, record, *flags):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               __file__, "worker", str(config), str(out), str(record), "--float64", *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return {rank: (record / f"writes-rank{rank}.txt").read_text().split() for rank in (0, 1)
            if (record / f"writes-rank{rank}.txt").exists()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process, two processes (checkpoint left behind), and two processes resuming from it."""
    work = tmp_path_factory.mktemp("ddp")
    config = work / "run.yaml"
    config.write_text(yaml.safe_dump(_run_config()))
    _train_float64(_run_config(), work / "one")
    writes = {"ddp": _torchrun_worker(config, work / "two", _mkdir(work / "rec-two"), "--keep-checkpoint")}
    checkpoint = torch.load(work / "two" / "checkpoint.pt", weights_only=True)
    resumed = work / "resumed"
    resumed.mkdir()
    shutil.copy(work / "two" / "checkpoint.pt", resumed)
    writes["resumed"] = _torchrun_worker(config, resumed, _mkdir(work / "rec-resumed"))
    return work, writes, checkpoint


def _mkdir(path):
    path.mkdir()
    return path


@needs_fashion_mnist
@pytest.mark.slow
@pytest.mark.numerics
def test_two_processes_follow_the_one_process_trajectory(runs):
    work, _, _ = runs
    one, two = work / "one", work / "two"
    log_one, log_two = pd.read_csv(one / "train_log.csv"), pd.read_csv(two / "train_log.csv")
    assert list(log_two.iteration) == list(range(8))
    assert list(log_two.lr) == [0.01] + [0.0] * 7  # one step, then coasting (tests/conftest.py)
    pd.testing.assert_frame_equal(log_one.drop(columns="train_loss"), log_two.drop(columns="train_loss"),
                                  check_exact=True)
    pd.testing.assert_series_equal(log_one.train_loss, log_two.train_loss, check_exact=False, rtol=LOGGED_RTOL, atol=0)
    hist_one, hist_two = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    assert list(hist_two.epoch) == [1, 2] and list(hist_two.iteration) == [4, 8]
    # Epoch means of float64 losses and float64 evaluation sums: no float32 step in between.
    for column in ("train_loss", "test_loss"):
        pd.testing.assert_series_equal(hist_one[column], hist_two[column], check_exact=False, rtol=FLOAT64_RTOL, atol=0)
    # Every one of the 10 000 test images scored once: accuracy is a count of 10 000 (the
    # division of a count below 2^53 by 10 000 and back is exact to far below 1e-6).
    images = (hist_two.test_accuracy * 10_000).round()
    assert ((hist_two.test_accuracy * 10_000 - images).abs() < 1e-6).all()
    # A prediction flips only where an image's two top logits lie within FLOAT64_RTOL of each
    # other; one such near-tie among 10 000 images is already unlikely, two are allowed none.
    assert ((hist_one.test_accuracy - hist_two.test_accuracy).abs() * 10_000 <= 1 + 1e-6).all()
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iterations"] == 8
    assert metrics["config"]["world_size"] == 2 and metrics["config"]["train"]["batch_size"] == 64
    assert metrics["provenance"]["world_size"] == 2 and metrics["provenance"]["distributed_backend"] == "gloo"
    single = json.loads((one / "metrics.json").read_text())
    assert "world_size" not in single["config"] and single["provenance"]["world_size"] == 1


@needs_fashion_mnist
@pytest.mark.slow
@pytest.mark.numerics
def test_only_rank_0_writes_and_ranks_resume_from_its_checkpoint(runs):
    work, writes, checkpoint = runs
    for run in ("ddp", "resumed"):
        assert 1 not in writes[run], f"rank 1 wrote {writes[run].get(1)}"
    assert OUTPUTS | {"checkpoint.pt"} <= set(writes["ddp"][0])
    assert writes["resumed"][0].count("metrics.json") == 1
    # The checkpoint holds each rank's RNG state (own dropout draws), and was taken mid-epoch 2.
    assert len(checkpoint["rng_ranks"]) == 2 and not torch.equal(*checkpoint["rng_ranks"])
    assert checkpoint["iteration"] == 7
    # Resumed: the last iteration and the final evaluation, the same as the uninterrupted run.
    two, resumed = work / "two", work / "resumed"
    # Checkpoint removed, no temp files; the run folder's lock (onecycle.io.run_folder) stays.
    assert {p.name for p in resumed.iterdir()} == OUTPUTS | {io.RUN_LOCK}
    pd.testing.assert_frame_equal(pd.read_csv(two / "train_log.csv"), pd.read_csv(resumed / "train_log.csv"),
                                  check_exact=True)
    columns = ["epoch", "iteration", "lr", "momentum", "test_loss", "test_accuracy"]
    hist_two, hist_resumed = pd.read_csv(two / "history.csv"), pd.read_csv(resumed / "history.csv")
    pd.testing.assert_frame_equal(hist_two[columns], hist_resumed[columns], check_exact=True)
    # The epoch's mean train loss is summed over the resume point in another order: four positive
    # float64 losses added, halved and all-reduced in two ways, a few roundings of u = 1.1e-16.
    pd.testing.assert_series_equal(hist_two.train_loss, hist_resumed.train_loss, check_exact=False, rtol=1e-12, atol=0)


@pytest.mark.slow
@pytest.mark.numerics
def test_batch_norm_shards_are_shared_out_over_the_processes(tmp_path):
    # train.batch_norm_shards counts shards of the TOTAL batch (D6: per-GPU batch norm): 4
    # shards in one process = 2 per process in two. Rank 0's first shard is the total batch's
    # first, so the running statistics, and so the evaluation, agree as well. One epoch: four
    # forward passes, one step at LR 0.01 then coasting (tests/conftest.py), one evaluation.
    # ResNet-20 on 256 of the 8x8 digits (scikit-learn's, no download), scored on all 360 test
    # images: float64 ResNet-20 on 10k 28x28 images would take minutes.
    from onecycle.experiments.loading import deep_merge

    config = deep_merge(_run_config(), {"name": "tiny/ddp-bn/seed0", "model": {"arch": "resnet20"},
                                        "data": {"dataset": "digits"},
                                        "train": {"epochs": 1, "batch_norm_shards": 4, "checkpoint_every_s": 300.0,
                                                  "eval_batch_size": 360}})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    _train_float64(config, tmp_path / "one")
    _torchrun_worker(tmp_path / "run.yaml", tmp_path / "two", _mkdir(tmp_path / "rec"))
    log_one, log_two = pd.read_csv(tmp_path / "one" / "train_log.csv"), pd.read_csv(tmp_path / "two" / "train_log.csv")
    assert list(log_two.iteration) == [0, 1, 2, 3]
    pd.testing.assert_series_equal(log_one.train_loss, log_two.train_loss, check_exact=False, rtol=LOGGED_RTOL, atol=0)
    hist_one, hist_two = pd.read_csv(tmp_path / "one" / "history.csv"), pd.read_csv(tmp_path / "two" / "history.csv")
    # Evaluated with rank 0's running statistics, i.e. the first shard's, as one process keeps them.
    assert hist_two.test_loss.iloc[0] == pytest.approx(hist_one.test_loss.iloc[0], rel=FLOAT64_RTOL, abs=0)
    assert abs(hist_two.test_accuracy.iloc[0] - hist_one.test_accuracy.iloc[0]) * 360 <= 1 + 1e-9
    # Without the shards the very first forward pass normalises otherwise (the loss of iteration
    # 0 comes before any update): far outside the bound, so the comparison above can fail.
    _train_float64(deep_merge(config, {"train": {"batch_norm_shards": 1}}), tmp_path / "whole")
    log_whole = pd.read_csv(tmp_path / "whole" / "train_log.csv")
    assert abs(log_whole.train_loss.iloc[0] - log_one.train_loss.iloc[0]) > 1000 * LOGGED_RTOL * log_one.train_loss.iloc[0]


def test_batch_not_divisible_by_the_processes_is_one_line_error(tmp_path, monkeypatch, capsys):
    from onecycle import cli

    config = _run_config()
    config["train"]["batch_size"] = 63
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun --nproc_per_node 2 sets
    monkeypatch.setenv("RANK", "0")
    status = cli.main(["train", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err == ("onecycle: error: train.batch_size = 63 is not divisible by the 2 data-parallel "
                   "processes: it is the total batch (per-device batch x devices), so pick a multiple of 2\n")
    assert not (tmp_path / "out").exists()


def test_shards_make_up_the_global_batches_and_the_whole_test_set(tmp_path):
    from data_fixtures import write_image_folder
    from onecycle import data
    from onecycle.training.distributed import ShardedTestBatches, ShardedTrainBatches

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=generator)
    dataset = data.ArrayDataset(images, torch.arange(50) % 10, 10)
    common = {"mean": [0.5] * 3, "std": [0.25] * 3, "seed": 3}
    train = data.Batches(dataset, 12, shuffle=True, drop_last=True, augment="pad_crop_mirror", **common)
    test = data.Batches(dataset, 7, shuffle=False, drop_last=False, **common)
    write_image_folder(tmp_path, ["n01440764", "n02102040"], per_class=5, size=(12, 16), seed=0)
    split = {s: data.load_split("imagefolder", s, tmp_path, class_list=["n01440764", "n02102040"])
             for s in ("train", "test")}
    folder_train = data.FolderBatches(split["train"], 4, shuffle=True, drop_last=True,
                                      transform=data.torchvision_preset(train=True), seed=3, num_workers=0)
    folder_test = data.FolderBatches(split["test"], 3, shuffle=False, drop_last=False,
                                     transform=data.torchvision_preset(train=False), seed=0, num_workers=0)
    for batches in (train, folder_train):
        shards = [ShardedTrainBatches(batches, rank, 2) for rank in (0, 1)]
        assert len(shards[0]) == len(batches)
        for epoch in (0, 1):
            pairs = list(zip(batches.epoch(epoch), *(s.epoch(epoch) for s in shards), strict=True))
            assert len(pairs) == len(batches)
            for (x, y), (x0, y0), (x1, y1) in pairs:
                assert len(y0) == len(y1) == batches.batch_size // 2
                assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    # Test sets: every image once. In memory: alternate batches; folders: one block per rank.
    whole = list(test.epoch(0))
    parts = [list(ShardedTestBatches(test, rank, 2).epoch(0)) for rank in (0, 1)]
    for rank in (0, 1):
        expected = whole[rank::2]
        assert len(parts[rank]) == len(expected) == 4
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(parts[rank], expected))
    whole_x = torch.cat([x for x, _ in folder_test.epoch(0)])
    parts = [[x for x, _ in ShardedTestBatches(folder_test, rank, 2).epoch(0)] for rank in (0, 1)]
    assert [sum(len(x) for x in part) for part in parts] == [5, 5]
    assert torch.equal(torch.cat(parts[0] + parts[1]), whole_x)
    with pytest.raises(ValueError, match="not divisible by the 2"):
        ShardedTrainBatches(data.Batches(dataset, 5, shuffle=True, drop_last=True, **common), 0, 2)


def _workflow(gpus_experiment, batch_size=128):
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    exp = smoke["experiments"]["fmnist_lenet"]
    exp["base"]["train"]["batch_size"] = batch_size
    multi = {**exp, "gpus": gpus_experiment}
    # The baseline group alone; the claims about the others stay with `multi`.
    single = {key: value for key, value in exp.items() if key not in ("range_test", "range_test_seeds", "claims")}
    single["groups"] = {"inv_8ep": exp["groups"]["inv_8ep"]}
    single.pop("baseline"), single.pop("candidate")
    return {**smoke, "seeds": [0], "gpus_per_job": 1, "experiments": {"multi": multi, "single": single}}


def test_experiment_gpus_reach_the_jobs_and_the_launcher():
    from onecycle.experiments.config import ConfigError
    from onecycle.training.processes import launch_command
    from onecycle.experiments.expansion import expand

    plan = expand(_workflow(2))
    assert {job.gpus for job in plan.experiment_trains("multi")} == {2}
    assert {job.gpus for job in plan.experiment_trains("single")} == {1}
    assert {job.gpus for job in plan.range_tests.values()} == {1}  # range tests: one process
    assert launch_command(2, "train") == ["torchrun", "--standalone", "--nproc_per_node", "2",
                                          "-m", "onecycle.cli", "train"]
    assert launch_command(1, "train") == launch_command(0, "train") == ["onecycle", "train"]
    with pytest.raises(ConfigError, match=r"experiments\.multi\.groups\.\w+: train.batch_size = 127 "
                                          r"is not divisible by the 2 data-parallel processes"):
        expand(_workflow(2, batch_size=127))
    expand(_workflow(1, batch_size=127))  # one GPU: any batch size


@pytest.mark.slow
def test_train_rule_runs_torchrun_for_multi_gpu_jobs(tmp_path):
    workflow = _workflow(2)
    workflow["results_dir"] = "results/dry run"
    del workflow["experiments"]["multi"]["range_test"], workflow["experiments"]["multi"]["range_test_seeds"]
    workflow["experiments"]["multi"]["groups"] = {"inv_8ep": workflow["experiments"]["multi"]["groups"]["inv_8ep"]}
    for key in ("baseline", "candidate", "claims"):
        workflow["experiments"]["multi"].pop(key)
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(workflow))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    targets = [f"results/dry run/train/{name}/inv_8ep/seed0/metrics.json" for name in ("multi", "single")]
    command = [shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(tmp_path / "wf.yaml"),
               "--dry-run", "--printshellcmds", "--cores", "2", *targets]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    assert ("python -m onecycle.dag.gpu_slots -n 2 --per-device 1 -- torchrun --standalone --nproc_per_node 2 -m onecycle.cli "
            "train --config 'results/dry run/train/multi/inv_8ep/seed0/spec.json'") in printed
    assert ("python -m onecycle.dag.gpu_slots -n 1 --per-device 1 -- onecycle train "
            "--config 'results/dry run/train/single/inv_8ep/seed0/spec.json'") in printed


def _worker(argv):
    """One rank under torchrun: record every file this rank writes, then run the CLI (in float64
    with --float64, as `float64_training`)."""
    config, out, record, *flags = argv
    from onecycle import cli, io
    from onecycle.training.checkpoints import Checkpointer

    log_file = Path(record) / f"writes-rank{os.environ['RANK']}.txt"

    def recorded(write):
        def wrapper(target, *args, **kwargs):
            with log_file.open("a") as log:
                log.write(f"{Path(target).name}\n")
            return write(target, *args, **kwargs)
        return wrapper

    io.write_json, io.write_csv = recorded(io.write_json), recorded(io.write_csv)
    save = recorded(lambda path, checkpointer, state: save_checkpoint(checkpointer, state))
    save_checkpoint = Checkpointer.save
    Checkpointer.save = lambda self, state: save(self.path, self, state)
    if "--keep-checkpoint" in flags:  # leave the last checkpoint for a resume
        Checkpointer.remove = lambda self: None
    with float64_training() if "--float64" in flags else contextlib.nullcontext():
        return cli.main(["train", "--config", config, "--out", out])


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    sys.exit(_worker(sys.argv[2:]))
