"""From collected runs to the replication tables: our numbers beside the papers', with a verdict.

The runs come from onecycle.report.runs.collect_runs (one row per run, broken ones marked) and
the tables are written by onecycle.report.tables. Here: one summary row per group with its
verdict against the published number, how soon 1cycle reaches the baseline's accuracy, and a
paired comparison of two groups over their shared seeds. Missing runs are expected while a
workflow is in progress: they appear as "pending" rows, never as a crash. Accuracies are
percent in every table (the papers' unit); history files hold fractions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from onecycle.report import stats
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
    mean ± std over the completed seeds, each seed's value and their range, a 95 % bootstrap CI
    where there are at least `stats.MIN_VALUES_FOR_CI` completed seeds (NaN below: two values
    are no interval), and the mean epochs, iterations and wall time of the completed seeds.
    Broken runs (collect_runs) count in n and n_broken only, and `note` names each with its reason.

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
    ci_low, ci_high = stats.bootstrap_ci(accuracies) if n >= stats.MIN_VALUES_FOR_CI else (math.nan, math.nan)
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


def _status_only_verdict(row: Mapping[str, Any]) -> str:
    status = _group_status(row)
    return "no published number" if status == "completed" else status


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


# What the verdict table shows (Markdown, LaTeX, HTML), header -> how a row fills it: the columns
# a reader compares, narrow enough for a page; the CSV keeps every column.
def summary_display(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict table as text cells: group and schedule (with the LR bounds used), epochs,
    completed and diverged seeds, accuracy mean ± std, the seeds' values (n < 3) or the 95 %
    bootstrap CI, the published number and our difference, the verdict, and the broken runs'
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
                     "difference (pp)": _format_number(row["difference_pp"], "+.2f"), "verdict": row["verdict"],
                     "note": "" if _is_missing(row["note"]) else row["note"]})
    columns = ["group", "schedule", "epochs", "n", "accuracy (%)", SPREAD_HEADER, "published (%)",
               "difference (pp)", "verdict"]
    # Broken runs (collect_runs) are named, with the reason, in a last column when there are any.
    if any(row["note"] for row in rows):
        columns.append("note")
    return pd.DataFrame(rows, columns=columns)


# The verdict table's column of seeds' values (fewer than 3) or 95 % bootstrap CI (3 or more).
SPREAD_HEADER = "seeds / 95% CI"
# The verdict table's columns in LaTeX: a paper's table, narrow enough for the article class's
# text width (345 pt); the seeds and CI stay in the CSV, Markdown and HTML.
SUMMARY_LATEX_COLUMNS = ("group", "schedule", "epochs", "n", "accuracy (%)", "published (%)",
                         "difference (pp)", "verdict")


def _spread_cell(row: Mapping[str, Any]) -> str:
    n = row["n_completed"]
    if n == 0:
        return ""
    if n < stats.MIN_VALUES_FOR_CI:
        # With one or two seeds, the lowest and the highest value are all of them.
        values = dict.fromkeys([row["accuracy_min"], row["accuracy_max"]])
        return ", ".join(f"{v:.2f}" for v in values)
    return f"[{row['accuracy_ci_low']:.2f}, {row['accuracy_ci_high']:.2f}]"


# --------------------------------------------------------------------------------------------
# Time to accuracy ("super-convergence as a number")
# --------------------------------------------------------------------------------------------

_TIME_COLUMNS = ("seed", "target_accuracy", "iterations", "epochs", "wall_time_s", "baseline_iterations",
                 "speedup", "note")


def time_to_accuracy_table(histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]], baseline_group: str,
                           candidate_group: str, *,
                           broken: Mapping[str, Mapping[int, str]] | None = None) -> pd.DataFrame:
    """How soon each candidate seed (1cycle) reaches the baseline's mean final accuracy.

    histories: group -> [(seed, history.csv frame)]. The target is the mean over baseline seeds
    of their last evaluation's test accuracy; a baseline seed with fewer epochs than the longest
    one stopped early (diverged) and is left out of the target. Per candidate seed: iterations,
    epochs and wall time to the target (stats.time_to_accuracy), and the speed-up = mean baseline
    iterations / candidate iterations. A last "mean" row averages the seeds that reached it,
    its speed-up being the ratio of the mean iterations.
    Accuracies are percent. A target never reached gives NaN and a note.
    broken: group -> {seed: reason} of broken runs (collect_runs), which `histories` leaves out:
    a broken baseline seed is named in the target's note, a broken candidate seed gets a row of
    its own saying why, so that the seeds here are the summary table's n.
    """
    broken = broken or {}
    baseline, candidate = histories.get(baseline_group, ()), histories.get(candidate_group, ())
    for role, group, entries in (("baseline", baseline_group, baseline), ("candidate", candidate_group, candidate)):
        if not entries:
            return _time_note(f"no finished runs of the {role} group {group!r} yet"
                              + _broken_suffix(broken, group))
    finals, baseline_iterations, left_out = _baseline_finals(baseline, baseline_group)
    if not finals:
        return _time_note(f"no baseline seed of {baseline_group!r} has a final accuracy")
    target = float(np.mean(finals))
    reference_iterations = float(np.mean(baseline_iterations))
    note_target = f"target = mean final accuracy of {len(finals)} {baseline_group} seed(s)"
    if left_out:
        note_target += f"; left out seeds that stopped early: {', '.join(map(str, left_out))}"
    note_target += _broken_suffix(broken, baseline_group)

    rows = []
    for seed, history in candidate:
        _require(history, ("iteration", "epoch", "wall_time_s", "test_accuracy"), f"{candidate_group} seed {seed}")
        reached = {x: stats.time_to_accuracy(history, target, x=x) for x in ("iteration", "epoch", "wall_time_s")}
        iterations = _nan_if_none(reached["iteration"])
        rows.append({"seed": seed, "target_accuracy": 100.0 * target, "iterations": iterations,
                     "epochs": _nan_if_none(reached["epoch"]), "wall_time_s": _nan_if_none(reached["wall_time_s"]),
                     "baseline_iterations": reference_iterations,
                     "speedup": reference_iterations / iterations if iterations > 0 else math.nan,
                     "note": note_target if reached["iteration"] is not None else "never reached the target"})
    candidate_broken = broken.get(candidate_group, {})
    for seed, reason in candidate_broken.items():
        rows.append({"seed": seed, "target_accuracy": 100.0 * target, "iterations": math.nan, "epochs": math.nan,
                     "wall_time_s": math.nan, "baseline_iterations": reference_iterations, "speedup": math.nan,
                     "note": f"broken, not counted: {reason}"})
    reached_rows = [r for r in rows if not math.isnan(r["iterations"])]
    mean_iterations = float(np.mean([r["iterations"] for r in reached_rows])) if reached_rows else math.nan
    rows.append({"seed": "mean", "target_accuracy": 100.0 * target, "iterations": mean_iterations,
                 "epochs": _nan_mean([r["epochs"] for r in reached_rows]),
                 "wall_time_s": _nan_mean([r["wall_time_s"] for r in reached_rows]),
                 "baseline_iterations": reference_iterations,
                 "speedup": reference_iterations / mean_iterations if mean_iterations > 0 else math.nan,
                 "note": f"reached by {len(reached_rows)} of {len(rows)} {candidate_group} seed(s)"
                         + (f", {len(candidate_broken)} of them broken" if candidate_broken else "")
                         + _broken_suffix(broken, baseline_group)})
    return pd.DataFrame(rows, columns=list(_TIME_COLUMNS))


def _broken_suffix(broken: Mapping[str, Mapping[int, str]], group: str) -> str:
    """"; left out broken <group> seeds: 1 (history.csv missing)", or "" if none is broken."""
    seeds = broken.get(group, {})
    if not seeds:
        return ""
    return f"; left out broken {group} seeds: " + ", ".join(f"{seed} ({reason})" for seed, reason in seeds.items())


def _baseline_finals(baseline: Sequence[tuple[int, pd.DataFrame]],
                     group: str) -> tuple[list[float], list[float], list[int]]:
    """Final accuracy and iterations of each baseline seed that ran to the end; the seeds left out."""
    for seed, history in baseline:
        _require(history, ("iteration", "epoch", "test_accuracy"), f"{group} seed {seed}")
    longest = max((int(h["epoch"].max()) for _, h in baseline if len(h)), default=0)
    finals, iterations, left_out = [], [], []
    for seed, history in baseline:
        last = history.iloc[-1] if len(history) else None
        if last is None or int(last["epoch"]) < longest or not math.isfinite(last["test_accuracy"]):
            left_out.append(seed)
            continue
        finals.append(float(last["test_accuracy"]))
        iterations.append(float(last["iteration"]))
    return finals, iterations, left_out


def _time_note(note: str) -> pd.DataFrame:
    return pd.DataFrame([{column: (note if column == "note" else math.nan) for column in _TIME_COLUMNS}],
                        columns=list(_TIME_COLUMNS))


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"history of {what}: missing column {missing[0]!r}")


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _nan_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


# --------------------------------------------------------------------------------------------
# Paired comparison
# --------------------------------------------------------------------------------------------

def paired_comparison(runs: pd.DataFrame, group_a: str, group_b: str, experiment: str | None = None) -> dict:
    """Final accuracy of group_a minus group_b over the seeds both completed (stats.paired_difference).

    Pairing by seed removes the seed-to-seed spread both groups share. Diverged seeds have no
    final accuracy and drop out; `n` (shared completed seeds) is always in the result, with each
    seed's difference. Below `stats.MIN_VALUES_FOR_CI` pairs the bootstrap CI is left empty (the
    differences are shown instead); `p_smallest_possible` is the least p the sign-flip test can
    give with n pairs, and `note` says when that is above 0.05: no result could be significant.
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
        by_group[group] = dict(zip(completed["seed"], completed["final_accuracy"]))
    result = asdict(stats.paired_difference(by_group[group_a], by_group[group_b]))
    shared = sorted(set(by_group[group_a]) & set(by_group[group_b]))
    n = result["n"]
    if n < stats.MIN_VALUES_FOR_CI:
        result["ci_low"] = result["ci_high"] = math.nan
    smallest = stats.smallest_sign_flip_p(n)
    return {"experiment": experiment, "group_a": group_a, "group_b": group_b,
            "n_a": len(by_group[group_a]), "n_b": len(by_group[group_b]), **result,
            "difference_by_seed": "; ".join(
                f"seed {s}: {by_group[group_a][s] - by_group[group_b][s]:+.{PERCENT_DECIMALS}f}" for s in shared),
            "p_smallest_possible": smallest, "note": _paired_note(n, smallest)}


def _paired_note(n: int, smallest_p: float, alpha: float = 0.05) -> str:
    if n == 0:
        return "no seed completed in both groups: nothing to compare"
    notes = []
    if n < stats.MIN_VALUES_FOR_CI:
        notes.append(f"n = {n}: no bootstrap CI, the per-seed differences are shown instead")
    if smallest_p > alpha:
        notes.append(f"with {n} pair(s) the smallest sign-flip p is {smallest_p:g}, so no result can reach "
                     f"p < {alpha:g} (that takes at least {stats.pairs_needed_for_p(alpha)} seeds)")
    return "; ".join(notes)
