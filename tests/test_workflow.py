"""The real Snakemake DAG, end to end, on a still smaller config than configs/smoke.yaml."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import REPO, needs_fashion_mnist

pytestmark = [pytest.mark.slow, needs_fashion_mnist]
RESULTS = "results/tiny run; $(touch pwned) & co"


def _tiny_workflow(smoke):
    exp = smoke["experiments"]["fmnist_lenet"]
    exp["base"]["data"]["train_subset"] = 1024
    exp["range_test"].update({"iterations": 24, "eval_every": 4, "eval_subset": 500})
    exp["groups"]["inv_8ep"]["train"] = {"epochs": 4}
    # Two seeds, fewer jobs. Spaces and shell metacharacters in a path that reaches shell
    # commands: rules must quote.
    return {**smoke, "seeds": [0, 1], "results_dir": RESULTS}


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("dag")
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    (work / "tiny.yaml").write_text(yaml.safe_dump(_tiny_workflow(smoke)))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    command = [shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "tiny.yaml"), "--cores", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, command, env


def test_dag_produces_table_figures_and_bounds(dag_run):
    work, _, _ = dag_run
    results = work / RESULTS
    table = pd.read_csv(results / "tables" / "fmnist_lenet.csv")
    assert set(table.group) == {"onecycle_4ep", "inv_8ep"}
    assert (table.n == 2).all()
    # Real training on the full 10k test set: well above chance (10%), below perfect.
    assert table.accuracy_mean.between(30, 100).all(), table
    bounds = json.loads((results / "range_test" / "fmnist_lenet" / "bounds.json").read_text())
    # max_lr is an LR of the ramp, which ends at end_lr 0.3; base_lr its tenth (policy_kind 1cycle).
    assert 0.0 < bounds["max_lr"] <= 0.3 and bounds["base_lr"] == pytest.approx(bounds["max_lr"] / 10)
    onecycle = json.loads((results / "train" / "fmnist_lenet" / "onecycle_4ep" / "seed0" / "metrics.json").read_text())
    assert onecycle["config"]["schedule_resolved"]["params"]["max_lr"] == pytest.approx(bounds["max_lr"])
    assert onecycle["provenance"]["package_version"]
    for figure in ("fmnist_lenet_accuracy", "fmnist_lenet_range_test", "fmnist_lenet_comparison"):
        assert (results / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (results / "figures" / f"{figure}.pdf").read_bytes()[:4] == b"%PDF"
    markdown = (results / "tables" / "fmnist_lenet.md").read_text()
    assert "±" in markdown
    # Every claim of the config gets a verdict, and the suite's scorecard lists it.
    from onecycle.claims import VERDICTS

    claims = pd.read_csv(results / "tables" / "fmnist_lenet_claims.csv")
    assert list(claims.claim_id) == ["budget", "budget_superior", "speedup"]
    assert set(claims.verdict) <= set(VERDICTS) and (claims.n <= 2).all()
    scorecard = pd.read_csv(results / "tables" / "claims_scorecard.csv")
    assert list(scorecard.claim) == list(claims.claim_id)
    assert (results / "figures" / "claims_scorecard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (work / "pwned").exists() and not (REPO / "pwned").exists()


def test_dag_is_complete_and_report_regenerates_without_training(dag_run):
    work, command, env = dag_run
    dry = subprocess.run([*command, "-n"], env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    results = work / RESULTS
    metrics = sorted((results / "train").rglob("metrics.json"))
    before = {p: p.stat().st_mtime_ns for p in metrics}
    table = results / "tables" / "fmnist_lenet.csv"
    table.unlink()
    report = subprocess.run([shutil.which("onecycle", path=env["PATH"]), "report", "--config", "tiny.yaml"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert table.exists()
    assert {p: p.stat().st_mtime_ns for p in metrics} == before


def test_html_report_holds_every_table_and_figure(dag_run):
    work, command, env = dag_run
    report = work / "report.html"
    result = subprocess.run([*command, "--report", str(report)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    html = report.read_text(errors="replace")
    for name in ("fmnist_lenet.md", "fmnist_lenet_paired.csv", "fmnist_lenet_time_to_accuracy.csv",
                 "fmnist_lenet_accuracy.png", "fmnist_lenet_range_test.png", "fmnist_lenet_claims.md",
                 "claims_scorecard.md", "claims_scorecard.png"):
        assert name in html, name


@pytest.mark.parametrize("patch, message", [
    ({"seeds": [0, 0]}, "seeds [0, 0] repeat a value: two runs would write the same folder"),
    ({"experiments": {"fmnist_lenet": {"base": {"optim": {"weight_decay": "5e-4"}}}}},
     "'optim.weight_decay' = '5e-4'"),
])
def test_bad_workflow_config_fails_before_any_job(tmp_path, patch, message):
    from onecycle.config import deep_merge

    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(deep_merge(smoke, patch)))
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    result = subprocess.run([shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile", str(tmp_path / "bad.yaml"), "-n", "--cores", "1"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()
