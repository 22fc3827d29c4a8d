"""Tables and figures of one experiment, from the result files that exist now.

Called by the workflow's report rule and by `onecycle report` (`make figures`), which rebuilds
every table and figure from stored results without training anything. Missing runs show as
pending; diverged runs as diverged; nothing here crashes on partial results. The files each
writer produces are named in onecycle.report.outputs (the Snakefile declares them); the accuracy,
range-test and comparison figures are drawn by onecycle.report.build_figures, the bounds studies' here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from onecycle import io
from onecycle.report import bounds_study
from onecycle.report import aggregate, claims, describe, scorecard, speedup, stats, validity
from onecycle.experiments.bounds_study import BoundsStudyConfig
from onecycle.experiments.config import RangeTestSpec
from onecycle.data import DATASETS
from onecycle.experiments.expansion import Job, Plan
from onecycle.report.figures.bounds_study import plot_bounds_study, plot_range_test_settings
from onecycle.report.outputs import (bounds_study_outputs, bounds_summary_outputs, claims_outputs, run_outputs,
                                     suite_outputs)
from onecycle.report.published import load_published
from onecycle.report.evidence import (DIVERGED, FRESH, TrainRuns, experiment_runs, not_counted_text,
                                      range_test_evidence, read_bounds)
from onecycle.report.evidence import histories as evidence_histories
from onecycle.report.runs import BROKEN
from onecycle.report.tables import rounded_for_csv, write_table
from onecycle.training.schedule_setup import LR_BOUND_PARAMS

# Learning rates span decades: three significant digits, not two decimals.
LR_FORMAT = ".3g"


def _caption(plan: Plan, experiment: str) -> str:
    exp = plan.workflow.experiments[experiment]
    return f"{experiment}: {exp.replicates or exp.description}"


def _metrics(job: Job) -> dict[str, Any]:
    return io.read_json(job.out_dir / "metrics.json")


def group_labels(plan: Plan, experiment: str, sound: list[Job] | None = None) -> dict[str, str]:
    """Group -> what it ran, with the LR bounds it used (onecycle.report.describe), from the first
    sound run of each group (evidence.experiment_runs: of the planned config); groups with none
    yet are left out."""
    labels: dict[str, str] = {}
    for job in experiment_runs(plan, experiment).sound if sound is None else sound:
        if job.group not in labels:
            labels[job.group] = describe.schedule_label(_metrics(job)["config"])
    return labels


def experiment_validity(plan: Plan, experiment: str) -> validity.Validity:
    """The experiment's validity gates (onecycle.report.validity), from its finished runs."""
    found = experiment_runs(plan, experiment)
    return validity.check_experiment(plan, experiment, found.runs, evidence_histories(found.sound))


def write_experiment_report(plan: Plan, experiment: str) -> list[Path]:
    """The validity gates, the verdict table (with published numbers and verdicts), time to
    accuracy and the paired comparison."""
    exp = plan.workflow.experiments[experiment]
    outputs = run_outputs(plan, experiment)
    found = experiment_runs(plan, experiment)
    runs, sound = found.runs, found.sound
    # Only runs that are not broken; the broken ones are named in the tables' notes instead.
    histories = evidence_histories(sound)
    checked = validity.check_experiment(plan, experiment, runs, histories)
    validity.write_validity(outputs["validity"], checked)
    _write_summary(plan, experiment, runs, checked.label, group_labels(plan, experiment, sound), found)
    broken: dict[str, dict[int, str]] = {}
    for _, run in runs[runs["status"] == BROKEN].iterrows():
        broken.setdefault(run["group"], {})[run["seed"]] = run["note"]
    if exp.candidate and exp.baseline:
        speed = speedup.time_to_accuracy_table(runs, histories, exp.baseline, exp.candidate,
                                               speedup.table_margin_pp(exp), broken=broken)
        # 1cycle minus baseline: each seed's difference and the claims' t bound on the mean.
        paired = pd.DataFrame([aggregate.paired_comparison(runs, exp.candidate, exp.baseline, experiment,
                                                           plan.workflow.claims_confidence)])
    else:
        speed = paired = pd.DataFrame({"note": ["no baseline/candidate pair configured for this experiment"]})
    io.write_csv(outputs["time_to_accuracy"], rounded_for_csv(speed))
    io.write_csv(outputs["paired"], rounded_for_csv(paired))
    return list(outputs.values())


def _write_summary(plan: Plan, experiment: str, runs: pd.DataFrame, label: str | None,
                   labels: dict[str, str], found: TrainRuns) -> None:
    """The verdict table. An invalid or tiny experiment's groups get its `label` where they would
    get a verdict (pending, diverged and broken groups keep saying so); an experiment that states
    its departures from the paper says "... at this scale" after a verdict, or that the paper's
    number is context where its data differ (aggregate.verdicts_as_shown). Stale runs (`found`,
    onecycle.report.evidence) are named in the notes, and the caption counts what is not counted."""
    exp = plan.workflow.experiments[experiment]
    table = aggregate.summary_table(runs, published=load_published() if exp.published else None,
                                    mapping=exp.published,
                                    expected_groups=[(experiment, group) for group in exp.training_groups()],
                                    tolerance_pp=plan.workflow.tolerance_pp, schedules=labels, stale=found.stale())
    unmapped = table["verdict"] == aggregate.NO_PAPER_VERDICT
    decided = table["verdict"].isin(["replicated", "not replicated"])
    table["verdict"] = aggregate.verdicts_as_shown(table["verdict"], label, exp.departures)
    caption = (f"{_caption(plan, experiment)}. Final test accuracy (%) on the full test set, mean ± std over the n "
               f"completed seeds ('1 of 2': the other diverged). Below {stats.MIN_VALUES_FOR_CI} seeds the seeds' own "
               f"accuracies, from {stats.MIN_VALUES_FOR_CI} on a two-sided 95% t interval of the mean: column "
               f"'{aggregate.SPREAD_HEADER}' of the CSV, Markdown and HTML tables.")
    if unmapped.any() and not label:
        caption += (f" Verdict '{aggregate.NO_VERDICT_CELL}': no published number for the group, so no verdict "
                    "against the paper" + ("" if table["paper_id"].notna().any() else
                                           " (no group has one: the paper's columns are left out)") + ".")
    if "data" in exp.departures and decided.any() and not label:
        caption += (f" '{aggregate.CONTEXT_VERDICT}': the published numbers are of other data, beside ours as "
                    "context, never a target (docs/design.md §10c).")
    elif decided.any() and not label:
        caption += (f" Replicated: within the config's tolerance_pp, {plan.workflow.tolerance_pp:g} pp, plus the "
                    "spreads (docs/design.md).")
    caption += not_counted_text(plan, found.evidence)
    write_table(table, run_outputs(plan, experiment)["table_csv"].with_suffix(""), caption=caption,
                display=aggregate.summary_display(table), latex_columns=aggregate.SUMMARY_LATEX_COLUMNS)


def _seed_suggestions(plan: Plan, jobs: list[Job]) -> list[dict]:
    """The `suggestions` block of each sound range test's bounds.json (of the planned config)."""
    return [read_bounds(item.job.out_dir / "bounds.json")["suggestions"] for item in range_test_evidence(plan, jobs)
            if item.state in (FRESH, DIVERGED)]


def _range_test_setting(job) -> str:
    spec = RangeTestSpec.model_validate(job.config["range_test"])
    data, batch = job.config["data"], job.config["train"]["batch_size"]
    images = data.get("train_subset") or DATASETS[data["dataset"]].train_size
    epochs = float(f"{spec.iterations / (images // batch):.3g}")
    return (f"{spec.ramp} {spec.start_lr:g} -> {spec.end_lr:g} over {spec.iterations} iterations "
            f"({epochs:g} epoch{'' if epochs == 1 else 's'}), evaluated every {spec.eval_every} on "
            f"{spec.eval_subset} test images")


def write_bounds_study_report(plan: Plan, experiment: str) -> list[Path]:
    """A bounds study's regret table and figure, and its range-test settings table and figure
    (onecycle.experiments.bounds_study), from the runs and range tests that have finished."""
    exp = plan.workflow.experiments[experiment]
    study = exp.bounds_study
    outputs = bounds_study_outputs(plan, experiment)
    if not outputs:
        return []
    _write_regret(plan, experiment, study, outputs)
    _write_range_test_settings(plan, experiment, study, outputs)
    return list(outputs.values())


def _write_regret(plan: Plan, experiment: str, study: BoundsStudyConfig, outputs: dict[str, Path]) -> None:
    """The regret table (every rule scored against the max_lr grid) and its figure."""
    trains = plan.experiment_trains(experiment)
    high_key = LR_BOUND_PARAMS[study.training["schedule"]["policy"]][1]
    found = experiment_runs(plan, experiment, settings={"max_lr": f"schedule_resolved.params.{high_key}"})
    runs = found.runs
    # A broken run (onecycle.report.runs.run_problem) is neither a score nor a divergence; its
    # experiment's verdict table names it.
    runs = runs[runs["status"] != BROKEN]
    chance = 100.0 / DATASETS[trains[0].dataset].num_classes
    scored = bounds_study.scored_runs(runs, chance)
    combined = read_bounds(plan.bounds_path(experiment))
    checked = experiment_validity(plan, experiment)
    table = bounds_study.regret_table(scored, combined, study, plan.workflow.claims_confidence, checked.label)
    per_rule = (combined or {}).get("rules", {})
    seeds = [s for rule in study.rules for s in per_rule.get(rule, {}).get("per_seed", []) if s is not None]
    covers = "yes" if bounds_study.grid_covers(study.max_lr_grid, seeds) else "NO"
    caption = (f"{experiment}: every range-test rule scored by the final test accuracy of a short training "
               f"at its suggestion (median over {len(plan.experiment_range_tests(experiment))} range-test "
               f"seeds), against a grid of {len(study.max_lr_grid)} max_lr values "
               f"({study.max_lr_grid[0]:g}-{study.max_lr_grid[-1]:g}; covers a tenth of the lowest to ten "
               f"times the highest per-seed suggestion: {covers}). Accuracy: mean ± std over training seeds and a "
               f"two-sided 95% t interval of the mean, a diverged run scored at chance ({chance:g}%). regret_pp = "
               f"grid's best mean - the rule's, with one-sided {plan.workflow.claims_confidence:.0%} bounds from a "
               f"paired t over the training seeds; versus_best: 'within noise' unless the bounds exclude 0; rank: 1 + "
               f"the rules better beyond noise, so rules within noise share a rank. The grid's best is the highest of "
               f"noisy means: regrets lean high by its selection.")
    if checked.label:
        caption += f" No ranking: {checked.label}."
    grid = bounds_study.grid_scores(scored, study.max_lr_grid)
    planned = len(study.max_lr_grid) * len(plan.workflow.seeds)
    if (done := int(grid["n"].sum())) < planned:
        # A partial grid's best is at most the whole grid's: its regrets are lower bounds.
        caption += (f" PARTIAL GRID: {done} of {planned} grid runs finished ({int((grid['n'] > 0).sum())} of "
                    f"{len(grid)} points), so grid_best is that of the finished points and every regret a "
                    f"lower bound.")
    if len(table) and not pd.isna(table["grid_best_accuracy"].iloc[0]):
        best = table.iloc[0]
        caption += (f" Grid's best: {best['grid_best_accuracy']:.2f} % at max_lr {best['grid_best_max_lr']:g}, 95% t "
                    f"interval [{best['grid_best_ci_low']:.2f}, {best['grid_best_ci_high']:.2f}].")
    caption += not_counted_text(plan, found.evidence)
    write_table(table, outputs["regret_csv"].with_suffix(""), caption=caption,
                display=bounds_study.regret_display(table))
    rules = {row.rule: {"max_lr": row.trained_max_lr, "accuracy_mean": row.accuracy_mean,
                        "accuracy_std": row.accuracy_std,
                        "suggestions": per_rule.get(row.rule, {}).get("per_seed", [])}
             for row in table.itertuples()}
    paper = (study.paper_max_lr, study.paper_source) if study.paper_max_lr is not None else None
    best_interval = ((table["grid_best_ci_low"].iloc[0], table["grid_best_ci_high"].iloc[0]) if len(table)
                     else None)
    plot_bounds_study(scored, grid, rules,
                      outputs["regret_figure_png"].with_suffix(""),
                      title=f"{experiment}: which max_lr trains best? The grid and each range-test rule's "
                            "suggestion, final test accuracy"
                            + (" (INVALID: no ranking)" if checked.label else ""),
                      best_interval=best_interval, paper=paper)


def _write_range_test_settings(plan: Plan, experiment: str, study: BoundsStudyConfig,
                               outputs: dict[str, Path]) -> None:
    """Each rule's suggested max_lr under each range-test setting: the table and its figure."""
    main_jobs = plan.experiment_range_tests(experiment)
    settings = {study.range_test_name: main_jobs, **plan.experiment_variant_tests(experiment)}
    described = "; ".join(f"{name}: {_range_test_setting(jobs[0])}" for name, jobs in settings.items())
    suggestions = {name: _seed_suggestions(plan, jobs) for name, jobs in settings.items()}
    settings_frame = bounds_study.settings_table(suggestions, study.rules)
    write_table(settings_frame, outputs["range_test_settings_csv"].with_suffix(""),
                caption=(f"{experiment}: each rule's suggested max_lr (mean ± std over range-test "
                         f"seeds) under each range-test setting; signal = what the rule reads; "
                         f"spread_factor = largest / smallest setting mean. Settings: {described}."),
                formats={f"{name}_mean": LR_FORMAT for name in settings})
    plot_range_test_settings(bounds_study.setting_values(suggestions, study.rules), study.rules,
                             outputs["range_test_settings_figure_png"].with_suffix(""),
                             title=f"{experiment}: how the range test's own settings move each rule's max_lr")


def write_bounds_summary(plan: Plan) -> list[Path]:
    """The suite-level summary over every bounds study of the config whose regret table exists."""
    outputs = bounds_summary_outputs(plan)
    if not outputs:
        return []
    regrets, left_out = {}, {}
    for experiment in plan.bounds_studies():
        path = bounds_study_outputs(plan, experiment)["regret_csv"]
        if path.exists():
            regret = pd.read_csv(path, keep_default_na=False, na_values=[""])
            valid = regret.get("validity", pd.Series(dtype=object)).dropna()
            label = valid.iloc[0] if len(valid) else None
            if label:
                left_out[experiment] = label
            else:
                regrets[experiment] = regret
    table = bounds_study.suite_summary(regrets)
    invalid = "".join(f" Left out, {label}: {name}." for name, label in left_out.items())
    write_table(table, outputs["summary_csv"].with_suffix(""),
                caption=(f"Bounds studies ({', '.join(regrets) or 'none valid and finished yet'}): per rule, mean "
                         f"regret (pp below the grid's best) over the valid studies, and in how many it stood within "
                         f"noise of the grid's best (or above it).{invalid}"))
    return list(outputs.values())


def write_claims_table(plan: Plan, experiment: str) -> list[Path]:
    """Each claim's verdict from the runs that exist now, and the one the published numbers give."""
    outputs = claims_outputs(plan, experiment)
    if not outputs:
        return []
    exp = plan.workflow.experiments[experiment]
    found = experiment_runs(plan, experiment)
    histories = evidence_histories(found.sound)
    checked = validity.check_experiment(plan, experiment, found.runs, histories)
    table = claims.claims_table(exp, found.runs, histories, plan.workflow.seeds,
                                published=load_published() if exp.published else None,
                                confidence=plan.workflow.claims_confidence, validity=checked.label,
                                stale=found.stale())
    texts = "".join(f"\n- {row.claim_id}: {row.text} ({row.source})" for row in table.itertuples())
    scale = "".join(f"\n- {aspect}: {text}" for aspect, text in exp.departures.items())
    write_table(table, outputs["claims_csv"].with_suffix(""), display_columns=claims.DISPLAY_COLUMNS,
                caption=f"Claims of {_caption(plan, experiment)}:{texts}"
                        + (f"\nAt this scale, departing from the paper in:{scale}" if scale else ""))
    return list(outputs.values())


def write_scorecard(plan: Plan) -> list[Path]:
    """The suite's claim x dataset/architecture scorecard, from every experiment's claims table."""
    if not suite_outputs(plan):
        return []
    tables = {name: claims_outputs(plan, name)["claims_csv"] for name, exp in plan.workflow.experiments.items()
              if exp.claims}
    return scorecard.write_scorecard(plan, tables)
