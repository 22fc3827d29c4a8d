"""`onecycle compare-reference` (onecycle.report.reference): a fresh run against reference results, at
the level that holds across machines; hand-made result folders, then the committed smoke
reference against itself."""

import json
import math

import pandas as pd
import pytest
import yaml

from conftest import REPO
from onecycle import cli
from onecycle.report.reference import ACCURACY_Z, accuracy_tolerance_pp, compare

WORKFLOW = {"results_dir": "unused", "seeds": [0, 1],
            "experiments": {"exp": {"base": {"data": {"dataset": "fashion_mnist"}},
                                    "groups": {"onecycle": {}, "inv": {}}}}}
COLUMNS = ["experiment", "group", "n", "n_completed", "n_diverged", "accuracy_mean", "accuracy_std",
           "accuracy_ci_low", "accuracy_ci_high", "epochs", "iterations", "wall_time_s", "verdict"]


def _group(group, mean, std, n=2, completed=2, verdict="no published number"):
    return {"experiment": "exp", "group": group, "n": n, "n_completed": completed, "n_diverged": n - completed,
            "accuracy_mean": mean, "accuracy_std": std, "accuracy_ci_low": mean - std,
            "accuracy_ci_high": mean + std, "epochs": 3.0, "iterations": 234.0, "wall_time_s": 27.0,
            "verdict": verdict}


def _results(folder, rows, claims=None, revision="abc", cpu="Some CPU", threads=1):
    (folder / "tables").mkdir(parents=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(folder / "tables" / "exp.csv", index=False)
    if claims is not None:
        pd.DataFrame([{"claim_id": c, "statement": "...", "verdict": v} for c, v in claims.items()]
                     ).to_csv(folder / "tables" / "exp_claims.csv", index=False)
    run = folder / "train" / "exp" / "onecycle" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(
        {"provenance": {"git_revision": revision, "cpu_model": cpu, "torch_threads": threads}}))
    return folder


REFERENCE = [_group("onecycle", 81.20, 0.48), _group("inv", 85.085, 0.035)]


def _compare(tmp_path, run_rows, ref_claims=None, run_claims=None):
    reference = _results(tmp_path / "ref", REFERENCE, ref_claims)
    run = _results(tmp_path / "run", run_rows, run_claims, revision="def", cpu="Other CPU", threads=2)
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(WORKFLOW))
    return cli.main(["compare-reference", "--config", str(tmp_path / "wf.yaml"), "--reference", str(reference),
                     "--run", str(run)])


def test_tolerance_is_z_standard_errors_of_a_difference_of_means():
    # Pooled seed variance (1 degree of freedom each): (0.48^2 + 0.50^2) / 2 = 0.2402 pp^2, above
    # the binomial floor of p = 0.812 on 10 000 images, 100^2 x 0.812 x 0.188 / 10 000 = 0.1527.
    assert accuracy_tolerance_pp(0.48, 2, 0.50, 2, 81.2, 10_000) == pytest.approx(
        ACCURACY_Z * math.sqrt(0.2402 * (1 / 2 + 1 / 2)), rel=1e-12)
    # Two seeds that agree by chance (0.035 pp) leave the binomial floor: 4 x 0.391 = 1.56 pp.
    assert accuracy_tolerance_pp(0.035, 2, 0.02, 2, 85.0, 10_000) == pytest.approx(
        ACCURACY_Z * math.sqrt(0.85 * 0.15 * (1 / 2 + 1 / 2)), rel=1e-12)
    # More seeds, smaller error: 8 against 2 seeds.
    assert accuracy_tolerance_pp(0.5, 8, 0.5, 2, 81.2, 10_000) == pytest.approx(
        ACCURACY_Z * math.sqrt(0.25 * (1 / 8 + 1 / 2)), rel=1e-12)
    # One seed each: no spread, the floor alone; nothing known at all: no tolerance.
    assert accuracy_tolerance_pp(math.nan, 1, math.nan, 1, 90.0, 10_000) == pytest.approx(
        ACCURACY_Z * math.sqrt(0.09 * 2), rel=1e-12)
    assert math.isnan(accuracy_tolerance_pp(math.nan, 1, math.nan, 1, 90.0, None))


def test_a_run_within_tolerance_agrees(tmp_path, capsys):
    # 0.9 pp below the reference with tolerance 2.00 pp; 0.5 pp above with tolerance 1.41 pp.
    status = _compare(tmp_path, [_group("onecycle", 80.30, 0.52), _group("inv", 85.585, 0.10)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "agreement: all 6 checks hold" in out and " NO" not in out
    assert "revision abc, cpu Some CPU, torch threads 1" in out
    assert "revision def, cpu Other CPU, torch threads 2" in out


def test_accuracy_outside_tolerance_disagrees(tmp_path, capsys):
    status = _compare(tmp_path, [_group("onecycle", 81.20, 0.48), _group("inv", 83.30, 0.05)])
    out = capsys.readouterr().out
    assert status == 1
    line = next(line for line in out.splitlines() if " inv " in line and "accuracy" in line)
    # Tolerance: the binomial floor at p = 84.19 %, 4 x sqrt(0.8419 x 0.1581) = 1.46 pp < 1.79 pp.
    assert "85.08 (n=2)" in line and "83.30 (n=2)" in line and "±1.46" in line and line.endswith("NO")
    assert "DISAGREEMENT: 1 of 6 checks fail" in out


def test_changed_verdict_and_status_disagree(tmp_path, capsys):
    run = [_group("onecycle", 81.0, 0.5, completed=1, verdict="replicated"), _group("inv", 85.085, 0.035)]
    status = _compare(tmp_path, run)
    checks = {(c.subject, c.check): c for c in compare(tmp_path / "ref", tmp_path / "run", WORKFLOW)}
    assert status == 1
    assert not checks["onecycle", "status"].agrees
    assert checks["onecycle", "status"].run == "2 run, 1 completed, 1 diverged"
    assert not checks["onecycle", "verdict"].agrees
    assert checks["inv", "verdict"].agrees and checks["inv", "accuracy"].agrees
    assert "DISAGREEMENT: 2 of 6" in capsys.readouterr().out


def test_missing_run_and_missing_group_disagree(tmp_path, capsys):
    reference = _results(tmp_path / "ref", REFERENCE)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    checks = compare(reference, empty, WORKFLOW)
    assert [(c.subject, c.tolerance, c.agrees) for c in checks] == [
        ("onecycle", "missing from the run", False), ("inv", "missing from the run", False)]
    status = _compare(tmp_path / "partial", [_group("onecycle", 81.2, 0.48)])
    assert status == 1 and "missing from the run" in capsys.readouterr().out


def test_claim_verdicts_must_match(tmp_path):
    claims = {"part1-t2-mnist": "replicated", "sc-fig1": "not replicated"}
    assert _compare(tmp_path / "same", REFERENCE, claims, claims) == 0
    changed = {**claims, "sc-fig1": "replicated"}
    assert _compare(tmp_path / "changed", REFERENCE, claims, changed) == 1
    assert _compare(tmp_path / "absent", REFERENCE, claims, None) == 1
    checks = compare(tmp_path / "changed" / "ref", tmp_path / "changed" / "run", WORKFLOW)
    assert [(c.subject, c.agrees) for c in checks if c.check == "claim"] == [
        ("part1-t2-mnist", True), ("sc-fig1", False)]


def test_missing_reference_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(WORKFLOW))
    (tmp_path / "run").mkdir()
    assert cli.main(["compare-reference", "--config", str(tmp_path / "wf.yaml"), "--reference",
                     str(tmp_path / "nowhere"), "--run", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"onecycle: error: {tmp_path / 'nowhere'}: results folder not found\n"


def test_committed_smoke_reference_agrees_with_itself(capsys):
    # The real layout: the committed reference's tables and provenance read as the comparison expects.
    status = cli.main(["compare-reference", "--config", str(REPO / "configs" / "smoke.yaml"),
                       "--reference", str(REPO / "results" / "smoke"), "--run", str(REPO / "results" / "smoke")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "agreement: all" in out
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    for group in smoke["experiments"]["fmnist_lenet"]["groups"]:
        assert sum(f" {group} " in line for line in out.splitlines()) == 3, group  # status, accuracy, verdict
