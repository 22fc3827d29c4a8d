"""A run's identity (issue 24): which config a run folder's run was made with, recorded by the real
CLI, matched against the plan, and what `onecycle train` does with a folder that already holds a
run (docs/design.md §10d)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import HANG_GUARD_S, REPO, needs_fashion_mnist, tiny_run
from onecycle import io
from onecycle.experiments.config import load_range_test_config, load_run_config
from onecycle.experiments.expansion import expand
from onecycle.experiments.identity import FOLDER_FILES, config_difference, config_digest, set_aside
from onecycle.experiments.loading import load_mapping
from onecycle.report.evidence import COUNTED, MISSING, plan_evidence
from test_cli import _assert_one_line_error, _onecycle

COMMITTED = ("smoke", "fmnist_mirror", "sc_mirror", "bounds_study", "sc_confounds")
# Studies still under way (docs/sc_confounds.md): their unrun jobs are missing, every run there counts.
UNDER_WAY = ("sc_confounds",)


@pytest.mark.parametrize("config", ["smoke.yaml", "paper.yaml", "bounds_study.yaml"])
def test_the_digest_the_cli_records_is_the_plans(tmp_path, config):
    # `onecycle train` / `range-test` compute the digest from the spec file they read; the plan
    # from its job config. For every job of these configs they agree, so every planned run is
    # recognised as its own.
    plan = expand(load_mapping(REPO / "configs" / config), config)
    for job in [*plan.range_tests.values(), *plan.trains.values()]:
        spec = tmp_path / "spec.json"
        io.write_json(spec, job.config)
        loaded = (load_run_config if job.kind == "train" else load_range_test_config)(spec)
        assert config_digest(loaded) == job.digest, job.job_id


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_run_still_counts(name, monkeypatch):
    # Runs committed before the digest existed match by the config they recorded: make figures
    # keeps every one of them in its table.
    monkeypatch.chdir(REPO)  # the plan's paths are relative to the repository
    plan = expand(load_mapping(f"configs/{name}.yaml"), name)
    states = {item.job.job_id: (item.state, item.reason) for item in plan_evidence(plan)}
    allowed = {*COUNTED, MISSING} if name in UNDER_WAY else set(COUNTED)
    assert {job: state for job, state in states.items() if state[0] not in allowed or state[1]} == {}
    assert any(state in COUNTED for state, _ in states.values())


def test_a_recorded_config_matches_or_names_what_differs():
    plan = expand(load_mapping(REPO / "configs" / "smoke.yaml"), "smoke.yaml")
    job = plan.trains["fmnist_lenet/inv_8ep/seed1"]
    recorded = json.loads((REPO / job.out_dir / "metrics.json").read_text())
    assert recorded["spec_digest"] == job.digest  # the committed reference is of this config
    # A run recorded before the digest existed is matched by its config.
    metrics = {key: value for key, value in recorded.items() if key != "spec_digest"}
    assert config_difference("train", job.config, metrics) is None
    edited = json.loads(json.dumps(job.config))
    edited["schedule"]["params"]["base_lr"] = 0.05
    assert config_difference("train", edited, metrics) == "schedule.params.base_lr: ran 0.01, planned 0.05"
    # With the digest recorded, it decides at once; another digest falls back to the config.
    assert config_difference("train", edited, {**metrics, "spec_digest": job.digest}) == \
        "schedule.params.base_lr: ran 0.01, planned 0.05"
    assert config_difference("train", job.config, {"spec_digest": job.digest}) is None


def test_set_aside_keeps_every_run_and_the_folders_own_files(tmp_path):
    run = tmp_path / "seed0"
    for round_ in (1, 2):
        run.mkdir(exist_ok=True)
        for name in ("metrics.json", "history.csv", "spec.json", io.RUN_LOCK):
            (run / name).write_text(f"{name} {round_}")
        moved = set_aside(run, "0123456789abcdef")
        assert moved.name == ("seed0.stale-0123456789ab" if round_ == 1 else "seed0.stale-0123456789ab-2")
        assert sorted(p.name for p in moved.iterdir()) == ["history.csv", "metrics.json"]
        assert (moved / "metrics.json").read_text() == f"metrics.json {round_}"
        assert sorted(p.name for p in run.iterdir()) == sorted(["spec.json", io.RUN_LOCK])


# --------------------------------------------------------------------------------------------
# `onecycle train` on a folder that holds a run
# --------------------------------------------------------------------------------------------

def _write(tmp_path: Path, config: dict, name: str) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@needs_fashion_mnist
def test_train_into_a_finished_run(tmp_path, tiny_run_config):
    first = _write(tmp_path, tiny_run_config, "a.yaml")
    out = tmp_path / "out"
    assert _onecycle("train", "--config", first, "--out", out).returncode == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["spec_digest"] == config_digest(load_run_config(first))
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # The same config: already done, nothing retrained or rewritten.
    again = _onecycle("train", "--config", first, "--out", out)
    assert again.returncode == 0 and "already done" in again.stdout, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # Another config: refused in one line naming what differs; the run stays as it was.
    tiny_run_config["schedule"]["params"]["max_lr"] = 0.05
    other = _write(tmp_path, tiny_run_config, "b.yaml")
    _assert_one_line_error(_onecycle("train", "--config", other, "--out", out),
                           f"{out}: holds a finished run of another config (schedule.params.max_lr: ran 0.1, "
                           "planned 0.05)", "--set-aside-stale")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # With --set-aside-stale it moves to a sibling folder named by its digest, and the new one trains.
    moved = _onecycle("train", "--config", other, "--out", out, "--set-aside-stale")
    assert moved.returncode == 0, moved.stderr
    stale = tmp_path / f"out.stale-{metrics['spec_digest'][:12]}"
    assert json.loads((stale / "metrics.json").read_text()) == metrics
    assert json.loads((out / "metrics.json").read_text())["spec_digest"] == config_digest(load_run_config(other))



def _tiny_range_test() -> dict:
    """A LeNet range test on 256 Fashion-MNIST images: 12 iterations, evaluated on 100."""
    run = tiny_run()
    return {"name": "tiny/seed0", "experiment": "tiny", "seed": 0,
            "data": {**run["data"], "train_subset": 256}, "model": run["model"], "optim": run["optim"],
            "train": {"batch_size": 32},
            "range_test": {"start_lr": 0.0, "end_lr": 0.1, "iterations": 12, "eval_every": 3, "eval_subset": 100}}


def _range_test(capsys, *args) -> tuple[int, str, str]:
    """`onecycle range-test ARGS` in this process (no torch import per call): exit status, stdout, stderr."""
    from onecycle import cli

    capsys.readouterr()
    status = cli.main(["range-test", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@needs_fashion_mnist
def test_range_test_into_a_finished_run(tmp_path, capsys):
    # As test_train_into_a_finished_run, for `onecycle range-test`: its folder holds bounds.json,
    # which the trainings read, so a range test of another config must never stand in for it.
    config = _tiny_range_test()
    first = _write(tmp_path, config, "a.yaml")
    out = tmp_path / "out"
    assert _range_test(capsys, "--config", first, "--out", out)[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["spec_digest"] == config_digest(load_range_test_config(first))
    files = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    run_files = {"metrics.json", "history.csv", "bounds.json", "config.json"}
    assert run_files <= set(files)

    # The same config: already done, nothing rerun or rewritten.
    status, stdout, stderr = _range_test(capsys, "--config", first, "--out", out)
    assert status == 0 and stdout.startswith("tiny/seed0: already done in"), stderr
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == files

    # Another config: refused in one line naming the folder and what differs; the run stays as it was.
    config["range_test"]["end_lr"] = 0.2
    other = _write(tmp_path, config, "b.yaml")
    status, stdout, stderr = _range_test(capsys, "--config", other, "--out", out)
    assert status == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"onecycle: error: {out}: holds a finished run of another config "
                             "(range_test.end_lr: ran 0.1, planned 0.2)") and "--set-aside-stale" in stderr
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == files

    # With --set-aside-stale every file of the old run moves, byte for byte, to a sibling named by
    # its digest (the folder's own lock stays); the folder then holds the new config's run.
    status, stdout, stderr = _range_test(capsys, "--config", other, "--out", out, "--set-aside-stale")
    assert status == 0, stderr
    stale = tmp_path / f"out.stale-{metrics['spec_digest'][:12]}"
    assert f"moved it to {stale}" in stdout
    assert {p.name: p.read_bytes() for p in stale.iterdir()} == \
        {name: data for name, (_, data) in files.items() if name not in FOLDER_FILES}
    assert set(p.name for p in stale.iterdir()) >= run_files
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out", stale.name]
    assert json.loads((out / "metrics.json").read_text())["spec_digest"] == \
        config_digest(load_range_test_config(other))
    assert json.loads((out / "config.json").read_text())["range_test"]["end_lr"] == 0.2

# A training that keeps its last checkpoint and exits without metrics.json: a killed run's folder.
KEEP_CHECKPOINT = """
import sys
from onecycle import cli
from onecycle.training import run
def stop_before_metrics(self):
    raise SystemExit(3)
run.TrainingRun.finish = stop_before_metrics
sys.exit(cli.main(sys.argv[1:]))
"""


@needs_fashion_mnist
def test_a_checkpoint_of_another_config_is_never_resumed(tmp_path, tiny_run_config):
    out = tmp_path / "out"
    first = _write(tmp_path, tiny_run_config, "a.yaml")
    killed = subprocess.run([sys.executable, "-c", KEEP_CHECKPOINT, "train", "--config", str(first), "--out",
                             str(out)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert killed.returncode == 3 and (out / "checkpoint.pt").exists(), killed.stderr
    tiny_run_config["optim"]["weight_decay"] = 1.0e-3
    other = _write(tmp_path, tiny_run_config, "b.yaml")
    _assert_one_line_error(_onecycle("train", "--config", other, "--out", out),
                           f"{out / 'checkpoint.pt'}: checkpoint was written for a different config")
    result = _onecycle("train", "--config", other, "--out", out, "--set-aside-stale")
    assert result.returncode == 0, result.stderr
    stale = tmp_path / f"out.stale-{config_digest(load_run_config(first))[:12]}"
    assert (stale / "checkpoint.pt").exists() and not (out / "checkpoint.pt").exists()
    # Trained from scratch: every planned iteration is its own.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["iterations"] == metrics["iterations_planned"]


@needs_fashion_mnist
def test_ctrl_c_is_one_line_exit_130_and_keeps_the_checkpoint(tmp_path, tiny_run_config):
    tiny_run_config["train"]["epochs"] = 40  # long enough to be stopped between checkpoints
    # The cycle stretched with the run (0.45 of it, as in the 2-epoch tiny run): its 0.9-epoch
    # cycle followed by 38 epochs of annihilation diverged by epoch 4, and a diverged run ends,
    # exit 0, before a slow interrupt could reach it.
    tiny_run_config["schedule"]["params"]["stepsize_epochs"] = 18
    out = tmp_path / "out"
    # SIGINT back to its default in the child: a shell running the suite in the background (CI)
    # hands its children SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    process = subprocess.Popen([sys.executable, "-m", "onecycle.cli", "train", "--config",
                                str(_write(tmp_path, tiny_run_config, "run.yaml")), "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + HANG_GUARD_S
    while not (out / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=HANG_GUARD_S)
    assert process.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and [line for line in lines if line.startswith("onecycle: ")] == [lines[-1]]
    assert lines[-1] == f"onecycle: interrupted; {out} keeps its last checkpoint, and the same command resumes from it"
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()


def test_threads_beyond_the_cores_are_refused_naming_the_count(tmp_path, tiny_run_config):
    import os

    cores = len(os.sched_getaffinity(0))
    result = _onecycle("train", "--config", _write(tmp_path, tiny_run_config, "run.yaml"), "--out",
                       tmp_path / "out", "--threads", cores + 1)
    _assert_one_line_error(result, f"--threads {cores + 1}: this process may use {cores} core")
    assert not (tmp_path / "out").exists()


def test_combine_bounds_refuses_a_repeated_input_and_an_output_among_them(tmp_path):
    record = {"base_lr": 0.01, "max_lr": 0.1, "chosen_rule": "smith_accuracy_peak", "policy_kind": "1cycle",
              "suggestions": {}}
    seeds = []
    for seed in (0, 1):
        path = tmp_path / f"seed{seed}" / "bounds.json"
        path.parent.mkdir()
        path.write_text(json.dumps(record))
        seeds.append(path)
    _assert_one_line_error(_onecycle("combine-bounds", "--out", tmp_path / "all.json", seeds[0], seeds[1],
                                     tmp_path / "seed0" / ".." / "seed0" / "bounds.json"),
                           "given twice", str(seeds[0]))
    before = seeds[1].read_bytes()
    _assert_one_line_error(_onecycle("combine-bounds", "--out", seeds[1], *seeds),
                           f"--out {seeds[1]} is one of the inputs")
    assert seeds[1].read_bytes() == before and not (tmp_path / "all.json").exists()
    assert _onecycle("combine-bounds", "--out", tmp_path / "all.json", *seeds).returncode == 0
    assert json.loads((tmp_path / "all.json").read_text())["n_seeds"] == 2


def test_schedule_of_a_billion_steps_streams(tmp_path):
    # 10^9 rows would be tens of GB as one string; streamed, the first rows come at once and a
    # reader that stops early (`| head`) ends it.
    process = subprocess.Popen([sys.executable, "-m", "onecycle.cli", "schedule", "--policy", "fixed", "--set",
                                "base_lr=0.1", "--steps", str(10**9)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    head = [process.stdout.readline() for _ in range(3)]
    process.stdout.close()
    assert process.wait(timeout=HANG_GUARD_S) == 0 and process.stderr.read() == ""
    assert head == ["step,lr,momentum\n", "0,0.1,\n", "1,0.1,\n"]
    plot = _onecycle("schedule", "--policy", "fixed", "--set", "base_lr=0.1", "--steps", 10**9, "--plot",
                     tmp_path / "lr.png")
    _assert_one_line_error(plot, "--plot draws at most 1000000 steps, not 1000000000")
    assert not (tmp_path / "lr.png").exists()


def test_report_of_committed_runs_copied_elsewhere_is_the_same(tmp_path):
    # The committed smoke results, copied: every run counts, the table is the committed one.
    shutil.copytree(REPO / "results" / "smoke", tmp_path / "results" / "smoke")
    shutil.copy(REPO / "configs" / "smoke.yaml", tmp_path / "smoke.yaml")
    result = _onecycle("report", "--config", "smoke.yaml", "--only", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results/smoke/tables/fmnist_lenet.csv").read_bytes() == \
        (REPO / "results/smoke/tables/fmnist_lenet.csv").read_bytes()
