"""configs/sc_confounds.yaml, the super-convergence mirror's confounds (#26): each experiment is
the mirror (configs/sc_mirror.yaml) with exactly one setting changed back towards SC's, so a
difference between the two tables is that setting's. Pinned here against the mirror's own
expanded jobs; a tiny copy runs through the CLI and its report states every claim."""

import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, needs_fashion_mnist
from onecycle import cli, io
from onecycle.experiments.config import RunConfig, parse
from onecycle.experiments.expansion import expand
from onecycle.report import claims
from test_sc_mirror import tiny_mirror

CONFIG, MIRROR_CONFIG = REPO / "configs" / "sc_confounds.yaml", REPO / "configs" / "sc_mirror.yaml"
SCALED_LR, SEMANTICS, MIRROR = "sc_confounds_scaled_lr", "sc_confounds_semantics", "sc_mirror_resnet20"
BUDGET = "sc_confounds_budget"
# The budget setting runs 4x the mirror's iterations (issue 26 (c): cycles of 1 600 against PC-LR at 4x).
BUDGET_FACTOR = 4
# SC ran its LRs at a total batch of 1 000 (8 GPUs x 125, arXiv:1708.07120 §4 / docs/paper_reference.md
# D6); the mirror trains at 125. The linear scaling rule divides every LR by 1 000 / 125.
LINEAR_RULE_FACTOR = 1000 // 125
LR_KEYS = ("base_lr", "max_lr")


def _load(path) -> dict:
    return yaml.safe_load(path.read_text())


def _jobs_by_group(config: dict, source, experiment: str) -> dict:
    return {(job.group, job.seed): job.config for job in expand(config, str(source)).experiment_trains(experiment)}


def test_scaled_lr_is_the_mirror_with_every_lr_divided_by_eight():
    mirror = _jobs_by_group(_load(MIRROR_CONFIG), MIRROR_CONFIG, MIRROR)
    scaled = _jobs_by_group(_load(CONFIG), CONFIG, SCALED_LR)
    # Every group and seed of the mirror's ResNet-20 experiment, no more.
    assert sorted(scaled) == sorted(mirror)
    for key, job in scaled.items():
        original = mirror[key]
        # Data, net, fillers, optimizer, batch, epochs and evaluation: the mirror's, unchanged.
        for part in ("data", "model", "optim", "train"):
            assert job[part] == original[part], (key, part)
        schedule, mirror_schedule = job["schedule"], original["schedule"]
        assert schedule["policy"] == mirror_schedule["policy"]
        for name, value in mirror_schedule["params"].items():
            if name in LR_KEYS:
                # Exact: 0.1, 3 and 0.35 divided by 8 are 0.0125, 0.375 and 0.04375 in binary too.
                assert schedule["params"][name] == value / LINEAR_RULE_FACTOR, (key, name)
            else:   # stepsize, gamma, stepvalue: the same iterations and drops
                assert schedule["params"][name] == value, (key, name)
        assert set(schedule["params"]) == set(mirror_schedule["params"])


def test_semantics_is_the_mirror_with_pytorchs_rule_batch_norm_and_normalisation():
    mirror = _jobs_by_group(_load(MIRROR_CONFIG), MIRROR_CONFIG, MIRROR)
    torch_run = _jobs_by_group(_load(CONFIG), CONFIG, SEMANTICS)
    # The full set and the smallest, where the mirror and an independent PyTorch run disagreed.
    assert {group for group, _ in torch_run} == {"clr_10k", "pc_10k", "clr_1.25k", "pc_1.25k"}
    for key, job in torch_run.items():
        # Compared as parsed, defaults filled in (the expanded jobs leave out default values).
        original, run = (parse(RunConfig, config).model_dump() for config in (mirror[key], job))
        assert (original["optim"]["update_rule"], run["optim"]["update_rule"]) == ("caffe", "pytorch")
        assert (original["data"]["normalize"], run["data"]["normalize"]) == ("caffe_mean_image", "mean_std")
        assert "batch_norm" not in original["model"]["options"] and run["model"]["options"]["batch_norm"] == "torch"
        # Everything else, the schedule with SC's own LRs included, is the mirror's.
        run["optim"]["update_rule"], run["data"]["normalize"] = "caffe", "caffe_mean_image"
        del run["model"]["options"]["batch_norm"]
        for part in ("name", "experiment"):
            run[part] = original[part]
        assert run == original, key


def test_budget_is_the_scaled_lr_10k_pair_at_four_times_the_iterations():
    scaled = _jobs_by_group(_load(CONFIG), CONFIG, SCALED_LR)
    budget = _jobs_by_group(_load(CONFIG), CONFIG, BUDGET)
    assert sorted(budget) == sorted(key for key in scaled if key[0].endswith("_10k"))
    for key, job in budget.items():
        original, run = (parse(RunConfig, config).model_dump() for config in (scaled[key], job))
        scaled_params = original["schedule"]["params"]
        # Every iteration count x4: the cycle's half-length, PC-LR's drops, the epochs and the
        # evaluation spacing (the same 5 or 10 evaluations per run); the LRs the scaled setting's.
        for name in ("stepsize", "stepvalue"):
            if name in scaled_params:
                scaled_params[name] = (
                    [BUDGET_FACTOR * v for v in scaled_params[name]] if isinstance(scaled_params[name], list)
                    else BUDGET_FACTOR * scaled_params[name])
        for name in ("epochs", "eval_every_epochs"):
            original["train"][name] = BUDGET_FACTOR * (original["train"][name] or 1)
        for part in ("name", "experiment"):
            run[part] = original[part]
        assert run == original, key
    config = _load(CONFIG)["experiments"][BUDGET]
    assert [c["kind"] for c in config["claims"]] == ["non_inferior", "speedup"]
    assert {k: v for k, v in config["departures"].items() if k not in ("budget", "bn", "data")} == {
        k: v for k, v in _load(CONFIG)["experiments"][SCALED_LR]["departures"].items()
        if k not in ("budget", "bn", "data")}


def test_scaled_lr_states_the_mirror_claims_at_every_size():
    config, mirror = _load(CONFIG)["experiments"][SCALED_LR], _load(MIRROR_CONFIG)["experiments"][MIRROR]
    kept = ("kind", "candidate", "baseline", "margin_pp", "expected", "k")
    assert [{k: c.get(k) for k in kept} for c in config["claims"]] == [{k: c.get(k) for k in kept}
                                                                     for c in mirror["claims"]]
    # The departure that differs from the mirror's is the LR; the others are the mirror's words.
    assert config["departures"]["lr"] != mirror["departures"]["lr"]
    assert {k: v for k, v in config["departures"].items() if k != "lr"} == {
        k: v for k, v in mirror["departures"].items() if k != "lr"}


def _lr_trace(out_dir) -> list[float]:
    return list(pd.read_csv(out_dir / "train_log.csv").lr)


@pytest.mark.slow
@needs_fashion_mnist
def test_tiny_confounds_jobs_and_report(tmp_path):
    """The scaled-LR 10k pair and the PyTorch-semantics cycle of a tiny copy through `onecycle
    train` and `report`, as the DAG runs them; the other groups stay unrun, their claims pending."""
    results = tmp_path / "confounds_tiny"
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_mirror(_load(CONFIG), str(results))))
    plan = expand(_load(config_path), str(config_path))
    for job in plan.experiment_trains(SCALED_LR) + plan.experiment_trains(SEMANTICS):
        if (job.experiment, job.group) in ((SCALED_LR, "clr_10k"), (SCALED_LR, "pc_10k"), (SEMANTICS, "clr_10k")):
            spec = tmp_path / "specs" / job.job_id / "spec.json"
            io.write_json(spec, job.config)
            assert cli.main(["train", "--config", str(spec), "--out", str(job.out_dir), "--threads", "1"]) == 0
    run = results / "train" / SCALED_LR
    # The tiny cycle (stepsize 2) by hand: 0.0125 + 0.3625 * (1 - |it / 2 - 1|), it = 0..3.
    assert _lr_trace(run / "clr_10k" / "seed0") == pytest.approx([0.0125, 0.19375, 0.375, 0.19375])
    # PC-LR 0.04375, x0.1 from iteration 10 and again from 14 (tiny_mirror's drops).
    assert _lr_trace(run / "pc_10k" / "seed0") == pytest.approx([0.04375] * 10 + [0.004375] * 4 + [0.0004375] * 2)

    assert cli.main(["report", "--config", str(config_path)]) == 0
    table = pd.read_csv(results / "tables" / f"{SCALED_LR}.csv").set_index("group")
    assert sorted(table.index) == sorted(_load(CONFIG)["experiments"][SCALED_LR]["groups"])
    assert (results / "figures" / f"{SCALED_LR}_comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    verdicts = pd.read_csv(results / "tables" / f"{SCALED_LR}_claims.csv").set_index("claim_id")
    for claim_id, row in verdicts.iterrows():
        if claim_id.endswith("_10k"):   # one seed of a few iterations: never "supported"
            assert claims.bare_verdict(row.verdict) in ("inconclusive", "diverged", "invalid")
        else:
            assert row.verdict == "pending"
    for cycle in (run / "clr_10k" / "seed0", results / "train" / SEMANTICS / "clr_10k" / "seed0"):
        metrics = json.loads((cycle / "metrics.json").read_text())
        assert metrics["iterations"] == 4 or metrics["status"] == "diverged"
    # PyTorch's semantics run SC's own cycle: 0.1 + 2.9 * (1 - |it / 2 - 1|).
    assert _lr_trace(results / "train" / SEMANTICS / "clr_10k" / "seed0") == pytest.approx([0.1, 1.55, 3.0, 1.55][
        :len(_lr_trace(results / "train" / SEMANTICS / "clr_10k" / "seed0"))])
    assert (results / "tables" / f"{SEMANTICS}_claims.csv").is_file()


def _summary_script():
    spec = importlib.util.spec_from_file_location("sc_confounds_summary", REPO / "scripts" / "sc_confounds_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _per_seed(text: str) -> dict[int, float]:
    """A claims table's per_seed column, "seed 0: -8.42 pp; seed 1: ...", as {seed: pp}."""
    return {int(part.split(":")[0].split()[1]): float(part.split(":")[1].split()[0]) for part in text.split("; ")}


def test_the_summary_restates_every_decided_claim_and_pairs_the_gaps_by_seed(tmp_path, monkeypatch):
    script = _summary_script()
    table = script.summary()
    for label, folder, experiment, prefix, reference in script.SETTINGS:
        claims = pd.read_csv(REPO / "results" / folder / "tables" / f"{experiment}_claims.csv").set_index("claim_id")
        decided = [c for c in claims.index if c.startswith(prefix) and claims.loc[c, "kind"] == "non_inferior"
                   and claims.loc[c, "verdict"] != "pending"]
        rows = table[table["experiment"] == experiment]
        # One row per decided claim, its numbers the claims table's (the report decided them).
        assert len(rows) == len(decided)
        for row, claim_id in zip(rows.itertuples(), decided):
            assert (row.difference_pp, row.lower_bound_pp, row.upper_bound_pp) == tuple(
                claims.loc[claim_id, ["estimate", "lower_bound", "upper_bound"]])
            if reference is None:
                assert math.isnan(row.gap_change_pp)
                continue
            # The gap change from the two claims tables' per-seed differences (rounded to 0.01 pp
            # there, so to within 0.01 pp of the change the script takes from the runs themselves).
            _, ref_folder, ref_experiment, ref_prefix, _ = script.SETTINGS[reference]
            assert row.gap_change_reference == script.SETTINGS[reference][0]
            ref_claims = pd.read_csv(REPO / "results" / ref_folder / "tables" / f"{ref_experiment}_claims.csv")
            theirs = _per_seed(ref_claims.set_index("claim_id").loc[claim_id.replace(prefix, ref_prefix), "per_seed"])
            ours = _per_seed(claims.loc[claim_id, "per_seed"])
            expected = np.mean([ours[s] - theirs[s] for s in sorted(set(ours) & set(theirs))])
            assert row.gap_change_pp == pytest.approx(expected, abs=0.01)
            assert row.gap_change_low < row.gap_change_pp < row.gap_change_high
    assert table["experiment"].iloc[0] == script.SETTINGS[0][2] and (table["images"] > 0).all()
    monkeypatch.setattr(script, "OUT_FIGURES", tmp_path)
    paths = script.figure(table)
    assert [p.name for p in paths] == ["sc_confounds_summary.png", "sc_confounds_summary.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_summary_names_a_missing_table_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    script = _summary_script()
    monkeypatch.setattr(script, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(script, "OUT_TABLES", tmp_path / "tables")
    monkeypatch.setattr(script, "OUT_FIGURES", tmp_path / "figures")
    with pytest.raises(SystemExit, match=r"^sc_confounds_summary: .*sc_mirror_resnet20_claims\.csv: not found"):
        script.main()
    assert not (tmp_path / "tables").exists() and not (tmp_path / "figures").exists()
