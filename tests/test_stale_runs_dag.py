"""The real Snakemake DAG after a config edit, a copy and a deleted result (issue 24): it reruns
exactly the runs whose protocol changed or whose results are gone, sets the old ones aside
instead of deleting them, and the tables count only runs of the configured protocol.

One tiny workflow (LeNet on 512 Fashion-MNIST images, one epoch, two groups x two seeds) runs
once; each case works on a copy of its folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import HANG_GUARD_S, REPO, needs_fashion_mnist

pytestmark = [pytest.mark.slow, needs_fashion_mnist]
ENV = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
RESULTS = "results/w"
TRAIN = f"{RESULTS}/train/lenet"


def _workflow(inv_lr: float = 0.01) -> dict:
    base = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["experiments"]["fmnist_lenet"]["base"]
    base["data"]["train_subset"] = 512  # 4 iterations of 128 per epoch
    return {"results_dir": RESULTS, "seeds": [0, 1], "experiments": {"lenet": {
        "base": base,
        "groups": {"inv": {"schedule": {"policy": "inv", "params": {"base_lr": inv_lr, "gamma": 1.0e-4,
                                                                     "power": 0.75}},
                           "train": {"epochs": 1}},
                   "fixed": {"schedule": {"policy": "fixed", "params": {"base_lr": 0.02}}, "train": {"epochs": 1}}}}}}


def _snakemake(work: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [shutil.which("snakemake", path=ENV["PATH"]), "-s", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "w.yaml"), "--cores", "2", *extra]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=HANG_GUARD_S)


def _report(work: Path) -> pd.DataFrame:
    result = subprocess.run([shutil.which("onecycle", path=ENV["PATH"]), "report", "--config", "w.yaml"], cwd=work,
                            env=ENV, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr
    return pd.read_csv(work / RESULTS / "tables" / "lenet.csv").set_index("group")


def _metrics(work: Path, run: str) -> dict:
    return json.loads((work / TRAIN / run / "metrics.json").read_text())


def _mtimes(work: Path) -> dict[str, int]:
    return {str(p.relative_to(work)): p.stat().st_mtime_ns for p in (work / TRAIN).rglob("metrics.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("finished")
    (work / "w.yaml").write_text(yaml.safe_dump(_workflow()))
    result = _snakemake(work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def _copy(finished: Path, target: Path, *, records: bool) -> Path:
    """The workflow's folder: with Snakemake's .snakemake records (the same checkout), or without
    (a clone, a copy of the results)."""
    target.mkdir()
    shutil.copytree(finished / "results", target / "results")
    shutil.copy2(finished / "w.yaml", target / "w.yaml")
    if records:
        shutil.copytree(finished / ".snakemake", target / ".snakemake")
    return target


def test_a_row_never_averages_two_configs(finished, tmp_path):
    # The case: the inv group's LR edited, the rerun stopped after one seed (here: only
    # seed 0 asked for). Seed 1 still holds the old LR's run: named stale, never averaged.
    work = _copy(finished, tmp_path / "w", records=True)
    old = {seed: _metrics(work, f"inv/seed{seed}") for seed in (0, 1)}
    (work / "w.yaml").write_text(yaml.safe_dump(_workflow(inv_lr=0.05)))
    result = _snakemake(work, f"{TRAIN}/inv/seed0/metrics.json")
    assert result.returncode == 0, result.stderr[-3000:]
    new = _metrics(work, "inv/seed0")
    assert new["config"]["schedule"]["params"]["base_lr"] == 0.05 and new["spec_digest"] != old[0].get("spec_digest")
    # The old run of seed 0 was moved aside, whole, before Snakemake deleted its outputs.
    stale = work / TRAIN / "inv" / f"seed0.stale-{old[0]['spec_digest'][:12]}"
    assert json.loads((stale / "metrics.json").read_text()) == old[0]
    assert _metrics(work, "inv/seed1") == old[1]

    row = _report(work).loc["inv"]
    assert row[["n", "n_completed"]].tolist() == [1, 1]
    assert row["accuracy_mean"] == pytest.approx(100 * new["final"]["test_accuracy"])
    assert row["note"] == "stale, not counted: seed 1 (schedule.params.base_lr: ran 0.01, planned 0.05)"
    caption = (work / RESULTS / "tables" / "lenet.md").read_text()
    assert "Not counted: 1 stale run(s) of 4 planned" in caption


def test_a_copied_results_folder_reruns_what_the_config_changed(finished, tmp_path):
    # No .snakemake records: before, "Nothing to be done" and the old runs kept in the tables.
    work = _copy(finished, tmp_path / "w", records=False)
    dry = _snakemake(work, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    before = _mtimes(work)
    old = {seed: _metrics(work, f"inv/seed{seed}") for seed in (0, 1)}
    (work / "w.yaml").write_text(yaml.safe_dump(_workflow(inv_lr=0.05)))
    result = _snakemake(work)
    assert result.returncode == 0, result.stderr[-3000:]
    after = _mtimes(work)
    rerun = {path for path in before if after.get(path) != before[path]}
    assert rerun == {f"{TRAIN}/inv/seed0/metrics.json", f"{TRAIN}/inv/seed1/metrics.json"}
    for seed in (0, 1):
        assert _metrics(work, f"inv/seed{seed}")["config"]["schedule"]["params"]["base_lr"] == 0.05
        stale = work / TRAIN / "inv" / f"seed{seed}.stale-{old[seed]['spec_digest'][:12]}"
        assert json.loads((stale / "metrics.json").read_text()) == old[seed]
    table = _report(work)
    assert table.loc["inv", "n"] == 2 and pd.isna(table.loc["inv", "note"])
    page = (work / RESULTS / "report.html").read_text()
    for seed in (0, 1):  # listed on the report page, counted nowhere
        assert (f"<code>train/lenet/inv/seed{seed}.stale-{old[seed]['spec_digest'][:12]}</code>: set aside before "
                "its job ran again") in page
    again = _snakemake(work, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_a_deleted_metrics_json_is_missing_then_redone(finished, tmp_path):
    work = _copy(finished, tmp_path / "w", records=False)
    (work / TRAIN / "fixed" / "seed1" / "metrics.json").unlink()
    table = _report(work)
    assert table.loc["fixed", "n"] == 1
    assert "Not counted: 1 missing run(s) of 4 planned" in (work / RESULTS / "tables" / "lenet.md").read_text()
    before = _mtimes(work)
    result = _snakemake(work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _metrics(work, "fixed/seed1")["status"] == "completed"
    assert _mtimes(work).items() >= before.items()  # nothing else was redone
    # What the deleted run left (its history, log, config) was moved aside, not deleted.
    assert (work / TRAIN / "fixed" / "seed1.stale-incomplete" / "history.csv").exists()
    assert _report(work).loc["fixed", "n"] == 2
