"""From collected runs to the replication tables: our numbers beside the papers', with a verdict.

The runs come from onecycle.report.runs.collect_runs (one row per run, broken ones marked) and
the tables are written by onecycle.report.tables. Here: one summary row per group with its
verdict against the published number, and the comparison of two groups with the bound the claims
use (how soon 1cycle reaches the baseline's accuracy: onecycle.report.speedup). Missing runs are expected while a
workflow is in progress: they appear as "pending" rows, never as a crash. Accuracies are
percent in every table (the papers' unit); history files hold fractions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from onecycle.report import stats
from onecycle.report.claims import AT_THIS_SCALE
from onecycle.report.runs import BROKEN
from onecycle.report.tables import PERCENT_DECIMALS, _format_number, _is_missing, rounded_for_csv


# --------------------------------------------------------------------------------------------
# Summary table
# --------------------------------------------------------------------------------------------

def summary_table(runs: pd.DataFrame, *, published: pd.DataFrame | None = None,
                  mapping: Mapping[str, str] | None = None, expected_groups: Sequence[tuple[str, str]] = (),
                  tolerance_pp: float = 0.5, schedules: Mapping[str, str] | None = None,
                  stale: Mapping[str, Sequence[tuple[int, str]]] | None = None) -> pd.DataFrame:
    """One row per (experiment, group): seeds run, completed, diverged and broken, final accuracy
    mean ± std over the completed seeds, each seed's value and their range, a two-sided 95 % t
    interval of the mean where there are at least `stats.MIN_VALUES_FOR_CI` completed seeds
    (NaN below, and without spread: the seeds are shown instead), and the mean epochs,
    iterations and wall time of the completed seeds. Broken runs (collect_runs) count in n and
    n_broken only, and `note` names each with its reason.

    mapping: group -> id of a `published` row; those groups get the paper's accuracy, std and
    confidence tag, the difference (ours - paper, percentage points) and `stats.verdict`; the
    other groups keep these columns empty. schedules: group -> what it ran (`describe`'s label,
    e.g. "1cycle 0.0113-0.113 (range test)"), a column of its own. stale: group -> [(seed, what
    differs)] of runs of another config (onecycle.report.evidence), counted nowhere and named in `note`.
    expected_groups: (experiment, group) pairs listed first, in this order; those without runs
    are "pending" rows. Groups without a published row get a verdict from their status only.
    """
    mapping, schedules = dict(mapping or {}), dict(schedules or {})
    paper_rows = _paper_rows(published, mapping)
    order = list(dict.fromkeys([*map(tuple, expected_groups),
                                *zip(runs["experiment"], runs["group"])]))
    rows = []
    for experiment, group in order:
        members = runs[(runs["experiment"] == experiment) & (runs["group"] == group)]
        row = {**_group_summary(experiment, group, members), "schedule": schedules.get(group, "")}
        notes = [note for note in (row["note"], stale_note((stale or {}).get(group, ()))) if note]
        row["note"] = "; ".join(notes) or None
        row.update(_paper_comparison(row, paper_rows.get(group), tolerance_pp))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*_SUMMARY_COLUMNS, *_PAPER_COLUMNS, "verdict", "note"])


_SUMMARY_COLUMNS = ("experiment", "group", "schedule", "n", "n_completed", "n_diverged", "n_broken", "accuracy_mean",
                    "accuracy_std", "accuracy_min", "accuracy_max", "accuracy_by_seed", "accuracy_ci_low",
                    "accuracy_ci_high", "epochs", "iterations", "wall_time_s")
_PAPER_COLUMNS = ("paper_id", "paper_accuracy", "paper_accuracy_std", "paper_confidence", "difference_pp")


def _paper_rows(published: pd.DataFrame | None, mapping: Mapping[str, str]) -> dict[str, pd.Series]:
    if not mapping:
        return {}
    if published is None:
        raise ValueError("summary_table: a group -> published id mapping needs the published table")
    by_id = published.set_index("id")
    unknown = sorted(set(mapping.values()) - set(by_id.index))
    if unknown:
        group = next(g for g, i in mapping.items() if i == unknown[0])
        raise ValueError(f"summary_table: group {group!r} maps to published id {unknown[0]!r}, "
                         f"which is not in the published table")
    return {group: by_id.loc[row_id].rename(row_id) for group, row_id in mapping.items()}


def _group_summary(experiment: str, group: str, members: pd.DataFrame) -> dict[str, Any]:
    completed = members[members["status"] == "completed"].sort_values("seed")
    accuracies = completed["final_accuracy"].to_list()
    mean, std, n = stats.mean_std(accuracies)
    ci_low, ci_high = stats.t_interval(accuracies) if n >= stats.MIN_VALUES_FOR_CI else (math.nan, math.nan)
    broken = members[members["status"] == BROKEN]
    return {"experiment": experiment, "group": group, "n": len(members), "n_completed": len(completed),
            "n_diverged": int((members["status"] == "diverged").sum()), "n_broken": len(broken),
            "note": broken_note(broken),
            "accuracy_mean": mean, "accuracy_std": std,
            "accuracy_min": min(accuracies, default=math.nan), "accuracy_max": max(accuracies, default=math.nan),
            "accuracy_by_seed": "; ".join(f"seed {seed}: {value:.{PERCENT_DECIMALS}f}"
                                          for seed, value in zip(completed["seed"], accuracies)),
            "accuracy_ci_low": ci_low, "accuracy_ci_high": ci_high,
            "epochs": _mean(completed["epochs_completed"]), "iterations": _mean(completed["iterations"]),
            "wall_time_s": _mean(completed["wall_time_s"])}


def broken_note(broken: pd.DataFrame) -> str | None:
    """"broken, not counted: seed 1 (history.csv missing); ..." for a group's broken runs."""
    if broken.empty:
        return None
    runs = "; ".join(f"seed {seed} ({note})" for seed, note in zip(broken["seed"], broken["note"]))
    return f"broken, not counted: {runs}"


def stale_note(stale: Sequence[tuple[int, str]]) -> str | None:
    """"stale, not counted: seed 1 (schedule.params.base_lr: ran 0.05, planned 0.01)" for a
    group's runs of another config."""
    if not stale:
        return None
    return "stale, not counted: " + "; ".join(f"seed {seed} ({reason})" for seed, reason in stale)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def _group_status(row: Mapping[str, Any]) -> str:
    if row["n"] == 0:
        return "pending"
    if row["n_completed"]:
        return "completed"
    return "diverged" if row["n_diverged"] else BROKEN


# The verdict of a completed group without a published row: none (the table shows NO_VERDICT_CELL
# and its caption says "no published number" once); pending, diverged and broken groups say so.
NO_PAPER_VERDICT = ""
NO_VERDICT_CELL = "—"


def _status_only_verdict(row: Mapping[str, Any]) -> str:
    status = _group_status(row)
    return NO_PAPER_VERDICT if status == "completed" else status


def _paper_comparison(row: Mapping[str, Any], paper: pd.Series | None, tolerance_pp: float) -> dict[str, Any]:
    if paper is None:
        return {"paper_id": None, "paper_accuracy": math.nan, "paper_accuracy_std": math.nan,
                "paper_confidence": None, "difference_pp": math.nan, "verdict": _status_only_verdict(row)}
    # Rows published without a spread hold NaN; stats.verdict takes None for "no std".
    paper_std = None if math.isnan(paper["std"]) else float(paper["std"])
    status = _group_status(row)
    verdict = BROKEN if status == BROKEN else stats.verdict(paper["accuracy"], paper_std, row["accuracy_mean"],
                                                            row["accuracy_std"], row["n_completed"], tolerance_pp,
                                                            status=status)
    return {"paper_id": paper.name, "paper_accuracy": paper["accuracy"], "paper_accuracy_std": paper["std"],
            "paper_confidence": paper["confidence"], "difference_pp": row["accuracy_mean"] - paper["accuracy"],
            "verdict": verdict}


# A published number measured on other data (an experiment's `data` departure, e.g. CIFAR-10's
# beside a Fashion-MNIST mirror's) is context beside ours, never a target to replicate: no
# "replicated" or "not replicated" is read off a difference between two datasets (docs/design.md §10c).
CONTEXT_VERDICT = "context: the paper's data differ"


def verdicts_as_shown(verdicts: pd.Series, label: str | None, departures: Mapping[str, str]) -> pd.Series:
    """The summary table's verdict column as the page shows it. An invalid or tiny experiment's
    `label` replaces every decided verdict and the no-verdict of a completed group without a
    published row (NO_PAPER_VERDICT); pending, diverged and broken groups keep saying so. With
    departures from the paper a verdict against a published row reads "... at this scale", or
    CONTEXT_VERDICT where the data differ."""
    shown = verdicts.copy()
    against_paper = verdicts.isin(["replicated", "not replicated"])
    if label:
        shown[against_paper | (verdicts == NO_PAPER_VERDICT)] = label
        return shown
    if "data" in departures:
        shown[against_paper] = CONTEXT_VERDICT
    elif departures:
        shown[against_paper] = verdicts[against_paper] + AT_THIS_SCALE
    return shown


# What the verdict table shows (Markdown, LaTeX, HTML), header -> how a row fills it: the columns
# a reader compares, narrow enough for a page; the CSV keeps every column.
def summary_display(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict table as text cells: group and schedule (with the LR bounds used), epochs,
    completed and diverged seeds, accuracy mean ± std, the seeds' values (n < 3) or the 95 % t
    interval of the mean, the published number and our difference, the verdict, and the broken runs'
    note where a group has any. Numbers are the
    CSV's (`rounded_for_csv`), so a reader finds the same digits in both."""
    rows = []
    for row in rounded_for_csv(table).to_dict("records"):
        ours = _format_number(row["accuracy_mean"], ".2f")
        if ours and not _is_missing(row["accuracy_std"]):
            ours += f" ± {row['accuracy_std']:.2f}"
        paper = _format_number(row["paper_accuracy"], ".2f")
        if paper and not _is_missing(row["paper_accuracy_std"]):
            paper += f" ± {row['paper_accuracy_std']:.2f}"
        # n: the completed seeds the accuracy is over; "1 of 2" when the others diverged.
        n = str(row["n_completed"]) if row["n_completed"] == row["n"] else f"{row['n_completed']} of {row['n']}"
        rows.append({"group": row["group"], "schedule": row["schedule"], "epochs": _format_number(row["epochs"], "g"),
                     "n": n, "accuracy (%)": ours, SPREAD_HEADER: _spread_cell(row), "published (%)": paper,
                     "difference (pp)": _format_number(row["difference_pp"], "+.2f"),
                     "verdict": NO_VERDICT_CELL if _is_missing(row["verdict"]) or row["verdict"] == NO_PAPER_VERDICT
                     else row["verdict"],
                     "note": "" if _is_missing(row["note"]) else row["note"]})
    # With no group mapped to a published row, the paper's columns would be empty: left out.
    paper = ["published (%)", "difference (pp)"] if table["paper_id"].notna().any() else []
    columns = ["group", "schedule", "epochs", "n", "accuracy (%)", SPREAD_HEADER, *paper, "verdict"]
    # Broken runs (collect_runs) are named, with the reason, in a last column when there are any.
    if any(row["note"] for row in rows):
        columns.append("note")
    return pd.DataFrame(rows, columns=columns)


# The verdict table's column of seeds' values (fewer than 3) or the 95 % t interval (3 or more).
SPREAD_HEADER = "seeds / 95% t CI"
# The verdict table's columns in LaTeX: a paper's table, narrow enough for the article class's
# text width (345 pt); the seeds and CI stay in the CSV, Markdown and HTML.
SUMMARY_LATEX_COLUMNS = ("group", "schedule", "epochs", "n", "accuracy (%)", "published (%)",
                         "difference (pp)", "verdict")


def _spread_cell(row: Mapping[str, Any]) -> str:
    n = row["n_completed"]
    if n == 0:
        return ""
    if n < stats.MIN_VALUES_FOR_CI or _is_missing(row["accuracy_ci_low"]):
        # With one or two seeds (or identical ones), the lowest and the highest value are all of them.
        values = dict.fromkeys([row["accuracy_min"], row["accuracy_max"]])
        return ", ".join(f"{v:.2f}" for v in values)
    return f"[{row['accuracy_ci_low']:.2f}, {row['accuracy_ci_high']:.2f}]"


# --------------------------------------------------------------------------------------------
# Paired comparison
# --------------------------------------------------------------------------------------------

def paired_comparison(runs: pd.DataFrame, group_a: str, group_b: str, experiment: str | None = None,
                      confidence: float = 0.95) -> dict:
    """Final accuracy of group_a minus group_b: each seed's difference, and the one uncertainty
    statement the claims use for the same pair (stats.difference_bounds: one-sided t bounds at
    `confidence`, paired when both completed the same seeds, else Welch), with its test and n.

    Diverged and broken runs have no final accuracy and drop out; `n` is always in the result.
    """
    if experiment is not None:
        runs = runs[runs["experiment"] == experiment]
    by_group = {}
    for group in (group_a, group_b):
        members = runs[runs["group"] == group]
        experiments = sorted(set(members["experiment"]))
        if len(experiments) > 1:
            raise ValueError(f"paired_comparison: group {group!r} exists in experiments "
                             f"{', '.join(experiments)}; pass experiment=")
        completed = members[(members["status"] == "completed") & members["final_accuracy"].notna()]
        by_group[group] = dict(zip(completed["seed"].astype(int), completed["final_accuracy"]))
    bounds = stats.difference_bounds(by_group[group_a], by_group[group_b], confidence)
    shared = sorted(set(by_group[group_a]) & set(by_group[group_b]))
    return {"experiment": experiment, "group_a": group_a, "group_b": group_b,
            "n_a": len(by_group[group_a]), "n_b": len(by_group[group_b]), "n": bounds.n,
            "mean_diff": bounds.mean_diff, "lower_bound_pp": bounds.lower, "upper_bound_pp": bounds.upper,
            "confidence": confidence, "test": bounds.test,
            "difference_by_seed": "; ".join(
                f"seed {s}: {by_group[group_a][s] - by_group[group_b][s]:+.{PERCENT_DECIMALS}f}" for s in shared),
            "note": bounds.note or ("no seed completed in both groups: nothing to compare" if not shared else "")}


def paired_by_x(runs: pd.DataFrame, x: str, hue: str, candidate: str, baseline: str,
                confidence: float = 0.95) -> pd.DataFrame:
    """`paired_comparison` of the candidate's series minus the baseline's at each value of `x`
    (SC's CLR - PC-LR at each training-set size): runs has columns `x` and `hue` (the settings
    the comparison figure varies), and at each x one group has hue `candidate`, one `baseline`.
    One row per x with both, sorted by x: x, the two groups, n, mean_diff and its bounds."""
    rows = []
    for value, part in runs.groupby(x, sort=True):
        groups = {h: sorted(set(part.loc[part[hue] == h, "group"])) for h in (candidate, baseline)}
        if not all(groups.values()):
            continue
        if any(len(g) > 1 for g in groups.values()):
            raise ValueError(f"paired_by_x: several groups at {x} = {value}: {groups}")
        pair = paired_comparison(part, groups[candidate][0], groups[baseline][0], confidence=confidence)
        rows.append({"x": value, **{k: pair[k] for k in ("group_a", "group_b", "n", "mean_diff", "lower_bound_pp",
                                                           "upper_bound_pp", "test", "difference_by_seed")}})
    return pd.DataFrame(rows, columns=["x", "group_a", "group_b", "n", "mean_diff", "lower_bound_pp", "upper_bound_pp",
                                       "test", "difference_by_seed"])
