"""Faults and hostile input through the real `onecycle` command (issue 19): alias bombs, repeated
keys, corrupt checkpoints, non-finite values, OS failures, concurrent writers, stale temp files.
Each ends in one line naming the file or key and the cause, exit 2, and nothing that looks like
success."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import HANG_GUARD_S, REPO, needs_fashion_mnist
from onecycle import io
from onecycle.experiments.loading import load_mapping
from onecycle.errors import MAX_MESSAGE_CHARS
from onecycle.training.checkpoints import CHECKPOINT_KEYS
from test_cli import _assert_one_line_error, _onecycle

# 9 lists of 9 references to the one before: 9^9 = 387 420 489 values from 600 bytes.
LIST_BOMB = "".join(f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
                    for i in range(9))
# The same with mappings, which Snakemake's own loader copies level by level.
MAPPING_BOMB = "".join(
    f"m{i}: &m{i} {{{', '.join(f'k{j}: *m{i - 1}' if i else f'k{j}: lol' for j in range(9))}}}\n" for i in range(9))


def _smoke(tmp_path: Path) -> dict:
    workflow = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    workflow["results_dir"] = str(tmp_path / "results")
    return workflow


def _smoke_text_with_seeds(tmp_path: Path, seeds_yaml: str) -> str:
    """The smoke config as YAML text whose top-level `seeds:` value is `seeds_yaml`, verbatim
    (an alias or anchor that yaml.safe_dump cannot write)."""
    workflow = _smoke(tmp_path)
    workflow["seeds"] = "SEEDS_PLACEHOLDER"
    return yaml.safe_dump(workflow).replace("seeds: SEEDS_PLACEHOLDER", f"seeds: {seeds_yaml}")


def _run_config(tmp_path: Path, config: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _nothing_finished(out: Path) -> None:
    assert not (out / "metrics.json").exists() and not (out / "history.csv").exists()


# --------------------------------------------------------------------------------------------
# 1. Alias bombs; 2. repeated keys
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bomb, key", [(LIST_BOMB, "b"), (MAPPING_BOMB, "m")])
def test_alias_bombs_are_refused_before_expansion(tmp_path, tiny_run_config, bomb, key):
    # A run config whose model options hold the bomb, and a workflow config whose seeds do:
    # refused while loading, in one bounded line, before any expansion or output.
    run = tmp_path / "run.yaml"
    run.write_text(bomb + yaml.safe_dump({**tiny_run_config, "model": {"arch": "lenet"}})
                   .replace("arch: lenet", f"arch: lenet\n  options: *{key}8"))
    result = _onecycle("train", "--config", run, "--out", tmp_path / "out")
    _assert_one_line_error(result, "run.yaml: line ", "alias bomb")
    assert len(result.stderr) < MAX_MESSAGE_CHARS and not (tmp_path / "out").exists()

    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(bomb + _smoke_text_with_seeds(tmp_path, f"*{key}8"))
    _assert_one_line_error(_onecycle("report", "--config", workflow), "workflow.yaml: line ", "alias bomb")
    assert not (tmp_path / "results").exists()


def test_recursive_alias_is_refused(tmp_path):
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(_smoke_text_with_seeds(tmp_path, "&s [0, *s]"))
    _assert_one_line_error(_onecycle("report", "--config", workflow), "key 'seeds[1]' is an alias to itself")


def test_shipped_configs_with_anchors_and_merges_load_as_yaml_reads_them():
    # configs/paper.yaml and fmnist_mirror.yaml share settings through anchors and `<<:` merges.
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert load_mapping(path) == yaml.safe_load(path.read_text()), path


def test_repeated_group_is_refused_with_its_key_path(tmp_path):
    # The case: a second `inv_8ep:` with other epochs and LR silently replaced the first.
    text = (REPO / "configs" / "smoke.yaml").read_text().replace("results_dir: results/smoke",
                                                                 f"results_dir: {tmp_path / 'results'}")
    first = text.index("      inv_8ep:")
    second = "      inv_8ep:\n        schedule: {policy: inv, params: {base_lr: 0.5, gamma: 1.0e-4, power: 0.75}}\n" \
             "        train: {epochs: 1}\n"
    workflow = tmp_path / "workflow.yaml"
    workflow.write_text(text[:first] + second + text[first:])
    line = text[:first].count("\n") + 4  # the original follows the inserted block of three lines
    _assert_one_line_error(_onecycle("report", "--config", workflow),
                           f"workflow.yaml: line {line}: key 'experiments.fmnist_lenet.groups.inv_8ep' is repeated")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("text, fragment", [
    ("train:\n  batch_size: 128\n  batch_size: 256\n", "key 'train.batch_size' is repeated"),
    ('{"seed": 0, "data": {"dataset": "mnist", "dataset": "cifar10"}}', "key 'data.dataset' is repeated"),
    ("1: a\ntrue: b\n", "key 'True' is repeated"),  # one key once in a Python dict
])
def test_repeated_keys_at_any_depth_are_refused(tmp_path, text, fragment):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    _assert_one_line_error(_onecycle("train", "--config", config, "--out", tmp_path / "out"), fragment)


def test_repeated_key_in_a_json_config_is_refused(tmp_path):
    # .json files are read as JSON (1e-06 is a number there), where the json module would keep the
    # last of two equal keys silently.
    config = tmp_path / "spec.json"
    config.write_text('{"seed": 0, "data": {"dataset": "mnist", "dataset": "cifar10"}}')
    _assert_one_line_error(_onecycle("train", "--config", config, "--out", tmp_path / "out"),
                           "spec.json: key 'dataset' is repeated in one object")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# 4. Corrupt checkpoints; 5. non-finite values, bad bounds, OS failures
# --------------------------------------------------------------------------------------------

def _truncated_checkpoint(path: Path) -> None:
    state = {key: None for key in CHECKPOINT_KEYS} | {"model": {"w": torch.zeros(50_000)}}
    torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@needs_fashion_mnist
@pytest.mark.parametrize("corrupt", ["empty", "random bytes", "truncated"])
def test_corrupt_checkpoint_is_one_line_naming_file_and_fix(tmp_path, tiny_run_config, corrupt):
    out = tmp_path / "out"
    out.mkdir()
    checkpoint = out / "checkpoint.pt"
    if corrupt == "empty":
        checkpoint.write_bytes(b"")
    elif corrupt == "random bytes":
        checkpoint.write_bytes(os.urandom(5000))
    else:
        _truncated_checkpoint(checkpoint)
    before = checkpoint.read_bytes()
    result = _onecycle("train", "--config", _run_config(tmp_path, tiny_run_config), "--out", out)
    _assert_one_line_error(result, f"{checkpoint}: corrupt checkpoint",
                           "delete it to restart from scratch, or restore it")
    _nothing_finished(out)
    assert checkpoint.read_bytes() == before  # left for the user to inspect or restore


@needs_fashion_mnist
@pytest.mark.parametrize("value, shown", [(float("inf"), "inf"), (float("nan"), "nan")])
def test_non_finite_stepsize_names_key_and_file(tmp_path, tiny_run_config, value, shown):
    tiny_run_config["schedule"]["params"]["stepsize_epochs"] = value  # YAML .inf / .nan
    config = _run_config(tmp_path, tiny_run_config)
    assert ".inf" in config.read_text() or ".nan" in config.read_text()
    _assert_one_line_error(_onecycle("train", "--config", config, "--out", tmp_path / "out"),
                           "run.yaml: ", f"stepsize_epochs = {shown}: expected a finite number")
    assert not (tmp_path / "out").exists()


@needs_fashion_mnist
@pytest.mark.parametrize("bounds, fragment", [
    ('{"base_lr": 0.01, "max_lr": "abc"}', "bounds.json: 'max_lr' = 'abc': expected a positive number"),
    ('{"base_lr": 0.01, "max_lr": NaN}', "bounds.json: 'max_lr' = nan"),
    ('{"base_lr": null, "max_lr": 0.1}', "bounds.json: base_lr and max_lr are both numbers or both null"),
    ('{"base_lr": 0.01, "max_lr": 0.1', "bounds.json: not a valid JSON file"),
])
def test_bad_bounds_file_names_key_and_file(tmp_path, tiny_run_config, bounds, fragment):
    tiny_run_config["schedule"]["lr_bounds"] = "range_test"
    (tmp_path / "bounds.json").write_text(bounds)
    result = _onecycle("train", "--config", _run_config(tmp_path, tiny_run_config), "--out", tmp_path / "out",
                       "--bounds", tmp_path / "bounds.json")
    _assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


@needs_fashion_mnist
def test_out_naming_a_file_or_nothing_is_refused(tmp_path, tiny_run_config):
    config = _run_config(tmp_path, tiny_run_config)
    _assert_one_line_error(_onecycle("train", "--config", config, "--out", config), f"{config}: not a folder")
    _assert_one_line_error(_onecycle("train", "--config", config, "--out", config / "run"),
                           f"{config / 'run'}: Not a directory")
    # `--out ""` would be the current folder: refused before anything is written there.
    result = _onecycle("train", "--config", config, "--out", "", cwd=tmp_path)
    _assert_one_line_error(result, "--out is empty")
    _assert_one_line_error(_onecycle("range-test", "--config", config, "--out", " ", cwd=tmp_path), "--out is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def _mount_tmpfs(folder: Path, options: str) -> None:
    """A small tmpfs at `folder` (root only); skips the test where mounting is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")


@pytest.fixture
def mounts():
    mounted = []
    yield mounted
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


@needs_fashion_mnist
def test_full_disk_is_one_line_no_space_left(tmp_path, tiny_run_config, mounts):
    # 512 KiB holds config.json (1.5 kB) but not LeNet's first checkpoint (1.8 MB): torch.save
    # alone would say "enforce fail at inline_container.cc".
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=512k")
    mounts.append(disk)
    out = disk / "run"
    result = _onecycle("train", "--config", _run_config(tmp_path, tiny_run_config), "--out", out)
    # The run's progress lines (one per evaluation) come first; the error is one line, the last.
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("onecycle: error: ")] == [lines[-1]], result.stderr
    assert lines[-1] == f"onecycle: error: {out / 'checkpoint.pt'}: No space left on device"
    assert "completed" not in result.stdout + result.stderr
    _nothing_finished(out)
    assert not list(out.glob(".*.tmp*"))


@needs_fashion_mnist
def test_read_only_output_is_one_line_naming_the_folder(tmp_path, tiny_run_config, mounts):
    read_only = tmp_path / "read_only"
    if os.geteuid() == 0:  # root writes through permission bits: a read-only mount instead
        _mount_tmpfs(read_only, "size=1m,ro")
        mounts.append(read_only)
        cause = "Read-only file system"
    else:
        read_only.mkdir()
        read_only.chmod(0o555)
        cause = "Permission denied"
    out = read_only / "run"
    result = _onecycle("train", "--config", _run_config(tmp_path, tiny_run_config), "--out", out)
    _assert_one_line_error(result, f"{out}: {cause}")
    assert "completed" not in result.stdout and not out.exists()


# --------------------------------------------------------------------------------------------
# 7. Temp files a SIGKILL left; 8. concurrent writers, repeated range-test seeds
# --------------------------------------------------------------------------------------------

KILL_DURING_CHECKPOINT_WRITE = """
import os, signal, sys, torch
from onecycle import cli
def save(obj, f):  # half a checkpoint on disk, then the process dies as under `kill -9`
    f.write(b"PK half a zip"); f.flush(); os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
sys.exit(cli.main(sys.argv[1:]))
"""


@needs_fashion_mnist
def test_temp_file_of_a_checkpoint_write_killed_by_sigkill_is_removed(tmp_path, tiny_run_config):
    out = tmp_path / "out"
    config = _run_config(tmp_path, tiny_run_config)
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_CHECKPOINT_WRITE, "train", "--config", str(config),
                             "--out", str(out)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = list(out.glob(".checkpoint.pt.*.tmp.pt"))
    assert len(left) == 1
    unrelated = [out / "notes.tmp", out / ".checkpoint.pt.tmp"]  # not atomic_path's pattern: kept
    for path in unrelated:
        path.write_text("mine")
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", f"results/smoke/train/x/{left[0].name}"],
                             cwd=REPO)
    assert ignored.returncode == 0, ".gitignore does not cover the temp files of interrupted writes"

    result = _onecycle("train", "--config", config, "--out", out)
    assert result.returncode == 0, result.stderr
    assert (out / "metrics.json").exists() and not left[0].exists()
    assert all(path.read_text() == "mine" for path in unrelated)


@needs_fashion_mnist
def test_second_process_on_a_run_folder_stops_in_one_line(tmp_path, tiny_run_config):
    out = tmp_path / "out"
    config = _run_config(tmp_path, tiny_run_config)
    with io.run_folder(out):  # the first writer: this process, holding the folder's flock
        result = _onecycle("train", "--config", config, "--out", out)
        _assert_one_line_error(result, f"{out}: another onecycle process is writing this run folder")
        _nothing_finished(out)
    # The lock goes with its holder (on SIGKILL too: the kernel drops an flock): the run proceeds.
    result = _onecycle("train", "--config", config, "--out", out)
    assert result.returncode == 0, result.stderr
    assert (out / "metrics.json").exists()


def test_repeated_range_test_seeds_are_refused(tmp_path):
    workflow = _smoke(tmp_path)
    workflow["experiments"]["fmnist_lenet"]["range_test_seeds"] = [0, 0]
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(workflow))
    _assert_one_line_error(_onecycle("report", "--config", path),
                           "range_test_seeds [0, 0] repeat a value: two runs would write the same folder")
    assert not (tmp_path / "results").exists()


def test_stale_lock_of_a_dead_run_is_removed_and_a_live_runs_lock_kept(tmp_path):
    # The mechanism behind the DAG test (tests/test_workflow.py): a Snakemake lock is stale when
    # no process holds the liveness flock.
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/x\n")
    alive = subprocess.Popen([sys.executable, "-c", "import sys, time; from onecycle.dag.stale_locks import "
                              "clear_stale_locks as c; c(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                              str(tmp_path / ".snakemake")], stdout=subprocess.PIPE, text=True)
    try:
        assert alive.stdout.readline() == "held\n"  # it removed the stale lock, and holds the flock
        assert not list(locks.glob("*.lock"))
        (locks / "0.output.lock").write_text("results/x\n")  # as the live run's Snakemake writes it
        probe = subprocess.run([sys.executable, "-c", "import sys; from onecycle.dag.stale_locks import "
                                "clear_stale_locks as c; print(len(c(sys.argv[1])))", str(tmp_path / ".snakemake")],
                               capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert probe.stdout.strip() == "0" and (locks / "0.output.lock").exists()
    finally:
        alive.kill()
        alive.wait()
    probe = subprocess.run([sys.executable, "-c", "import sys; from onecycle.dag.stale_locks import "
                            "clear_stale_locks as c; print(len(c(sys.argv[1])))", str(tmp_path / ".snakemake")],
                           capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert probe.stdout.strip() == "1" and not (locks / "0.output.lock").exists()
    shutil.rmtree(tmp_path / ".snakemake")
