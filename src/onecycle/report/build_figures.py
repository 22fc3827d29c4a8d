"""The figures of one experiment, from the result files that exist now: accuracy against iteration,
the range test, and final accuracy against the setting the experiment varies.

Each figure answers one question, in the papers' words (onecycle.report.describe names the
policies: CLR, PC-LR, 1cycle): the accuracy figure the one the experiment's candidate and
baseline pose (SC Fig 1a: CLR against PC-LR at one data size), the comparison figure Part 1
Table 2's or SC Table 1's (accuracy, or CLR - PC-LR, against the budget or the data size), the
range test where the LRs training used sit on it. Called by `onecycle report`, beside the
tables of onecycle.report.build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from onecycle import io
from onecycle.report import aggregate, describe
from onecycle.report.build import _caption, experiment_validity, group_labels
from onecycle.report.evidence import DIVERGED, FRESH, experiment_runs, range_test_evidence, read_bounds
from onecycle.report.outputs import accuracy_outputs, comparison_outputs, range_test_outputs
from onecycle.report.context import paper_differences, paper_setting
from onecycle.report.figures.accuracy import RunCurve, plot_accuracy_curves, undrawable_groups
from onecycle.report.figures.comparison import AXIS_LABELS, plot_comparison, plot_difference
from onecycle.report.figures.range_test import RangeSeed, plot_range_test
from onecycle.report.published import load_published
from onecycle.report.scorecard import pair_label
from onecycle.report.runs import BROKEN


def group_policies(plan, experiment: str) -> dict[str, str]:
    """Group -> the papers' name of the policy it trained with (describe.policy_name), from the
    experiment's planned jobs (pending groups included)."""
    return {job.group: describe.policy_name(job.config["schedule"]["policy"])
            for job in plan.experiment_trains(experiment)}


def shown_groups(plan, experiment: str) -> list[str]:
    """The groups the accuracy figure draws: those of its `accuracy_panels` (CLR Fig 1's pairs),
    else the candidate and the baseline where the experiment names them (the comparison its
    claims and its time to accuracy make), else every group."""
    exp = plan.workflow.experiments[experiment]
    if exp.accuracy_panels:
        return list(dict.fromkeys(group for panel in exp.accuracy_panels for group in panel))
    return [exp.candidate, exp.baseline] if exp.candidate and exp.baseline else exp.training_groups()


def _metrics(jobs) -> list[tuple[Any, dict[str, Any]]]:
    """(job, its metrics.json) of each job (sound ones: fresh or diverged, of the planned config)."""
    return [(job, io.read_json(job.out_dir / "metrics.json")) for job in jobs]


def accuracy_curves(plan, experiment: str) -> tuple[dict[str, list[RunCurve]], dict[str, pd.DataFrame]]:
    """The shown groups' sound seeds (group -> RunCurve: fresh or diverged runs of the planned
    config, onecycle.report.evidence) and each group's configured schedule."""
    sound = experiment_runs(plan, experiment).sound
    curves: dict[str, list[RunCurve]] = {}
    traces: dict[str, pd.DataFrame] = {}
    groups = shown_groups(plan, experiment)
    for job, metrics in _metrics([job for job in sound if job.group in groups]):
        history = job.out_dir / "history.csv"
        frame = pd.read_csv(history) if history.exists() else pd.DataFrame(columns=["iteration", "test_accuracy"])
        curves.setdefault(job.group, []).append(RunCurve(job.seed, frame, metrics.get("diverged")))
        # The schedule as configured, over the planned run: a diverged seed's own log ends early.
        traces.setdefault(job.group, describe.schedule_trace(metrics["config"]))
    order = [g for g in groups if g in curves]
    return {g: curves[g] for g in order}, {g: traces[g] for g in order}


def write_accuracy_figure(plan, experiment: str) -> list[Path]:
    """Test accuracy against iteration of the shown groups (mean and band over seeds), with the
    configured LR (and momentum, where it varies) beneath."""
    outputs = accuracy_outputs(plan, experiment)
    if not outputs:
        return []
    curves, traces = accuracy_curves(plan, experiment)
    epochs = {job.group: job.config["train"]["epochs"] for job in plan.experiment_trains(experiment)}
    legend = {group: f"{label}, {epochs[group]} epochs ({group})"
              for group, label in group_labels(plan, experiment).items()}
    policies = group_policies(plan, experiment)
    panels = plan.workflow.experiments[experiment].accuracy_panels or None
    # With panels, each panel's title names its groups (CLR Fig 1's pairs).
    compared = (f"{len(panels)} comparisons, one per panel" if panels else
                " vs ".join(f"{policies[g]} ({g})" for g in shown_groups(plan, experiment)))
    title = f"{experiment}: {compared}, test accuracy against iteration"
    if curves and len(undrawable_groups(curves)) == len(curves):
        title = (f"{experiment}: {compared}, no test accuracy (every seed diverged before its first evaluation): "
                 "where on its LR schedule each seed stopped")
    plot_accuracy_curves(curves, traces, outputs["accuracy_png"].with_suffix(""), title=title, labels=legend,
                         policies=policies, panels=panels)
    return list(outputs.values())


def no_accuracy_groups(plan, experiment: str) -> list[str]:
    """The shown groups that have finished seeds but no test accuracy to draw (the report's sentence)."""
    if not accuracy_outputs(plan, experiment):
        return []
    return undrawable_groups(accuracy_curves(plan, experiment)[0])


def trained_lrs(plan, experiment: str) -> list[dict[str, Any]] | None:
    """The LRs the experiment's training schedules used, for the range-test figure: one entry per
    schedule (its describe label) with its (low, high) LR and policy; None for a bounds study (its
    dozen grid points would hide the curves: its bounds.json's are drawn instead) or where
    training takes its bounds from this range test (bounds.json says how they were chosen)."""
    exp = plan.workflow.experiments[experiment]
    if exp.bounds_study is not None:
        return None
    entries: dict[str, dict[str, Any]] = {}
    for job, metrics in _metrics(experiment_runs(plan, experiment).sound):
        if metrics["config"].get("schedule", {}).get("lr_bounds") == "range_test":
            return None
        low, high = describe.lr_range(metrics["config"])
        label = describe.schedule_label(metrics["config"])
        if high is not None:
            entries.setdefault(label, {"label": f"{label}, set in the config", "low": low, "high": high,
                                       "policy": describe.policy_name(metrics["config"]["schedule"]["policy"])})
    return list(entries.values()) or None


def write_range_test_figure(plan, experiment: str) -> list[Path]:
    """Range-test curves of every seed with the LRs training used and each rule's suggestion per seed."""
    outputs = range_test_outputs(plan, experiment)
    if not outputs:
        return []
    jobs = plan.experiment_range_tests(experiment)
    seeds = []
    # Range tests of the planned config whose files read (evidence.range_test_evidence); the stale
    # and broken ones the report page names.
    for item in range_test_evidence(plan, jobs):
        if item.state in (FRESH, DIVERGED):
            suggestions = read_bounds(item.job.out_dir / "bounds.json")["suggestions"]
            seeds.append(RangeSeed(item.job.seed, pd.read_csv(item.job.out_dir / "history.csv"),
                                   item.metrics.get("diverged"), suggestions))
    bounds = read_bounds(plan.bounds_path(experiment))
    spec = jobs[0].config["range_test"]
    momentum_test = spec["start_lr"] == spec["end_lr"]  # Part 1 Fig 7b: LR held, momentum ramped
    # The LR axis as the LR was ramped: Smith's linear ramp on a linear axis, an exponential
    # (fastai, torch-lr-finder) one on a log axis.
    x_scale = "log" if spec.get("ramp") == "exponential" and not momentum_test else "linear"
    invalid = experiment_validity(plan, experiment).label
    plot_range_test(seeds, bounds, outputs["range_test_png"].with_suffix(""),
                    title=f"{'Momentum' if momentum_test else 'LR'} range test: {_caption(plan, experiment)}"
                          + (f" ({invalid.upper()})" if invalid else ""),
                    x="momentum" if momentum_test else "lr", x_scale=x_scale,
                    trained=None if momentum_test else trained_lrs(plan, experiment))
    return list(outputs.values())


def write_comparison_figure(plan, experiment: str) -> list[Path]:
    """Final accuracy against the setting the experiment varies (weight decay, momentum, epochs,
    training-set size...), each series' mean with its interval and every seed, as in Part 1's and
    SC's comparisons; with `compare.difference`, the candidate minus the baseline at each setting
    beside the paper's (`compare.paper`)."""
    outputs = comparison_outputs(plan, experiment)
    if not outputs:
        return []
    exp = plan.workflow.experiments[experiment]
    compare = exp.compare
    # Columns named by their config paths; "group" is a column of every run already.
    settings = {path: path for path in (compare.x, compare.hue) if path not in (None, "group")}
    found = experiment_runs(plan, experiment, settings)
    runs = found.runs[found.runs["status"] != BROKEN]  # a broken run stays in the tables, with its reason
    stem = outputs["comparison_png"].with_suffix("")
    # Each series (or, on a group axis, each group) in its policy's colour and marker.
    names = ({str(job.config["schedule"]["policy"]): describe.policy_name(job.config["schedule"]["policy"])
              for job in plan.experiment_trains(experiment)} if compare.hue == "schedule.policy"
             else group_policies(plan, experiment) if compare.x == "group" and compare.hue is None else {})
    if compare.difference:
        _write_difference(plan, experiment, runs, stem)
        return list(outputs.values())
    labels = ({group: f"{group}\n{label}" for group, label in group_labels(plan, experiment).items()}
              if compare.x == "group" else None)
    per = {"schedule.policy": ", per policy", None: ""}.get(compare.hue, f", per {compare.hue}")
    against = f"against the {AXIS_LABELS[compare.x]}" if AXIS_LABELS.get(compare.x) else f"per {compare.x}"
    plot_comparison(runs, compare.x, stem, title=f"Final test accuracy {against}{per}: {experiment}",
                    hue=compare.hue, labels=labels, names=names)
    return list(outputs.values())


def _write_difference(plan, experiment: str, runs: pd.DataFrame, stem: Path) -> list[Path]:
    """The candidate's series minus the baseline's at each setting, and the paper's pairs."""
    exp = plan.workflow.experiments[experiment]
    compare = exp.compare
    policies = group_policies(plan, experiment)
    hue_of = {job.group: job.config for job in plan.experiment_trains(experiment)}
    candidate, baseline = (_setting(hue_of[g], compare.hue) for g in (exp.candidate, exp.baseline))
    ours = aggregate.paired_by_x(runs, compare.x, compare.hue, candidate, baseline, plan.workflow.claims_confidence)
    paper = (paper_differences(load_published(), compare.paper, compare.x, f"experiment {experiment!r}: compare.paper")
             if compare.paper else None)
    margins = {c.margin_pp for c in exp.claims if c.kind == "non_inferior"}
    names = (policies[exp.candidate], policies[exp.baseline])
    beside = f" beside {_paper_name(exp)}" if compare.paper else ""
    return plot_difference(ours, paper, compare.x, stem,
                           title=f"{names[0]} - {names[1]} against the {AXIS_LABELS.get(compare.x) or compare.x}: "
                                 f"{experiment} ({pair_label(plan, experiment)}){beside}",
                           candidate=names[0], baseline=names[1], paper_name=_paper_name(exp),
                           margin_pp=margins.pop() if len(margins) == 1 else None)


def _setting(config: dict[str, Any], path: str) -> Any:
    """A dotted config path's value in a job's config ("schedule.policy" -> "triangular")."""
    value: Any = config
    for key in path.split("."):
        value = value[key]
    return value


def _paper_name(exp) -> str:
    """"arXiv:1708.07120 Table 1, CIFAR-10 / ResNet-56": the cited rows' paper, table and setting."""
    ids = [*exp.compare.paper, *exp.compare.paper.values()]
    published = load_published()
    papers = "; ".join(sorted(set(published.set_index("id").loc[ids, "paper"])))
    setting = paper_setting(published, ids, "compare.paper")
    return f"{papers}, {setting}" if setting else papers
