"""Bounds studies through the real Snakemake DAG: the configs' job lists, and a tiny study run end
to end on real Fashion-MNIST whose regret table is recomputed here from the runs it read."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import HANG_GUARD_S, REPO, needs_fashion_mnist
from onecycle.report.stats import difference_bounds

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}


def _snakemake(work, config, *extra, timeout=HANG_GUARD_S):
    command = [shutil.which("snakemake", path=ENV["PATH"]), "-s", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(config), "--cores", "2", *extra]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)


def _job_stats(output):
    """The `Job stats` table of a dry run: rule -> count."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


# Counted by hand from the configs (seeds x settings):
# fmnist_lenet_bounds: range tests 3 seeds x (its own + 8 variants) = 27; trainings (11 grid points
# + 8 rules) x 3 seeds = 57. fmnist_resnet20_bounds: 3 x (1 + 3) = 12; (7 + 8) x 3 = 45.
# The CIFAR studies each: 3 x (1 + 3) = 12 range tests; (10 + 8) x 4 seeds = 72 trainings.
# Each job's spec.json is written by the Snakefile itself (onecycle.dag.run_specs), not by a job.
FMNIST_JOBS = {"range_test": 27 + 12, "train": 57 + 45, "combine_bounds": 2, "prepare_data": 1, "workflow_config": 1,
               "report_experiment": 2, "range_test_figure": 2, "bounds_study_report": 2, "bounds_study_summary": 1,
               "html_report": 1, "all": 1}
CIFAR_JOBS = {"range_test": 24, "train": 144, "combine_bounds": 2,
              "prepare_data": 2, "workflow_config": 1, "report_experiment": 2, "range_test_figure": 2,
              "bounds_study_report": 2, "bounds_study_summary": 1, "html_report": 1, "all": 1}


@pytest.mark.parametrize("config, expected", [("bounds_study.yaml", FMNIST_JOBS),
                                              ("bounds_study_cifar.yaml", CIFAR_JOBS)])
def test_study_configs_list_the_expected_jobs(tmp_path, config, expected):
    result = _snakemake(tmp_path, REPO / "configs" / config, "-n", "--resources", "gpu=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _job_stats(result.stdout) == {**expected, "total": sum(expected.values())}


def _tiny_study():
    """LeNet on 1 024 images, 2 range-test seeds and a variant, 7 grid points and 3 rules, 2
    training seeds of one epoch (8 iterations): 20 trainings of a few seconds each."""
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["experiments"]["fmnist_lenet"]
    base = smoke["base"]
    base["data"]["train_subset"] = 1024
    return {
        "results_dir": "results/tiny study",
        "seeds": [0, 1],
        "experiments": {"tiny_bounds": {
            "base": base,
            "range_test_seeds": [0, 1],
            "range_test": {**smoke["range_test"], "iterations": 24, "eval_every": 2, "eval_subset": 500},
            "bounds_study": {
                "training": {"schedule": {"policy": "smith_1cycle",
                                          "params": {"variant": "caffe", "stepsize_epochs": 0.45,
                                                     "momentum": 0.95, "min_momentum": 0.8}},
                             "train": {"epochs": 1}},
                "max_lr_grid": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
                "rules": ["smith_accuracy_peak", "fastai_valley", "steepest_slope_log_lr"],
                "paper_max_lr": 0.1, "paper_source": "Part 1 Table 2",
                "range_test_variants": {"exp": {"ramp": "exponential", "start_lr": 1.0e-4}},
            },
        }},
    }


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    work = tmp_path_factory.mktemp("study")
    (work / "tiny.yaml").write_text(yaml.safe_dump(_tiny_study()))
    result = _snakemake(work, work / "tiny.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    return work, work / "results" / "tiny study"


# An LR in a table's CSV keeps 6 significant digits (tables.OTHER_SIGNIFICANT_DIGITS): within half
# a unit of the 6th digit, a relative 5e-6 of the value.
CSV_LR = dict(rel=5e-6)


def _metrics(results):
    return [json.loads(p.read_text()) for p in sorted((results / "train" / "tiny_bounds").rglob("metrics.json"))]


@needs_fashion_mnist
def test_tiny_study_regret_table_matches_the_runs(tiny_study):
    _, results = tiny_study
    runs = _metrics(results)
    assert len(runs) == (7 + 3) * 2
    # Recomputed here: a completed run scores its final accuracy (%), a diverged one chance (10%).
    scores = {}
    for m in runs:
        score = 100 * m["final"]["test_accuracy"] if m["status"] == "completed" else 10.0
        scores.setdefault(m["group"], []).append(score)
    grid = {g: statistics.mean(v) for g, v in scores.items() if g.startswith("lr_")}
    best_group = max(grid, key=grid.get)
    table = pd.read_csv(results / "tables" / "tiny_bounds_regret.csv").set_index("rule")
    assert sorted(table.index) == ["fastai_valley", "smith_accuracy_peak", "steepest_slope_log_lr"]
    # The CSV holds pandas' shortest round-trip repr of each float64, and the means here and in
    # the suite add the same <= 2 numbers: equal to the last bit or one ulp of a sum apart.
    tolerance = dict(rel=1e-12)
    for rule, row in table.iterrows():
        mean = statistics.mean(scores[f"rule_{rule}"])
        assert row.accuracy_mean == pytest.approx(mean, **tolerance)
        assert row.grid_best_accuracy == pytest.approx(grid[best_group], **tolerance)
        assert row.grid_best_max_lr == pytest.approx(float(best_group.removeprefix("lr_")))
        # The regret is the mean of the paired differences: the same sums in another order, a few
        # ulps of numbers below 100 (1e-13) apart from the difference of the means.
        assert row.regret_pp == pytest.approx(grid[best_group] - mean, abs=1e-9)
        assert row.n == 2 and row.n_diverged == sum(m["status"] == "diverged" for m in runs if m["group"] == f"rule_{rule}")
    # Ranks share a place within noise (paired t over the 2 seeds): 1 + the rules better beyond it.
    # A study that failed a validity gate (8-iteration runs may stay at chance) ranks nothing.
    gates = pd.read_csv(results / "tables" / "tiny_bounds_validity.csv")
    if (gates["passed"].astype(str) == "False").any():
        assert table["rank"].astype(str).str.startswith("invalid: ").all()
        return
    by_seed = {r: {int(m["seed"]): (100 * m["final"]["test_accuracy"] if m["status"] == "completed" else 10.0)
                   for m in runs if m["group"] == f"rule_{r}"} for r in table.index}
    expected = {r: 1 + sum(difference_bounds(by_seed[q], by_seed[r]).lower > 0 for q in table.index if q != r)
                for r in table.index}
    assert table["rank"].astype(int).to_dict() == expected


@needs_fashion_mnist
def test_tiny_study_trains_each_rule_at_its_median_suggestion(tiny_study):
    _, results = tiny_study
    seeds = [json.loads((results / "range_test" / "tiny_bounds" / f"seed{k}" / "bounds.json").read_text())
             for k in (0, 1)]
    combined = json.loads((results / "range_test" / "tiny_bounds" / "bounds.json").read_text())
    table = pd.read_csv(results / "tables" / "tiny_bounds_regret.csv").set_index("rule")
    for rule in ("smith_accuracy_peak", "fastai_valley", "steepest_slope_log_lr"):
        per_seed = [s["suggestions"][rule]["max_lr"] for s in seeds]
        # Every rule's per-seed suggestion is kept, not only the chosen rule's median.
        assert combined["rules"][rule]["per_seed"] == per_seed
        found = [v for v in per_seed if v is not None]
        for m in _metrics(results):
            if m["group"] == f"rule_{rule}":
                params = m["config"]["schedule_resolved"]["params"]
                assert params["max_lr"] == pytest.approx(statistics.median(found))
                assert params["base_lr"] == pytest.approx(statistics.median(found) / 10)  # policy_kind 1cycle
        assert table.loc[rule, "suggested_max_lr_mean"] == pytest.approx(statistics.mean(found), **CSV_LR)
        assert table.loc[rule, "n_range_tests"] == len(found)
    settings = pd.read_csv(results / "tables" / "tiny_bounds_range_test_settings.csv").set_index("rule")
    variant = [json.loads((results / "range_test" / "tiny_bounds" / "settings" / "exp" / f"seed{k}" / "bounds.json")
                          .read_text())["suggestions"]["fastai_valley"]["max_lr"] for k in (0, 1)]
    assert settings.loc["fastai_valley", "exp_mean"] == pytest.approx(statistics.mean(variant), **CSV_LR)


@needs_fashion_mnist
def test_tiny_study_figures_summary_and_report_without_training(tiny_study):
    work, results = tiny_study
    for name in ("tiny_bounds_regret", "tiny_bounds_range_test_settings"):
        assert (results / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (results / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    summary = pd.read_csv(results / "tables" / "bounds_study_summary.csv").set_index("rule")
    regret = pd.read_csv(results / "tables" / "tiny_bounds_regret.csv").set_index("rule")
    if regret["validity"].notna().any():
        # An invalid study is left out of the summary, and its caption says why.
        assert summary.empty and "Left out, invalid: " in (results / "tables" / "bounds_study_summary.md").read_text()
    else:
        # One valid study: the mean regret is its regret.
        assert summary["mean_regret_pp"].to_dict() == pytest.approx(regret["regret_pp"].to_dict())
    assert "±" in (results / "tables" / "tiny_bounds_regret.md").read_text()
    # The report page shows the summary, then the study's regret and settings tables and figures.
    # (The answers above them link the regret figure too: the order is read from the summary on.)
    page = (results / "report.html").read_text()
    start = page.index('id="bounds-studies"')
    sections = [start, *(page.index(text, start) for text in ('id="tiny_bounds"', "tiny_bounds_regret.png",
                                                              "tiny_bounds_range_test_settings.png"))]
    assert sections == sorted(sections)
    for rule in regret.index:
        assert f"<td>{rule}</td>" in page
    assert (results / "tables" / "tiny_bounds_regret.html").read_text() in page
    assert (results / "tables" / "bounds_study_summary.html").read_text() in page
    # `make figures`: the tables again from stored results, nothing trained.
    metrics = sorted((results / "train").rglob("metrics.json"))
    before = {p: p.stat().st_mtime_ns for p in metrics}
    (results / "tables" / "tiny_bounds_regret.csv").unlink()
    (results / "tables" / "bounds_study_summary.csv").unlink()
    report = subprocess.run([shutil.which("onecycle", path=ENV["PATH"]), "report", "--config", "tiny.yaml"],
                            cwd=work, env=ENV, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert report.returncode == 0, report.stderr
    assert pd.read_csv(results / "tables" / "tiny_bounds_regret.csv").equals(regret.reset_index())
    assert (results / "tables" / "bounds_study_summary.csv").exists()
    assert {p: p.stat().st_mtime_ns for p in metrics} == before
