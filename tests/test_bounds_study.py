"""Bounds studies (onecycle.experiments.bounds_study): config, expansion, per-rule bounds and the analysis.

Every expected number here is computed by hand in a comment; the end-to-end study on real data
is in test_bounds_study_dag.py.
"""

import math

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from onecycle.experiments.bounds_study import RULE_SIGNALS, BoundsStudyConfig
from onecycle.report import bounds_study
from onecycle.report.figures.bounds_study import plot_bounds_study, plot_range_test_settings
from onecycle.report.tables import write_table
from onecycle.bounds import SUGGESTION_RULES, combine_bounds
from onecycle.experiments.config import ConfigError, RunConfig, parse
from onecycle.experiments.loading import deep_merge
from onecycle.experiments.expansion import expand
from onecycle.training.range_test_job import bounds_record
from onecycle.training.schedule_setup import resolve_schedule_params

GRID = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]

STUDY = {
    "results_dir": "out",
    "seeds": [0, 1],
    "experiments": {
        "study": {
            "base": {"data": {"dataset": "digits"}, "model": {"arch": "lenet"},
                     "train": {"batch_size": 32}},
            "range_test": {"start_lr": 0.0, "end_lr": 0.3, "iterations": 50, "bounds_divisor": 4.0},
            "range_test_seeds": [0, 1, 2],
            "bounds_study": {
                "training": {"schedule": {"policy": "smith_1cycle", "params": {"stepsize": 10}},
                             "train": {"epochs": 2}},
                "max_lr_grid": GRID,
                "rules": ["smith_accuracy_peak", "fastai_valley"],
                "range_test_variants": {"exp_short": {"ramp": "exponential", "start_lr": 1.0e-4,
                                                      "iterations": 20}},
            },
        }
    },
}


def _study(patch):
    return deep_merge(STUDY, {"experiments": {"study": patch}})


# ------------------------------------------------------------------------------------ config

def test_study_expands_into_grid_and_rule_groups_and_variant_range_tests():
    plan = expand(STUDY)
    groups = sorted({job.group for job in plan.trains.values()})
    assert groups == sorted([f"lr_{v:g}" for v in GRID] + ["rule_smith_accuracy_peak", "rule_fastai_valley"])
    assert len(plan.trains) == (len(GRID) + 2) * 2  # 9 groups x 2 seeds
    grid = plan.trains["study/lr_0.2/seed1"]
    # base_lr = max_lr / the range test's bounds_divisor (4): 0.2 / 4 = 0.05.
    assert grid.config["schedule"]["params"] == {"stepsize": 10, "max_lr": 0.2, "base_lr": 0.05}
    assert not grid.needs_bounds
    rule = plan.trains["study/rule_fastai_valley/seed0"]
    assert rule.needs_bounds and rule.config["schedule"]["bounds_rule"] == "fastai_valley"
    assert rule.config["schedule"]["lr_bounds"] == "range_test"
    # 3 range-test seeds of the study's own test, 3 of the variant; only the own ones combine.
    assert sorted(plan.range_tests) == ["study/seed0", "study/seed1", "study/seed2",
                                        "study/settings/exp_short/seed0", "study/settings/exp_short/seed1",
                                        "study/settings/exp_short/seed2"]
    assert [j.job_id for j in plan.experiment_range_tests("study")] == ["study/seed0", "study/seed1", "study/seed2"]
    variant = plan.experiment_variant_tests("study")["exp_short"][2]
    assert str(variant.out_dir) == "out/range_test/study/settings/exp_short/seed2"
    # The variant keeps the study's end_lr and divisor, with its own ramp and length.
    assert variant.config["range_test"] == {"ramp": "exponential", "start_lr": 1.0e-4, "end_lr": 0.3,
                                            "iterations": 20, "bounds_divisor": 4.0}
    assert plan.bounds_studies() == ["study"]


def test_all_rules_by_default():
    plan = expand(deep_merge(STUDY, {}) | {"experiments": {"study": {
        **STUDY["experiments"]["study"],
        "bounds_study": {k: v for k, v in STUDY["experiments"]["study"]["bounds_study"].items() if k != "rules"}}}})
    rules = sorted(job.group for job in plan.trains.values() if job.group.startswith("rule_") and job.seed == 0)
    assert rules == sorted(f"rule_{r}" for r in SUGGESTION_RULES)


@pytest.mark.parametrize("patch, message", [
    ({"groups": {"extra": {}}}, "experiments.study: a bounds_study makes its own groups"),
    ({"range_test": None}, "experiments.study: bounds_study needs a range_test block"),
    ({"bounds_study": {"max_lr_grid": GRID[:6]}}, "experiments.study.bounds_study.max_lr_grid.*at least 7"),
    ({"bounds_study": {"max_lr_grid": [0.01, 0.02, 0.05, 0.04, 0.2, 0.5, 1.0]}}, "strictly ascending"),
    ({"bounds_study": {"max_lr_grid": [0.01, 0.012, 0.015, 0.02, 0.03, 0.05, 0.09]}}, "spans x9; it must span at least x100"),
    # Steps x2 six times, then x32: neighbours differ by x2 to x32.
    ({"bounds_study": {"max_lr_grid": [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 1.024]}}, "not log-spaced: .*x2 to x32"),
    ({"bounds_study": {"rules": ["fastai_valey"]}}, "unknown rule 'fastai_valey'"),
    ({"bounds_study": {"paper_max_lr": 0.1}}, "paper_max_lr needs paper_source"),
    ({"bounds_study": {"training": {"schedule": {"policy": "inv"}}}},
     "experiments.study: bounds_study.training.schedule.policy = 'inv': a study sets the LR bounds"),
    ({"bounds_study": {"range_test_variants": {"flat": {"start_lr": 0.3, "momentum_range": [0.9, 0.8]}}}},
     "range_test_variants.flat: a variant ramps the LR"),
    ({"bounds_study": {"range_test_variants": {"a b": {}}}}, "range_test_variants name 'a b'"),
    ({"range_test": {"end_lr": "0.3"}}, "experiments.study: range_test: 'end_lr' = '0.3'"),
])
def test_bad_study_config_is_one_line_naming_experiment_and_key(patch, message):
    with pytest.raises(ConfigError, match=message) as info:
        expand(_study(patch), "study.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("study.yaml: ")
    assert "experiments.study" in str(info.value)


def test_bounds_rule_needs_range_test_bounds():
    run = {"name": "r", "data": {"dataset": "digits"}, "model": {"arch": "lenet"}, "train": {"batch_size": 32, "epochs": 1},
           "schedule": {"policy": "smith_1cycle", "bounds_rule": "fastai_valley",
                        "params": {"base_lr": 0.01, "max_lr": 0.1, "stepsize": 10}}}
    with pytest.raises(ConfigError, match="schedule: bounds_rule 'fastai_valley' picks a range-test suggestion"):
        parse(RunConfig, run)
    with pytest.raises(ConfigError, match="unknown bounds_rule 'valley'"):
        parse(RunConfig, deep_merge(run, {"schedule": {"lr_bounds": "range_test", "bounds_rule": "valley"}}))


def test_rule_signals_cover_every_rule():
    assert set(RULE_SIGNALS) == set(SUGGESTION_RULES)


# ------------------------------------------------------------------------- per-rule bounds

def _seed_record(chosen, valley, peak):
    from onecycle.bounds import Suggestion

    suggestions = {"smith_accuracy_peak": Suggestion("smith_accuracy_peak", peak, None, ""),
                   "fastai_valley": Suggestion("fastai_valley", valley, valley, "")}
    return bounds_record(suggestions, chosen, "1cycle", 4.0)


def test_combined_bounds_keep_every_rules_per_seed_suggestions():
    records = [_seed_record("smith_accuracy_peak", 0.03, 0.2), _seed_record("smith_accuracy_peak", 0.01, None),
               _seed_record("smith_accuracy_peak", 0.02, 0.1)]
    combined = combine_bounds(records)
    valley, peak = combined["rules"]["fastai_valley"], combined["rules"]["smith_accuracy_peak"]
    assert valley["per_seed"] == [0.03, 0.01, 0.02] and peak["per_seed"] == [0.2, None, 0.1]
    # Medians: valley of (0.01, 0.02, 0.03) = 0.02; peak of (0.1, 0.2) = 0.15; base = max / 4.
    assert (valley["max_lr"], valley["base_lr"]) == pytest.approx((0.02, 0.005))
    assert (peak["max_lr"], peak["base_lr"], peak["n_seeds_with_bounds"]) == pytest.approx((0.15, 0.0375, 2))
    # The chosen rule's bounds are as before.
    assert (combined["max_lr"], combined["base_lr"]) == pytest.approx((0.15, 0.0375))


def test_a_run_trains_at_its_rules_median(tiny_run_config):
    cfg = parse(RunConfig, deep_merge(tiny_run_config, {"schedule": {"lr_bounds": "range_test",
                                                                     "bounds_rule": "fastai_valley"}}))
    combined = combine_bounds([_seed_record("smith_accuracy_peak", v, 0.2) for v in (0.03, 0.01, 0.02)])
    params = resolve_schedule_params(cfg, 8, combined)
    assert (params["base_lr"], params["max_lr"]) == pytest.approx((0.005, 0.02))
    with pytest.raises(ConfigError, match="bounds_rule 'fastai_valley': the bounds file has no per-rule bounds"):
        resolve_schedule_params(cfg, 8, {"base_lr": 0.01, "max_lr": 0.1, "chosen_rule": "x"})


# -------------------------------------------------------------------------------- analysis

def _runs(rows):
    """collect_runs-shaped frame from (group, seed, status, final accuracy %, max_lr)."""
    return pd.DataFrame([{"group": g, "seed": s, "status": st, "final_accuracy": acc, "max_lr": lr}
                         for g, s, st, acc, lr in rows])


def _study_config(**overrides):
    config = {"training": {"schedule": {"policy": "smith_1cycle"}}, "max_lr_grid": GRID,
              "rules": ["smith_accuracy_peak", "fastai_valley", "steepest_slope_lr"]}
    return BoundsStudyConfig.model_validate({**config, **overrides})


T95_2 = 2.919986  # t(0.95, 2), one-sided: three paired seeds
T975_2 = 4.302653  # t(0.975, 2), two-sided 95 %


def test_regret_table_by_hand():
    rows = []
    # Grid: 0.1 is the best point (mean 90.067); 1.0 diverged on one seed (scored at chance, 10).
    for lr, accs in {0.01: (80, 82, 81), 0.02: (84, 84, 85), 0.05: (88, 89, 88), 0.1: (90.0, 90.4, 89.8),
                     0.2: (89, 90, 89), 0.5: (85, 86, 85), 1.0: (70, None, 71)}.items():
        rows += [(f"lr_{lr:g}", s, "completed" if a is not None else "diverged", a if a is not None else 99.0, lr)
                 for s, a in enumerate(accs)]
    # Rules: peak at 0.15 scores 90.1, 90.2, 89.6: regret per seed -0.1, +0.2, +0.2 (mean 0.1, sd
    # 0.1732, se 0.1), bounds 0.1 -+ 2.92 * 0.1: [-0.19, +0.39] holds 0, within noise. Valley at
    # 0.03: 86.0, 86.5, 85.9, regret 4.0, 3.9, 3.9: below the best. Steepest has not run yet.
    rows += [("rule_smith_accuracy_peak", s, "completed", a, 0.15) for s, a in enumerate((90.1, 90.2, 89.6))]
    rows += [("rule_fastai_valley", s, "completed", a, 0.03) for s, a in enumerate((86.0, 86.5, 85.9))]
    scored = bounds_study.scored_runs(_runs(rows), chance_accuracy=10.0)
    # The diverged seed's recorded 99 (an earlier epoch) is replaced by chance.
    assert scored.loc[scored.status == "diverged", "score"].tolist() == [10.0]
    combined = {"rules": {"smith_accuracy_peak": {"per_seed": [0.1, 0.2, 0.15], "max_lr": 0.15},
                          "fastai_valley": {"per_seed": [0.03, None, 0.03], "max_lr": 0.03},
                          "steepest_slope_lr": {"per_seed": [0.01, 0.02, 0.03], "max_lr": 0.02}}}
    table = bounds_study.regret_table(scored, combined, _study_config()).set_index("rule")
    peak, valley, steep = (table.loc[r] for r in ("smith_accuracy_peak", "fastai_valley", "steepest_slope_lr"))
    assert (peak.grid_best_accuracy, peak.grid_best_max_lr) == (pytest.approx(90.0667, abs=1e-4), 0.1)
    # The grid's best with its own interval: sd of 90.0, 90.4, 89.8 is 0.3055, half 4.302653 * 0.3055 / sqrt 3.
    sd = math.sqrt(((90.0 - 90.0667) ** 2 + (90.4 - 90.0667) ** 2 + (89.8 - 90.0667) ** 2) / 2)
    half = T975_2 * sd / math.sqrt(3)
    assert (peak.grid_best_ci_low, peak.grid_best_ci_high) == pytest.approx((90.0667 - half, 90.0667 + half), abs=1e-4)
    assert peak.regret_pp == pytest.approx(0.1)
    assert (peak.regret_lower_pp, peak.regret_upper_pp) == pytest.approx((0.1 - T95_2 * 0.1, 0.1 + T95_2 * 0.1),
                                                                         abs=1e-5)
    assert peak.versus_best == "within noise" and peak.regret_test == "paired t, df 2" and peak["rank"] == 1
    # Suggestion mean 0.15, std of (0.1, 0.2, 0.15) = 0.05 (ddof 1).
    assert (peak.suggested_max_lr_mean, peak.suggested_max_lr_std) == pytest.approx((0.15, 0.05))
    assert peak.trained_max_lr == 0.15
    assert valley.regret_pp == pytest.approx(3.9333, abs=1e-4) and valley.versus_best == "below the best"
    # Peak beats valley beyond noise (4.1, 3.7, 3.7 pp): one rule above it, rank 2.
    assert valley["rank"] == 2 and valley.n_range_tests == 2 and valley.signal == "train loss"
    # Pending: no runs, no regret, no rank; its planned max_lr comes from the combined bounds.
    assert steep.n == 0 and math.isnan(steep.regret_pp) and pd.isna(steep["rank"]) and steep.trained_max_lr == 0.02
    grid = bounds_study.grid_scores(scored, GRID).set_index("max_lr")
    # 1.0: (70 + 10 + 71) / 3, one diverged.
    assert (grid.loc[1.0, "accuracy_mean"], grid.loc[1.0, "n_diverged"]) == (pytest.approx(151 / 3), 1)


def test_rules_within_noise_of_each_other_share_a_rank():
    rows = [(f"lr_{lr:g}", s, "completed", 90.0 if lr == 0.1 else 80.0, lr) for lr in GRID for s in range(3)]
    # Peak minus valley per seed: -0.1, +0.3, -0.1: bounds hold 0, a tie. Steepest diverged on
    # every seed (chance, 10 %): both beat it beyond noise, rank 3.
    rows += [("rule_smith_accuracy_peak", s, "completed", a, 0.2) for s, a in enumerate((88.0, 88.2, 87.9))]
    rows += [("rule_fastai_valley", s, "completed", a, 0.05) for s, a in enumerate((88.1, 87.9, 88.0))]
    rows += [("rule_steepest_slope_lr", s, "diverged", None, 2.0) for s in range(3)]
    table = bounds_study.regret_table(bounds_study.scored_runs(_runs(rows), 10.0), None, _study_config())
    # Tied ranks, then regret: peak 90 - (88.0, 88.2, 87.9) = 1.967, valley 2.0.
    assert table["rule"].tolist() == ["smith_accuracy_peak", "fastai_valley", "steepest_slope_lr"]
    assert table["rank"].tolist() == [1, 1, 3]
    # The diverged rule scores chance: regret 90 - 10 = 80 on every seed, no spread, no bound.
    assert table["regret_pp"].tolist() == pytest.approx([1.9667, 2.0, 80.0], abs=1e-4)
    assert table["n_diverged"].tolist() == [0, 0, 3] and table["versus_best"].tolist()[2] == "no bound"


def test_an_invalid_study_ranks_nothing():
    rows = [(f"lr_{lr:g}", s, "completed", 90.0 - abs(lr - 0.1) + s / 10, lr) for lr in GRID for s in range(3)]
    rows += [("rule_smith_accuracy_peak", s, "completed", 85.0 + s, 0.2) for s in range(3)]
    label = "invalid: range test never left chance"
    table = bounds_study.regret_table(bounds_study.scored_runs(_runs(rows), 10.0), None, _study_config(),
                                      validity=label)
    assert set(table["rank"]) == {label} and set(table["versus_best"]) == {label} and set(table["validity"]) == {label}
    # The page shows the reason once, in the caption: the cells say "invalid", no rank (narrow at 1280 px).
    display = bounds_study.regret_display(table).set_index("rule")
    assert display.loc["smith_accuracy_peak", ["versus the best", "rank"]].tolist() == ["invalid", "—"]
    assert display.loc["smith_accuracy_peak", "accuracy (%)"] == "86.00 ± 1.00"


def test_grid_coverage():
    assert bounds_study.grid_covers(GRID, [0.1])          # 0.01 <= 0.1 / 10 and 1.0 >= 0.1 * 10
    assert not bounds_study.grid_covers(GRID, [0.05, 0.1])  # 0.01 > 0.05 / 10
    assert not bounds_study.grid_covers(GRID, [])


def test_settings_table_by_hand():
    def seed(peak, valley):
        return {"smith_accuracy_peak": {"max_lr": peak}, "fastai_valley": {"max_lr": valley}}

    table = bounds_study.settings_table({"short": [seed(0.1, 0.01), seed(0.3, None)],
                                         "long": [seed(0.2, 0.04), seed(0.2, 0.02)]},
                                        ["smith_accuracy_peak", "fastai_valley"]).set_index("rule")
    # peak: short mean 0.2 (std 0.1414), long 0.2 (std 0) -> spread 1; valley: 0.01 vs 0.03 -> 3.
    assert table.loc["smith_accuracy_peak", "short_mean"] == pytest.approx(0.2)
    assert table.loc["smith_accuracy_peak", "short_std"] == pytest.approx(math.sqrt(0.02))
    assert table.loc["smith_accuracy_peak", "spread_factor"] == pytest.approx(1.0)
    assert table.loc["fastai_valley", "spread_factor"] == pytest.approx(3.0)
    assert math.isnan(table.loc["fastai_valley", "short_std"])  # one seed gave one


def test_suite_summary_by_hand():
    a = pd.DataFrame({"rule": ["fastai_valley", "smith_accuracy_peak"], "regret_pp": [0.2, 1.0],
                      "versus_best": ["within noise", "below the best"], "n_diverged": [0, 1]})
    b = pd.DataFrame({"rule": ["smith_accuracy_peak", "fastai_valley"], "regret_pp": [-0.3, 2.0],
                      "versus_best": ["above the best", "below the best"], "n_diverged": [0, 2]})
    table = bounds_study.suite_summary({"a": a, "b": b}).set_index("rule")
    # peak: (1.0 - 0.3) / 2 = 0.35, at or above the best in b only; valley: 1.1, within noise in a.
    assert table.index.tolist() == ["smith_accuracy_peak", "fastai_valley"]
    assert table.loc["smith_accuracy_peak", ["mean_regret_pp", "n_within_noise", "n_diverged"]].tolist() \
        == pytest.approx([0.35, 1, 1])
    assert table.loc["fastai_valley", ["mean_regret_pp", "n_within_noise", "n_diverged", "regret_pp_b"]].tolist() \
        == pytest.approx([1.1, 1, 2, 2.0])


def test_the_committed_summary_leaves_the_invalid_resnet_study_out(tmp_path):
    import shutil

    import yaml

    from onecycle import cli
    from onecycle.experiments.loading import load_mapping

    results = tmp_path / "bounds_study"
    shutil.copytree(REPO / "results" / "bounds_study" / "tables", results / "tables")
    config = load_mapping(REPO / "configs" / "bounds_study.yaml")
    config["results_dir"] = str(results)
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["report", "--config", str(tmp_path / "b.yaml"), "--only", "bounds-summary"]) == 0
    summary = pd.read_csv(results / "tables" / "bounds_study_summary.csv")
    # ResNet-20's range test never left chance (results/bounds_study/range_test): its regrets
    # are no evidence, so the mean is over LeNet's study alone.
    assert set(summary["n_studies"]) == {1} and "regret_pp_fmnist_resnet20_bounds" not in summary.columns
    caption = (results / "tables" / "bounds_study_summary.md").read_text().split("\n\n")[0]
    assert "Left out, invalid: range test never left chance: fmnist_resnet20_bounds" in caption


def test_learning_rates_keep_three_significant_digits_in_tables(tmp_path):
    frame = pd.DataFrame({"max_lr": [0.0231, 0.5], "accuracy_mean": [88.123, 90.0], "accuracy_std": [0.31, 0.2]})
    write_table(frame, tmp_path / "t", formats={"max_lr": ".3g"})
    markdown = (tmp_path / "t.md").read_text()
    assert "| 0.0231 | 88.12 ± 0.31 |" in markdown and "| 0.5 | 90.00 ± 0.20 |" in markdown
    assert pd.read_csv(tmp_path / "t.csv")["max_lr"].tolist() == [0.0231, 0.5]  # raw in the CSV


def test_figures_are_written_with_partial_and_empty_results(tmp_path):
    rows = [(f"lr_{lr:g}", s, "completed", 80 + 10 * np.exp(-np.log(lr / 0.1) ** 2) + s, lr)
            for lr in GRID for s in (0, 1)]
    rows.append(("lr_1", 2, "diverged", None, 1.0))
    scored = bounds_study.scored_runs(_runs(rows), 10.0)
    rules = {"smith_accuracy_peak": {"max_lr": 0.15, "accuracy_mean": 89.0, "accuracy_std": 0.5,
                                     "suggestions": [0.1, 0.2, None]},
             "fastai_valley": {"max_lr": None, "accuracy_mean": math.nan, "accuracy_std": math.nan,
                               "suggestions": []}}
    for name, frame in (("full", scored), ("empty", scored.iloc[0:0])):
        paths = plot_bounds_study(frame, bounds_study.grid_scores(frame, GRID), rules, tmp_path / name,
                                  "study", best_interval=(88.0, 91.0), paper=(0.1, "Part 1"))
        assert [p.read_bytes()[:4] for p in paths] == [b"\x89PNG", b"%PDF"]
    rules = ["smith_accuracy_peak", "fastai_valley"]
    values = bounds_study.setting_values({"a": [{"smith_accuracy_peak": {"max_lr": 0.1}}], "b": []}, rules)
    assert values == {"a": {"smith_accuracy_peak": [0.1], "fastai_valley": []},
                      "b": {"smith_accuracy_peak": [], "fastai_valley": []}}
    for name, given in (("settings", values), ("no_settings", {"b": values["b"]})):
        paths = plot_range_test_settings(given, rules, tmp_path / name, "settings")
        assert [p.read_bytes()[:4] for p in paths] == [b"\x89PNG", b"%PDF"]


def test_figures_take_equal_seeds_whose_mean_rounds_outside_them(tmp_path):
    # (0.7 + 0.7 + 0.7) / 3 is one ulp below 0.7 in float64: the error bars from the mean to the
    # lowest and highest seed would be -1e-16 and +1e-16, which matplotlib refuses.
    seeds = np.array([0.7, 0.7, 0.7])
    assert seeds.mean() < seeds.min()
    rules = ["fastai_valley"]
    paths = plot_range_test_settings({"a": {"fastai_valley": list(seeds)}}, rules, tmp_path / "s", "settings")
    assert [p.read_bytes()[:4] for p in paths] == [b"\x89PNG", b"%PDF"]
    scored = bounds_study.scored_runs(_runs([(f"lr_{lr:g}", 0, "completed", 85.0, lr) for lr in GRID]), 10.0)
    rule = {"fastai_valley": {"max_lr": float(seeds.mean()), "accuracy_mean": 85.0, "accuracy_std": 0.1,
                              "suggestions": list(seeds)}}
    paths = plot_bounds_study(scored, bounds_study.grid_scores(scored, GRID), rule, tmp_path / "r", "study")
    assert [p.read_bytes()[:4] for p in paths] == [b"\x89PNG", b"%PDF"]
