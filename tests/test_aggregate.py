"""Aggregation of hand-made result files into the replication tables, and the published data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import HANG_GUARD_S
from onecycle.report import aggregate, speedup
from onecycle.report.runs import RUN_COLUMNS, ResultFileError, collect_runs
from onecycle.report.tables import display_frame, rounded_for_csv, write_table
from onecycle.report.published import PublishedDataError, find_published_file, load_published


def write_run(root, group, seed, status="completed", accuracy=0.9, *, experiment="mnist_lenet", epochs=3,
              iterations=300, iterations_planned=None, wall_time_s=30.0, weight_decay=5e-4, momentum=0.95):
    """A metrics.json as train.py writes it; accuracy None = diverged before the first evaluation.
    A completed run plans the iterations it ran, a diverged one planned more, unless given."""
    if iterations_planned is None:
        iterations_planned = iterations if status == "completed" else iterations + 100
    config = {"name": f"{group}_s{seed}", "experiment": experiment, "group": group, "seed": seed,
              "data": {"dataset": "mnist", "train_subset": None}, "model": {"arch": "lenet", "init": "default"},
              "optim": {"algorithm": "sgd", "update_rule": "caffe", "weight_decay": weight_decay},
              "schedule": {"policy": "smith_1cycle", "params": {"momentum": momentum}},
              "train": {"batch_size": 128, "epochs": epochs}, "device": "cpu"}
    summary = None if accuracy is None else {"epoch": epochs, "iteration": iterations,
                                             "test_accuracy": accuracy, "test_loss": 0.3}
    metrics = {"status": status, "name": config["name"], "experiment": experiment, "group": group, "seed": seed,
               "config": config, "iterations": iterations, "iterations_planned": iterations_planned,
               "epochs_completed": epochs,
               "final": summary, "best": summary,
               "diverged": None if status == "completed" else {"iteration": iterations, "reason": "loss is NaN"},
               "wall_time_s": wall_time_s, "provenance": {"seed": seed}}
    path = root / f"{experiment}_{group}_s{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    return path


# --------------------------------------------------------------------------------------------
# collect_runs
# --------------------------------------------------------------------------------------------

def test_collect_runs_reads_percent_and_settings(tmp_path):
    paths = [write_run(tmp_path, "1cycle", 0, accuracy=0.9931, wall_time_s=12.5),
             write_run(tmp_path, "1cycle", 1, status="diverged", accuracy=None, epochs=0, iterations=40)]
    runs = collect_runs(paths, settings={"max_momentum": "schedule.params.momentum"})
    assert list(runs["status"]) == ["completed", "diverged"]
    assert runs.loc[0, "final_accuracy"] == pytest.approx(99.31)
    assert math.isnan(runs.loc[1, "final_accuracy"]) and math.isnan(runs.loc[1, "final_test_loss"])
    assert runs.loc[0, ["dataset", "arch", "policy", "weight_decay", "batch_size", "epochs_planned"]].tolist() == \
        ["mnist", "lenet", "smith_1cycle", 5e-4, 128, 3]
    assert runs.loc[1, ["iterations", "epochs_completed"]].tolist() == [40, 0]
    assert list(runs["max_momentum"]) == [0.95, 0.95]
    assert runs.loc[0, "metrics_path"] == str(paths[0])


def test_collect_runs_of_nothing_has_the_columns():
    assert list(collect_runs([]).columns) == list(RUN_COLUMNS)


def test_collect_runs_names_a_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "metrics.json"
    with pytest.raises(ResultFileError, match=f"{missing}: metrics file not found"):
        collect_runs([missing])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.pop("group"), "missing key 'group'"),
    (lambda m: m["config"]["optim"].pop("weight_decay"), "missing key 'config.optim.weight_decay'"),
    (lambda m: m.update(status="running"), "key 'status' is 'running'"),
    (lambda m: m["final"].update(test_accuracy=93.1), "'final.test_accuracy' is 93.1, expected a fraction"),
    (lambda m: m.update(final=None), "status is 'completed' but 'final.test_accuracy' is null"),
    (lambda m: m.update(iterations="300"), "key 'iterations' is '300', expected an integer"),
])
def test_collect_runs_rejects_malformed_metrics_naming_file_and_key(tmp_path, edit, message):
    path = write_run(tmp_path, "1cycle", 0)
    metrics = json.loads(path.read_text())
    edit(metrics)
    path.write_text(json.dumps(metrics))
    with pytest.raises(ResultFileError, match=f"{path}: .*{message}"):
        collect_runs([path])


def test_collect_runs_rejects_invalid_json_and_double_listed_runs(tmp_path):
    path = write_run(tmp_path, "1cycle", 0)
    with pytest.raises(ResultFileError, match=f"{path}: .*already read from {path}"):
        collect_runs([path, path])
    path.write_text("{not json")
    with pytest.raises(ResultFileError, match=f"{path}: unreadable metrics file"):
        collect_runs([path])


def test_collect_runs_rejects_a_settings_path_no_run_has(tmp_path):
    with pytest.raises(ValueError, match="no run's config has 'optim.momentun'"):
        collect_runs([write_run(tmp_path, "1cycle", 0)], settings={"m": "optim.momentun"})


# --------------------------------------------------------------------------------------------
# summary_table
# --------------------------------------------------------------------------------------------

@pytest.fixture
def published():
    return load_published()


@pytest.fixture
def runs(tmp_path):
    paths = [
        # 1cycle: 99.20, 99.26, 99.32 -> mean 99.26, std 0.06 (deviations -0.06, 0, 0.06; ddof 1).
        write_run(tmp_path, "1cycle_12ep", 0, accuracy=0.9920, wall_time_s=10.0),
        write_run(tmp_path, "1cycle_12ep", 1, accuracy=0.9926, wall_time_s=20.0),
        write_run(tmp_path, "1cycle_12ep", 2, accuracy=0.9932, wall_time_s=30.0),
        # inv: 95, 96, 97 -> mean 96, std 1; one more seed diverged and is left out of the mean.
        write_run(tmp_path, "inv_85ep", 0, accuracy=0.95, epochs=85, iterations=8500),
        write_run(tmp_path, "inv_85ep", 1, accuracy=0.96, epochs=85, iterations=8500),
        write_run(tmp_path, "inv_85ep", 2, accuracy=0.97, epochs=85, iterations=8500),
        write_run(tmp_path, "inv_85ep", 3, status="diverged", accuracy=0.10, epochs=2, iterations=150),
        # every seed of step_85ep diverged
        write_run(tmp_path, "step_85ep", 0, status="diverged", accuracy=None, epochs=0, iterations=12),
    ]
    return collect_runs(paths)


MAPPING = {"1cycle_12ep": "part1_t2_mnist_lenet_1cycle_12ep", "inv_85ep": "part1_t2_mnist_lenet_inv_85ep",
           "step_85ep": "part1_t2_mnist_lenet_step_85ep", "1cycle_25ep": "part1_t2_mnist_lenet_1cycle_25ep"}


def test_summary_table_statistics_and_verdicts(runs, published):
    expected = [("mnist_lenet", g) for g in ("1cycle_12ep", "1cycle_25ep", "inv_85ep", "step_85ep")]
    table = aggregate.summary_table(runs, published=published, mapping=MAPPING, expected_groups=expected)
    table = table.set_index("group")
    assert list(table.index) == ["1cycle_12ep", "1cycle_25ep", "inv_85ep", "step_85ep"]

    one = table.loc["1cycle_12ep"]
    assert one[["n", "n_completed", "n_diverged"]].tolist() == [3, 3, 0]
    assert one["accuracy_mean"] == pytest.approx(99.26)
    assert one["accuracy_std"] == pytest.approx(0.06)
    # Two-sided 95 % t interval: 99.26 -+ t(0.975, 2) 4.302653 * 0.06 / sqrt 3 = -+0.149, wider
    # than the seeds' own range [99.20, 99.32] (the most a bootstrap of three values can give).
    half = 4.302653 * 0.06 / math.sqrt(3)
    assert (one["accuracy_ci_low"], one["accuracy_ci_high"]) == pytest.approx((99.26 - half, 99.26 + half), abs=1e-6)
    assert one[["accuracy_min", "accuracy_max"]].tolist() == pytest.approx([99.20, 99.32])
    assert one["accuracy_by_seed"] == "seed 0: 99.200; seed 1: 99.260; seed 2: 99.320"
    assert one[["epochs", "iterations", "wall_time_s"]].tolist() == pytest.approx([3, 300, 20.0])
    # Paper: 99.25 ± 0.03 (docs/paper_reference.md A2), V-img.
    assert one[["paper_accuracy", "paper_accuracy_std", "paper_confidence"]].tolist() == [99.25, 0.03, "V-img"]
    assert one["difference_pp"] == pytest.approx(0.01)
    assert one["verdict"] == "replicated"

    inv = table.loc["inv_85ep"]
    assert inv[["n", "n_completed", "n_diverged"]].tolist() == [4, 3, 1]
    assert inv[["accuracy_mean", "accuracy_std", "iterations"]].tolist() == pytest.approx([96.0, 1.0, 8500])
    # |96 - 99.03| = 3.03 > 0.5 + 2 * sqrt(0.04^2 + 1^2) = 2.50
    assert inv["difference_pp"] == pytest.approx(-3.03)
    assert inv["verdict"] == "not replicated"

    assert table.loc["step_85ep", ["n", "n_diverged", "verdict"]].tolist() == [1, 1, "diverged"]
    assert math.isnan(table.loc["step_85ep", "accuracy_mean"])

    pending = table.loc["1cycle_25ep"]
    assert pending[["n", "n_completed", "verdict"]].tolist() == [0, 0, "pending"]
    assert pending["paper_accuracy"] == 99.28


def test_summary_table_without_published_numbers(runs):
    table = aggregate.summary_table(runs, expected_groups=[("mnist_lenet", "later")]).set_index("group")
    # The published number and the difference stay columns, empty where no row is mapped.
    assert table[["paper_accuracy", "difference_pp"]].isna().all().all()
    # A completed group without a published row gets no verdict ("no published number" is not one);
    # pending and diverged groups still say so.
    assert table["verdict"].to_dict() == {"later": "pending", "1cycle_12ep": "", "inv_85ep": "",
                                          "step_85ep": "diverged"}
    # On the page: "—" in the verdict column, and no paper columns at all when no group has a row.
    display = aggregate.summary_display(table.reset_index()).set_index("group")
    assert display["verdict"].to_dict() == {"later": "pending", "1cycle_12ep": "—", "inv_85ep": "—",
                                            "step_85ep": "diverged"}
    assert "published (%)" not in display.columns and "difference (pp)" not in display.columns


def test_summary_table_of_no_runs_is_all_pending(published):
    table = aggregate.summary_table(collect_runs([]), published=published, mapping=MAPPING,
                                    expected_groups=[("mnist_lenet", "1cycle_12ep"), ("mnist_lenet", "inv_85ep")])
    assert table["verdict"].tolist() == ["pending", "pending"]
    assert table["n"].tolist() == [0, 0]


def test_summary_table_rejects_an_unknown_published_id(runs, published):
    with pytest.raises(ValueError, match="group 'inv_85ep' maps to published id 'no_such_row'"):
        aggregate.summary_table(runs, published=published, mapping={"inv_85ep": "no_such_row"})


def test_verdicts_as_shown_follow_the_scale_and_never_compare_two_datasets(runs, published):
    expected = [("mnist_lenet", g) for g in ("1cycle_12ep", "1cycle_25ep", "inv_85ep", "step_85ep", "unmapped")]
    verdicts = aggregate.summary_table(runs, published=published, mapping=MAPPING,
                                       expected_groups=expected).set_index("group")["verdict"]
    assert verdicts.to_dict() == {"1cycle_12ep": "replicated", "1cycle_25ep": "pending", "inv_85ep": "not replicated",
                                  "step_85ep": "diverged", "unmapped": "pending"}

    def shown(label=None, **departures):
        return aggregate.verdicts_as_shown(verdicts, label, departures).to_dict()

    assert shown() == verdicts.to_dict()   # the paper's scale: the verdicts as they are
    at_scale = shown(budget="4 vs 8 epochs")
    assert (at_scale["1cycle_12ep"], at_scale["inv_85ep"]) == ("replicated at this scale", "not replicated at this scale")
    # Another dataset (a Fashion-MNIST mirror of MNIST or CIFAR-10 rows): the paper's number is
    # context, whichever side of it ours falls; groups without a decided verdict keep theirs.
    other_data = shown(data="Fashion-MNIST (paper: CIFAR-10)", budget="1/20")
    assert other_data == {**verdicts.to_dict(), "1cycle_12ep": aggregate.CONTEXT_VERDICT,
                          "inv_85ep": aggregate.CONTEXT_VERDICT}
    assert shown("tiny: no verdict", data="x") == {**verdicts.to_dict(), "1cycle_12ep": "tiny: no verdict",
                                                   "inv_85ep": "tiny: no verdict"}


# --------------------------------------------------------------------------------------------
# write_table
# --------------------------------------------------------------------------------------------

def test_write_table_csv_markdown_and_latex_carry_the_same_numbers(tmp_path, runs, published):
    table = aggregate.summary_table(runs, published=published, mapping=MAPPING)
    stem = tmp_path / "tables" / "mnist_lenet"
    write_table(table, stem, caption="Part 1 Table 2, MNIST rows (100% of data)")

    csv = pd.read_csv(stem.with_suffix(".csv"))
    markdown = stem.with_suffix(".md").read_text()
    latex = stem.with_suffix(".tex").read_text()
    assert list(csv.columns) == list(table.columns)
    completed = csv[csv["n_completed"] > 0]
    assert len(completed) == 2
    for _, row in completed.iterrows():
        ours = f"{row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f}"
        assert ours in markdown
        assert ours.replace("±", r"$\pm$") in latex
    assert "99.26 ± 0.06" in markdown and "99.25 ± 0.03" in markdown
    # The markdown's numeric cells for the diverged group stay empty, not "nan".
    assert "nan" not in markdown.lower() and "nan" not in latex.lower()

    header = markdown.splitlines()[2]
    assert header.startswith("| experiment | group | schedule | n |") and "| accuracy |" in header
    assert len(markdown.splitlines()) == 2 + 2 + len(table)

    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert latex.count(rule) == 1
    assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
    assert r"1cycle\_\allowbreak{}12ep" in latex and r"100\% of data" in latex
    assert not list(stem.parent.glob("*.tmp*"))


def test_display_frame_formats_per_column():
    frame = pd.DataFrame({"n": [4, 2], "lr_mean": [0.001, 0.0005], "lr_std": [0.0002, math.nan],
                          "accuracy": [91.234, 90.0], "accuracy_std": [0.456, 0.1], "note": ["a", None]})
    display = display_frame(frame)
    assert list(display.columns) == ["n", "lr", "accuracy", "note"]
    assert display.to_dict("list") == {"n": ["4", "2"], "lr": ["0.001 ± 0.0002", "0.0005"],
                                       "accuracy": ["91.23 ± 0.46", "90.00 ± 0.10"], "note": ["a", ""]}


def history(accuracies, iterations_per_epoch=100):
    epochs = np.arange(1, len(accuracies) + 1)
    return pd.DataFrame({"epoch": epochs, "iteration": epochs * iterations_per_epoch,
                         "test_accuracy": accuracies, "wall_time_s": epochs * iterations_per_epoch / 10})


# --------------------------------------------------------------------------------------------
# paired_comparison
# --------------------------------------------------------------------------------------------

def test_paired_comparison_over_shared_completed_seeds(tmp_path):
    paths = [write_run(tmp_path, "a", 0, accuracy=0.92), write_run(tmp_path, "a", 1, accuracy=0.93),
             write_run(tmp_path, "a", 2, accuracy=0.94), write_run(tmp_path, "b", 0, accuracy=0.90),
             write_run(tmp_path, "b", 1, accuracy=0.90),
             write_run(tmp_path, "b", 2, status="diverged", accuracy=None)]
    result = aggregate.paired_comparison(collect_runs(paths), "a", "b", experiment="mnist_lenet")
    # Seed 2 of b diverged: the seeds differ, so the bound is Welch's over every completed value
    # (92, 93, 94 vs 90, 90: mean difference 3, the claims' own bound), never a subset picked.
    assert (result["n"], result["n_a"], result["n_b"]) == (2, 3, 2)
    assert result["mean_diff"] == pytest.approx(3.0) and result["test"].startswith("Welch t")
    assert result["difference_by_seed"] == "seed 0: +2.000; seed 1: +3.000"
    assert result["group_a"] == "a" and result["experiment"] == "mnist_lenet"


def test_paired_comparison_without_shared_seeds_compares_the_groups_unpaired(tmp_path):
    runs = collect_runs([write_run(tmp_path, "a", 0), write_run(tmp_path, "b", 1)])
    result = aggregate.paired_comparison(runs, "a", "b")
    # No seed pairs the runs: the groups are compared as groups, and one seed each gives no bound.
    assert result["difference_by_seed"] == "" and result["n"] == 1 and result["test"] == "no test"
    assert math.isnan(result["lower_bound_pp"]) and "at least 2 seeds per group" in result["note"]
    nothing = aggregate.paired_comparison(runs, "a", "missing")
    assert nothing["n"] == 0 and math.isnan(nothing["mean_diff"])


def test_paired_comparison_refuses_a_group_spread_over_experiments(tmp_path):
    runs = collect_runs([write_run(tmp_path, "a", 0, experiment="x"),
                         write_run(tmp_path, "a", 1, experiment="y"), write_run(tmp_path, "b", 0)])
    with pytest.raises(ValueError, match="group 'a' exists in experiments x, y; pass experiment="):
        aggregate.paired_comparison(runs, "a", "b")


# --------------------------------------------------------------------------------------------
# published numbers
# --------------------------------------------------------------------------------------------

def test_published_rows_match_paper_tables(published):
    rows = published.set_index("id")
    assert rows.index.is_unique
    # Every row of A2, every found row of A3, all of A1 and A5 (docs/paper_reference.md).
    assert published["table"].value_counts().to_dict() == {"A2": 26, "A3": 20, "A1": 20, "A5": 14}

    mnist = rows.loc["part1_t2_mnist_lenet_1cycle_12ep"]
    assert (mnist["policy"], mnist["accuracy"], mnist["std"], mnist["confidence"], mnist["n_runs"]) == \
        ("0.01-0.1/5", 99.25, 0.03, "V-img", 4)
    assert mnist["settings"] == {"cm": "0.95-0.8/5", "wd": 5e-4, "epochs": 12, "tbs": 512}

    clr = rows.loc["sc_t1_cifar10_resnet56_clr_50k"]
    assert (clr["accuracy"], clr["confidence"], clr["authors_log"]) == (92.4, "V-img", 92.44)
    assert math.isnan(clr["std"]) and pd.isna(clr["n_runs"])

    exp_range = rows.loc["clr_t1_cifar10_exp_range"]
    assert (exp_range["paper"], exp_range["accuracy"], exp_range["settings"]["iterations"]) == \
        ("arXiv:1506.01186 Table 1", 82.2, 42000)
    assert rows.loc["part1_t1_cifar10_resnet56_cyclic_m95", "accuracy"] == 92.1


def test_published_file_is_found_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_published_file().parts[-3:] == ("configs", "reference", "published.yaml")


def one_row_file(tmp_path, edit):
    row = {"id": "part1_t2_mnist_lenet_1cycle_12ep", "paper": "arXiv:1803.09820 Table 2", "table": "A2",
           "dataset": "MNIST", "architecture": "LeNet", "policy": "0.01-0.1/5",
           "settings": {"cm": "0.95-0.8/5", "wd": 5e-4, "epochs": 12, "tbs": 512}, "accuracy": 99.25,
           "std": 0.03, "n_runs": 4, "confidence": "V-img", "authors_log": None, "note": ""}
    edit(row)
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump({"rows": [row]}))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.pop("std"), "key 'std': missing"),
    (lambda r: r.update(accuracy="99.25"), "key 'accuracy': expected a percentage"),
    (lambda r: r.update(confidence="V-3"), "key 'confidence': 'V-3' is not one of"),
    (lambda r: r["settings"].update(wd="1e-4"), "key 'settings.wd': expected float, got '1e-4'"),
    (lambda r: r["settings"].update(lr=0.1), "key 'settings.lr': unknown setting"),
    (lambda r: r.update(n_runs=True), "key 'n_runs': expected a positive integer"),
])
def test_published_row_errors_name_the_row_and_key(tmp_path, edit, message):
    path = one_row_file(tmp_path, edit)
    with pytest.raises(PublishedDataError, match=f"{path}: row 'part1_t2_mnist_lenet_1cycle_12ep': {message}"):
        load_published(path)


def test_published_duplicate_ids_are_rejected(tmp_path):
    path = one_row_file(tmp_path, lambda r: None)
    rows = yaml.safe_load(path.read_text())["rows"]
    path.write_text(yaml.safe_dump({"rows": rows * 2}))
    with pytest.raises(PublishedDataError, match="row 'part1_t2_mnist_lenet_1cycle_12ep': duplicate id"):
        load_published(path)


# --------------------------------------------------------------------------------------------
# Small n, rounding, the verdict table's display
# --------------------------------------------------------------------------------------------

@pytest.fixture
def two_seed_runs(tmp_path):
    # 85.06 and 85.11 (the smoke inv_6ep seeds): their mean, 85.085, is 85.08500000000001 in floats.
    return collect_runs([
        write_run(tmp_path, "inv_6ep", 0, accuracy=0.8506), write_run(tmp_path, "inv_6ep", 1, accuracy=0.8511),
        write_run(tmp_path, "1cycle", 0, accuracy=0.8154), write_run(tmp_path, "1cycle", 1, accuracy=0.8086),
        write_run(tmp_path, "lonely", 0, accuracy=0.80), write_run(tmp_path, "lonely", 1, status="diverged"),
    ])


def test_fewer_than_three_seeds_get_their_values_not_an_interval(two_seed_runs):
    table = aggregate.summary_table(two_seed_runs, schedules={"inv_6ep": "inv 0.01"}).set_index("group")
    # A t interval of two values has one degree of freedom (-+12.7 standard errors): the values
    # themselves say more, and the interval is left empty.
    assert table[["accuracy_ci_low", "accuracy_ci_high"]].isna().all().all()
    assert table.loc["1cycle", ["accuracy_min", "accuracy_max"]].tolist() == pytest.approx([80.86, 81.54])
    assert table.loc["inv_6ep", "schedule"] == "inv 0.01" and table.loc["lonely", "schedule"] == ""
    display = aggregate.summary_display(table.reset_index()).set_index("group")
    assert display.loc["1cycle", aggregate.SPREAD_HEADER] == "80.86, 81.54"
    # One surviving seed: its value once, never a zero-width interval; the diverged one counted.
    assert display.loc["lonely", ["n", aggregate.SPREAD_HEADER]].tolist() == ["1 of 2", "80.00"]
    # From the CSV's 85.085 (the float nearest, 85.08499999999999..., shows as 85.08): the
    # table a reader sees has the CSV's digits.
    assert display.loc["inv_6ep", "accuracy (%)"] == "85.08 ± 0.04"


def test_csv_is_rounded_to_what_was_measured(tmp_path, two_seed_runs):
    table = aggregate.summary_table(two_seed_runs)
    write_table(table, tmp_path / "t")
    text = (tmp_path / "t.csv").read_text()
    assert "85.085," in text and "85.08500000000001" not in text
    csv = pd.read_csv(tmp_path / "t.csv").set_index("group")
    # std of 85.06 and 85.11: 0.05 / sqrt(2) = 0.035355... -> 0.035 at 3 decimals.
    assert csv.loc["inv_6ep", "accuracy_std"] == 0.035


def test_rounded_for_csv_per_kind_of_column():
    frame = pd.DataFrame({"accuracy_mean": [85.08500000000001], "difference_pp": [-0.12345],
                          "iterations": [4.5000001], "speedup": [2.33333333], "wall_time_s": [27.4456],
                          "p_value": [0.03125], "max_lr": [0.11346153846153845], "n": [2]})
    assert rounded_for_csv(frame).iloc[0].to_dict() == {
        "accuracy_mean": 85.085, "difference_pp": -0.123, "iterations": 4.5, "speedup": 2.333,
        "wall_time_s": 27.4, "p_value": 0.03125, "max_lr": 0.113462, "n": 2}


def test_paired_comparison_states_the_claims_bound_with_n_and_test(two_seed_runs):
    result = aggregate.paired_comparison(two_seed_runs, "1cycle", "inv_6ep")
    # 81.54 - 85.06 = -3.52 and 80.86 - 85.11 = -4.25: mean -3.885, sd 0.516, se 0.365;
    # one-sided 95 % with t(0.95, 1) = 6.313752: -3.885 -+ 2.305.
    assert result["difference_by_seed"] == "seed 0: -3.520; seed 1: -4.250"
    assert result["n"] == 2 and result["test"] == "paired t, df 1" and result["confidence"] == 0.95
    half = 6.313752 * (0.73 / math.sqrt(2)) / math.sqrt(2)
    assert (result["lower_bound_pp"], result["upper_bound_pp"]) == pytest.approx((-3.885 - half, -3.885 + half),
                                                                                abs=1e-5)


def test_verdict_table_html_and_latex_cells(tmp_path, runs, published):
    table = aggregate.summary_table(runs, published=published, mapping=MAPPING,
                                    schedules={"1cycle_12ep": "1cycle 0.01-0.1"})
    write_table(table, tmp_path / "v", caption="Part 1 Table 2", display=aggregate.summary_display(table))
    page = (tmp_path / "v.html").read_text()
    assert '<td class="verdict v-replicated">replicated</td>' in page
    assert '<td class="verdict v-not-replicated">not replicated</td>' in page
    # Three seeds: the 95 % t interval of 99.20, 99.26, 99.32, right-aligned as a number.
    low, high = table.set_index("group").loc["1cycle_12ep", ["accuracy_ci_low", "accuracy_ci_high"]]
    assert f'<td class="num">[{low:.2f}, {high:.2f}]</td>' in page
    assert '<td class="num">99.25 ± 0.03</td>' in page and '<td class="num">+0.01</td>' in page
    latex = (tmp_path / "v.tex").read_text()
    assert r"\begin{tabularx}{\linewidth}" in latex and r"1cycle\_\allowbreak{}12ep" in latex


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (make test installs texlive-latex-base/-recommended as root)")
def test_latex_table_compiles_and_fits_the_page(tmp_path, runs, published):
    # The widest table the suite writes: every display column, long group names and schedules.
    table = aggregate.summary_table(runs, published=published, mapping=MAPPING, schedules={
        "1cycle_12ep": "1cycle 0.0113-0.113 (range test, smith_accuracy_peak)",
        "inv_85ep": "inv 0.01", "step_85ep": "multistep 0.01"})
    table["group"] = table["group"] + "_with_the_pytorch_update_rule"
    write_table(table, tmp_path / "wide", caption="Part 1 Table 2 (50% of data), MNIST & LeNet",
                display=aggregate.summary_display(table), latex_columns=aggregate.SUMMARY_LATEX_COLUMNS)
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs,tabularx}\n"
                                      "\\begin{document}\n\\input{wide.tex}\n\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=HANG_GUARD_S)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert result.returncode == 0, log[-2000:]
    # The article class's text width (345 pt): anything wider is an overfull box in the log.
    assert "Overfull \\hbox" not in log, log[log.index("Overfull"):][:500]
    assert (tmp_path / "doc.pdf").read_bytes().startswith(b"%PDF")


# --------------------------------------------------------------------------------------------
# Broken runs: metrics.json, history.csv and the planned iterations must agree
# --------------------------------------------------------------------------------------------

def write_history(metrics_path, accuracies, iterations_per_epoch=100):
    history(accuracies, iterations_per_epoch).to_csv(metrics_path.parent / "history.csv", index=False)
    return metrics_path.parent / "history.csv"


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda m, h: h.unlink(), "history.csv missing"),
    (lambda m, h: h.write_text("epoch,iteration\n1,100\n"), "history.csv lacks column 'test_accuracy'"),
    (lambda m, h: m.write_text(m.read_text().replace('"iterations": 300', '"iterations": 10')),
     "'completed' after 10 of 300 planned iterations"),
    (lambda m, h: m.write_text(m.read_text().replace('"iterations_planned": 300', '"iterations_planned": 200')),
     "300 iterations, more than the 200 planned"),
    (lambda m, h: write_history(m, [0.5, 0.7]), "history.csv ends at iteration 200, metrics.json at 300"),
    (lambda m, h: write_history(m, [0.5, 0.7, 0.8]), "final accuracy 90.00% in metrics.json, 80.00% in history.csv"),
])
def test_runs_whose_files_disagree_are_broken_and_say_why(tmp_path, edit, reason):
    path = write_run(tmp_path, "1cycle", 0, accuracy=0.9)
    sound = write_run(tmp_path, "1cycle", 1, accuracy=0.9)
    histories = [write_history(path, [0.5, 0.7, 0.9]), write_history(sound, [0.5, 0.7, 0.9])]
    assert collect_runs([path, sound], history_paths=histories)["status"].tolist() == ["completed"] * 2
    edit(path, histories[0])
    runs = collect_runs([path, sound], history_paths=histories)
    assert runs["status"].tolist() == ["broken", "completed"]
    assert runs.loc[0, "note"] == reason and pd.isna(runs.loc[1, "note"])


def test_broken_runs_count_in_n_only_and_every_table_agrees(tmp_path):
    paths = [write_run(tmp_path, "step", seed, accuracy=0.9, iterations=1000) for seed in (0, 1)]
    paths += [write_run(tmp_path, "1cycle", seed, accuracy=0.91, iterations=400) for seed in (0, 1)]
    histories = [write_history(p, [0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.85, 0.87, 0.89, 0.9]) for p in paths[:2]]
    histories += [write_history(p, [0.6, 0.8, 0.9, 0.91]) for p in paths[2:]]
    histories[3].unlink()
    runs = collect_runs(paths, history_paths=histories)

    table = aggregate.summary_table(runs).set_index("group")
    assert table.loc["1cycle", ["n", "n_completed", "n_diverged", "n_broken"]].tolist() == [2, 1, 0, 1]
    assert table.loc["1cycle", "note"] == "broken, not counted: seed 1 (history.csv missing)"
    assert table.loc["1cycle", "accuracy_mean"] == pytest.approx(91.0)
    assert table.loc["step", "n_broken"] == 0 and pd.isna(table.loc["step", "note"])

    curves = {"step": [(s, history([0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.85, 0.87, 0.89, 0.9])) for s in (0, 1)],
              "1cycle": [(0, history([0.6, 0.8, 0.9, 0.91]))]}
    speed = speedup.time_to_accuracy_table(runs, curves, "step", "1cycle",
                                           broken={"1cycle": {1: "history.csv missing"}})
    assert speed["seed"].tolist() == [0, 1, "all"]  # the summary's n = 2 candidate seeds
    assert speed.loc[1, "note"] == "1cycle seed 1 broken, not counted: history.csv missing"
    assert math.isnan(speed.loc[1, "speedup"])
    # Seed 1 of 1cycle is broken, so the seeds differ: one target, the step seeds' mean 90 %.
    assert speed.loc[0, "note"] == "target = mean final accuracy of 2 step seed(s) (seeds differ)"
    assert speed.loc[2, "note"].startswith("reached by 1 of 1 1cycle seed(s)")
    assert speed.loc[2, "iterations"] == 300.0


def test_a_group_of_broken_runs_only_has_the_verdict_broken(tmp_path, published):
    path = write_run(tmp_path, "1cycle_12ep", 0, accuracy=0.99)
    runs = collect_runs([path], history_paths=[tmp_path / "absent.csv"])
    table = aggregate.summary_table(runs, published=published, mapping={"1cycle_12ep": MAPPING["1cycle_12ep"]})
    assert table.loc[0, ["n", "n_completed", "n_broken", "verdict"]].tolist() == [1, 0, 1, "broken"]
    assert math.isnan(table.loc[0, "accuracy_mean"])
    assert aggregate.summary_table(runs).loc[0, "verdict"] == "broken"


def test_paired_by_x_pairs_the_two_series_at_each_setting():
    # SC's limited-data rows: CLR and PC-LR at two training-set sizes, three seeds each.
    rows = []
    for size, clr, pc in ((1250, [78.0, 76.0, 80.0], [79.0, 78.0, 80.0]),
                          (10000, [80.0, 80.0, 77.0], [88.6, 88.5, 87.0])):
        for seed in range(3):
            rows += [{"experiment": "sc", "group": f"clr_{size}", "seed": seed, "status": "completed",
                      "final_accuracy": clr[seed], "size": size, "policy": "triangular"},
                     {"experiment": "sc", "group": f"pc_{size}", "seed": seed, "status": "completed",
                      "final_accuracy": pc[seed], "size": size, "policy": "multistep"}]
    table = aggregate.paired_by_x(pd.DataFrame(rows), "size", "policy", "triangular", "multistep")
    assert table["x"].tolist() == [1250, 10000] and table["n"].tolist() == [3, 3]
    # Means of the paired differences: (-1, -2, 0) and (-8.6, -8.5, -10).
    assert table["mean_diff"].tolist() == pytest.approx([-1.0, -9.0333], abs=1e-4)
    # The same one statement as the claims: paired t, one-sided 95 % bounds around the mean.
    assert (table["lower_bound_pp"] < table["mean_diff"]).all() and (table["upper_bound_pp"] > table["mean_diff"]).all()
    assert table["test"].str.startswith("paired t").all()


def test_the_papers_differences_come_from_the_published_rows():
    from onecycle.errors import ConfigError
    from onecycle.report.context import paper_differences, paper_setting

    published = load_published()
    pairs = {"sc_t1_cifar10_resnet56_clr_50k": "sc_t1_cifar10_resnet56_pc_50k",
             "sc_t1_cifar10_resnet56_clr_10k": "sc_t1_cifar10_resnet56_pc_10k"}
    table = paper_differences(published, pairs, "data.train_subset", "compare.paper")
    # SC Table 1 (docs/paper_reference.md A3): 80.6 - 71.4 at 10k, 92.4 - 91.2 at 50k, sorted by size.
    assert table["x"].tolist() == [10000, 50000]
    assert table["difference_pp"].tolist() == pytest.approx([9.2, 1.2])
    assert paper_setting(published, [*pairs, *pairs.values()], "compare.paper") == "CIFAR-10 / ResNet-56"
    with pytest.raises(ConfigError, match="compare.paper: 'no_such_row' is not a row"):
        paper_differences(published, {"no_such_row": "sc_t1_cifar10_resnet56_pc_50k"}, "data.train_subset",
                          "compare.paper")
    with pytest.raises(ConfigError, match="no setting for x 'optim.nesterov'"):
        paper_differences(published, pairs, "optim.nesterov", "compare.paper")
