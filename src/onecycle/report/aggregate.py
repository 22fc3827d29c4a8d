"""From raw runs to the replication tables: our numbers beside the papers', with a verdict.

Aggregation reads an explicit list of result files and the settings recorded inside them; it
never walks folders or parses settings back out of paths (docs/design.md §8). Missing runs
are expected while a workflow is in progress: they appear as "pending" rows, never as a crash.
Accuracies are percent in every table (the papers' unit); history files hold fractions.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onecycle import io
from onecycle.report import stats

RUN_STATUSES = ("completed", "diverged")
# What the aggregation calls a run whose files disagree (run_problem): it is named, with the
# reason, in the tables' notes, and never summarised.
BROKEN = "broken"
# Accuracies are correct/count on a test set of at most 10^5 images, so two that differ at all
# differ by >= 1e-5; metrics.json and history.csv store the same double as text, so a copy of the
# same evaluation agrees to far better than this.
SAME_ACCURACY = 1e-9

# Decimals of the numbers written to CSV: what was measured, without float noise
# (85.08500000000001). Accuracies are counts over a test set, in steps of 100/N pp (0.01 pp for
# 10k images, 0.002 pp for 50k); 3 decimals keep every step, a mean of 2 seeds exactly, and the
# std and differences to a tenth of a 10k set's step.
PERCENT_DECIMALS = 3
# Means over seeds of whole epochs and iterations (x.5 for two seeds); speed-up ratios.
COUNT_DECIMALS = 2
RATIO_DECIMALS = 3
# Wall-clock seconds: timer and machine noise between runs is far above 0.1 s.
SECONDS_DECIMALS = 1
# Anything else (learning rates, p-values, exact fractions 2/2**n): significant digits.
OTHER_SIGNIFICANT_DIGITS = 6

# Settings every training config records, as columns of the runs table (dotted config paths),
# so that a sweep can be plotted or filtered by them without parsing run names.
DEFAULT_SETTING_COLUMNS: Mapping[str, str] = {
    "dataset": "data.dataset", "train_subset": "data.train_subset", "arch": "model.arch",
    "policy": "schedule.policy", "weight_decay": "optim.weight_decay",
    "batch_size": "train.batch_size", "epochs_planned": "train.epochs",
}

RUN_COLUMNS = ("name", "experiment", "group", "seed", "status", "final_accuracy", "best_accuracy",
               "final_test_loss", "iterations", "iterations_planned", "epochs_completed", "wall_time_s",
               *DEFAULT_SETTING_COLUMNS, "metrics_path", "note")


class ResultFileError(ValueError):
    """A result file that is missing, unreadable or malformed; the message names it."""


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

def collect_runs(metrics_paths: Sequence[Path], *, settings: Mapping[str, str] | None = None,
                 history_paths: Sequence[Path] | None = None) -> pd.DataFrame:
    """One row per training run, read from its metrics.json (the file list is explicit).

    Columns: `RUN_COLUMNS` plus one per entry of `settings` (column name -> dotted path in the
    run's config, e.g. {"max_momentum": "schedule.params.momentum"}); a setting a run's config
    lacks is None there, and a path no run has is an error (a typo). Accuracies are percent;
    "final"/"best" of a run that diverged before its first evaluation are NaN.

    A run whose files disagree (run_problem: e.g. "completed" after 10 of 468 planned
    iterations; with `history_paths`, the history.csv of each run, in the same order, a missing
    or contradicting history) gets status BROKEN and the reason in `note`.
    """
    settings = dict(settings or {})
    clash = sorted(set(settings) & set(RUN_COLUMNS))
    if clash:
        raise ValueError(f"collect_runs: settings column {clash[0]!r} already exists")
    if history_paths is not None and len(history_paths) != len(metrics_paths):
        raise ValueError(f"collect_runs: {len(history_paths)} history paths for {len(metrics_paths)} runs")
    rows, seen = [], {}
    for index, path in enumerate(map(Path, metrics_paths)):
        row = _run_row(path, settings)
        history = None if history_paths is None else Path(history_paths[index])
        row["note"] = run_problem(row, history, check_history=history_paths is not None)
        if row["note"] is not None:
            row["status"] = BROKEN
        key = (row["experiment"], row["group"], row["seed"])
        if key in seen:
            raise ResultFileError(f"{path}: experiment {key[0]!r} group {key[1]!r} seed {key[2]} "
                                  f"already read from {seen[key]}")
        seen[key] = path
        rows.append(row)
    for column, dotted in settings.items():
        if rows and all(row[column] is None for row in rows):
            raise ValueError(f"collect_runs: no run's config has {dotted!r} (settings column {column!r})")
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, *settings])


def _run_row(path: Path, settings: Mapping[str, str]) -> dict[str, Any]:
    try:
        metrics = io.read_json(path)
    except FileNotFoundError:
        raise ResultFileError(f"{path}: metrics file not found") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ResultFileError(f"{path}: cannot read metrics: {error}") from None
    if not isinstance(metrics, Mapping):
        raise ResultFileError(f"{path}: expected a JSON object")

    def get(dotted: str, required: bool = True) -> Any:
        value = metrics
        for key in dotted.split("."):
            if not isinstance(value, Mapping) or key not in value:
                if required:
                    raise ResultFileError(f"{path}: missing key {dotted!r}")
                return None
            value = value[key]
        return value

    status = get("status")
    if status not in RUN_STATUSES:
        raise ResultFileError(f"{path}: key 'status' is {status!r}, expected one of {', '.join(RUN_STATUSES)}")
    row = {key: get(key) for key in ("name", "experiment", "group")}
    row["seed"] = _integer(path, "seed", get("seed"))
    row["status"] = status
    final, best = (_summary_block(path, block, get(block)) for block in ("final", "best"))
    row["final_accuracy"] = _percent(path, "final", final)
    row["best_accuracy"] = _percent(path, "best", best)
    row["final_test_loss"] = _number_or_nan(path, "final.test_loss", final.get("test_loss"))
    for key in ("iterations", "iterations_planned", "epochs_completed"):
        row[key] = _integer(path, key, get(key))
    row["wall_time_s"] = _number_or_nan(path, "wall_time_s", get("wall_time_s"))
    row.update({column: get(f"config.{dotted}") for column, dotted in DEFAULT_SETTING_COLUMNS.items()})
    row.update({column: get(f"config.{dotted}", required=False) for column, dotted in settings.items()})
    if status == "completed" and math.isnan(row["final_accuracy"]):
        raise ResultFileError(f"{path}: status is 'completed' but 'final.test_accuracy' is null")
    row["metrics_path"] = str(path)
    return row


def run_problem(row: Mapping[str, Any], history_path: Path | None, *, check_history: bool = True) -> str | None:
    """Why a run read by collect_runs cannot count, or None if its files agree: a completed run
    did every planned iteration, no run did more, and its history.csv (when checked) exists,
    ends where metrics.json says the run ended, with the same final accuracy."""
    done, planned = row["iterations"], row["iterations_planned"]
    if done > planned:
        return f"{done} iterations, more than the {planned} planned"
    if row["status"] == "completed" and done != planned:
        return f"'completed' after {done} of {planned} planned iterations"
    if not check_history:
        return None
    name = history_path.name if history_path is not None else "history.csv"
    try:
        history = pd.read_csv(history_path)
    except FileNotFoundError:
        return f"{name} missing"
    except (OSError, ValueError, pd.errors.ParserError) as error:
        return f"{name} unreadable ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    missing = [column for column in ("iteration", "test_accuracy") if column not in history.columns]
    if missing:
        return f"{name} lacks column {missing[0]!r}"
    if row["status"] != "completed":
        last = history["iteration"].max() if len(history) else 0
        return f"{name} goes on to iteration {last}, past the {done} run" if last > done else None
    if not len(history):
        return f"{name} holds no evaluation of a completed run"
    last_iteration, last_accuracy = history["iteration"].iloc[-1], history["test_accuracy"].iloc[-1]
    if last_iteration != done:
        return f"{name} ends at iteration {last_iteration}, metrics.json at {done}"
    if not abs(100.0 * last_accuracy - row["final_accuracy"]) <= 100.0 * SAME_ACCURACY:
        return (f"final accuracy {row['final_accuracy']:.2f}% in metrics.json, "
                f"{100.0 * last_accuracy:.2f}% in {name}")
    return None


def _summary_block(path: Path, block: str, value: Any) -> Mapping[str, Any]:
    # null when the run diverged before its first evaluation.
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ResultFileError(f"{path}: key {block!r} is {value!r}, expected an object or null")
    return value


def _integer(path: Path, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResultFileError(f"{path}: key {key!r} is {value!r}, expected an integer")
    return value


def _percent(path: Path, block: str, summary: Mapping[str, Any]) -> float:
    value = _number_or_nan(path, f"{block}.test_accuracy", summary.get("test_accuracy"))
    if not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise ResultFileError(f"{path}: key '{block}.test_accuracy' is {value}, expected a fraction in [0, 1]")
    return 100.0 * value


def _number_or_nan(path: Path, key: str, value: Any) -> float:
    # JSON has no NaN: the writers store a missing or non-finite value as null.
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultFileError(f"{path}: key {key!r} is {value!r}, expected a number or null")
    return float(value)


# --------------------------------------------------------------------------------------------
# Summary table
# --------------------------------------------------------------------------------------------

def summary_table(runs: pd.DataFrame, *, published: pd.DataFrame | None = None,
                  mapping: Mapping[str, str] | None = None, expected_groups: Sequence[tuple[str, str]] = (),
                  tolerance_pp: float = 0.5, schedules: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (experiment, group): seeds run, completed, diverged and broken, final accuracy
    mean ± std over the completed seeds, each seed's value and their range, a 95 % bootstrap CI
    where there are at least `stats.MIN_VALUES_FOR_CI` completed seeds (NaN below: two values
    are no interval), and the mean epochs, iterations and wall time of the completed seeds.
    Broken runs (collect_runs) count in n and n_broken only, and `note` names each with its reason.

    mapping: group -> id of a `published` row; those groups get the paper's accuracy, std and
    confidence tag, the difference (ours - paper, percentage points) and `stats.verdict`; the
    other groups keep these columns empty. schedules: group -> what it ran (`describe`'s label,
    e.g. "1cycle 0.0113-0.113 (range test)"), a column of its own.
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
    verdict = BROKEN if status == BROKEN else stats.verdict(paper["accuracy"], paper_std, row["accuracy_mean"], row["accuracy_std"],
                            row["n_completed"], tolerance_pp, status=status)
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
            "difference_by_seed": "; ".join(f"seed {s}: {by_group[group_a][s] - by_group[group_b][s]:+.{PERCENT_DECIMALS}f}"
                                            for s in shared),
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


def rounded_for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its float columns rounded to what was measured (the *_DECIMALS above):
    percent columns (accuracy, *_pp, differences, CI bounds) to PERCENT_DECIMALS, epochs,
    iterations and speed-ups to COUNT/RATIO_DECIMALS, seconds to SECONDS_DECIMALS, anything
    else to OTHER_SIGNIFICANT_DIGITS significant digits."""
    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_float_dtype(out[column]):
            continue
        name = str(column)
        if "accuracy" in name or name.endswith("_pp") or name in ("mean_diff", "ci_low", "ci_high"):
            out[column] = out[column].round(PERCENT_DECIMALS)
        elif name in ("epochs", "iterations", "baseline_iterations"):
            out[column] = out[column].round(COUNT_DECIMALS)
        elif name == "speedup":
            out[column] = out[column].round(RATIO_DECIMALS)
        elif name.endswith("_s"):
            out[column] = out[column].round(SECONDS_DECIMALS)
        else:
            out[column] = out[column].map(lambda v: float(f"{v:.{OTHER_SIGNIFICANT_DIGITS}g}") if math.isfinite(v) else v)
    return out


# --------------------------------------------------------------------------------------------
# Writing tables
# --------------------------------------------------------------------------------------------

def write_table(frame: pd.DataFrame, stem: Path, *, caption: str = "",
                formats: Mapping[str, str] | None = None, display_columns: Sequence[str] | None = None,
                display: pd.DataFrame | None = None, latex_columns: Sequence[str] | None = None) -> None:
    """Write `frame` as <stem>.csv (every column, rounded by `rounded_for_csv`), and its display
    as <stem>.md (pipe table), <stem>.tex (booktabs, as wide as the text; only `latex_columns`
    of the display if given, so that it fits a page) and <stem>.html (a table element, for the
    reports). The display is `display` if given, else `display_frame` of `display_columns` (all
    by default): a column `X_std` merged into `X` or `X_mean` as "mean ± std" (the papers'
    style), numbers rounded per column (`formats`: column -> format spec where the default would
    not do, e.g. ".3g" for LRs)."""
    stem = Path(stem)
    frame = rounded_for_csv(frame)
    io.write_csv(stem.parent / f"{stem.name}.csv", frame)
    if display is None:
        display = display_frame(frame if display_columns is None else frame[list(display_columns)], formats)
    io.write_text(stem.parent / f"{stem.name}.md", _markdown(display, caption))
    latex = display if latex_columns is None else display[list(latex_columns)]
    io.write_text(stem.parent / f"{stem.name}.tex", _latex(latex, caption))
    io.write_text(stem.parent / f"{stem.name}.html", html_table(display, caption))


def display_frame(frame: pd.DataFrame, formats: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The frame as text cells: each `X_std` merged into its `X_mean` (or `X`) column as
    "mean ± std", numbers formatted per column (or as `formats` names them), missing values empty."""
    formats = dict(formats or {})
    std_of = {}  # mean column -> its std column
    for column in frame.columns:
        if column.endswith("_std"):
            base = column[: -len("_std")]
            partner = next((c for c in (f"{base}_mean", base) if c in frame.columns), None)
            if partner is not None:
                std_of[partner] = column
    out = {}
    for column in frame.columns:
        if column in std_of.values():
            continue
        if column not in std_of:
            out[column] = _format_column(frame[column], formats.get(column))
            continue
        # Mean and std share the mean's format, so "99.25 ± 0.03" reads as one value.
        spec = formats.get(column) or _number_format(frame[column])
        means = [_format_number(v, spec) for v in frame[column]]
        stds = [_format_number(v, spec) for v in frame[std_of[column]]]
        name = column[: -len("_mean")] if column.endswith("_mean") else column
        out[name] = [f"{m} ± {s}" if m and s else m for m, s in zip(means, stds)]
    return pd.DataFrame(out, index=frame.index)


def _number_format(values: pd.Series) -> str:
    """A format spec for one numeric column: integers as such, small numbers (learning rates,
    weight decays, p-values) to 3 significant digits, anything else (accuracies in percent,
    seconds) to 2 decimals."""
    numeric = pd.to_numeric(values, errors="coerce").dropna()
    if numeric.empty or (numeric == numeric.round()).all():
        return ".0f"
    if (numeric.abs() < 0.01).all():
        return ".3g"
    return ".2f"


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _format_number(value: Any, spec: str) -> str:
    return "" if _is_missing(value) else format(float(value), spec)


def _format_column(values: pd.Series, spec: str | None = None) -> list[str]:
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return ["" if _is_missing(v) else str(v) for v in values]
    spec = spec or _number_format(values)
    return [_format_number(v, spec) for v in values]


# A display cell that is a number (1.5, -0.02, 1e-05), "mean ± std", a list of seeds' values
# ("80.86, 81.54"), an interval ("[80.86, 81.54]") or a count ("1 of 2").
_NUMBER = r"[+-]?\d[\d.]*(?:e[+-]?\d+)?"
_NUMBER_CELL = re.compile(rf"^{_NUMBER}( ± {_NUMBER})?$|^{_NUMBER}(, {_NUMBER})+$|^\[{_NUMBER}, {_NUMBER}\]$"
                          r"|^\d+ of \d+$")


def _numeric_display_columns(display: pd.DataFrame) -> set[str]:
    """Columns whose non-empty cells are all numbers (right-aligned in LaTeX and HTML, at their
    natural width); an empty column (no published number yet) counts, so it takes no more room
    than its header."""
    return {c for c in display.columns if all(_NUMBER_CELL.match(str(v)) for v in display[c] if v != "")}


def _markdown(display: pd.DataFrame, caption: str) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [caption, ""] if caption else []
    lines.append(line(display.columns))
    lines.append("|" + "|".join("---" for _ in display.columns) + "|")
    lines.extend(line(row) for row in display.itertuples(index=False))
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  # A line may break after an underscore: group names are long single words.
                  "_": r"\_\allowbreak{}",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "–": "--", "—": "---", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex(display: pd.DataFrame, caption: str) -> str:
    """A booktabs table exactly as wide as the text (tabularx): numbers right-aligned at their
    natural width, text columns sharing the rest and wrapping, so no table runs off the page
    and nothing is scaled (no \\resizebox)."""
    numeric = _numeric_display_columns(display)
    text_column = r">{\raggedright\arraybackslash}X"
    align = " ".join("r" if c in numeric else text_column for c in display.columns)
    # tabularx needs at least one X column; an all-number table keeps its natural width.
    environment = "tabularx" if len(numeric) < len(display.columns) else "tabular"
    width = "{\\linewidth}" if environment == "tabularx" else ""
    # Footnote size and 4 pt column gaps (booktabs' default 6 pt) leave the wrapping text
    # columns room for a word of a group name.
    lines = [r"% Generated by onecycle.report.aggregate.write_table; needs \usepackage{booktabs,tabularx}.",
             r"\begin{table}[htbp]", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{4pt}"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    header = [_latex_header(c) if c in numeric else _latex_escape(c) for c in display.columns]
    lines += [rf"\begin{{{environment}}}{width}{{@{{}}{align}@{{}}}}", r"\toprule",
              " & ".join(header) + r" \\", r"\midrule"]
    lines.extend(" & ".join(_latex_cell(value, column in numeric) for column, value in zip(display.columns, row))
                 + r" \\" for row in display.itertuples(index=False))
    lines += [r"\bottomrule", rf"\end{{{environment}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _latex_cell(value: Any, number: bool) -> str:
    # A number's minus sign is a minus ($-$), not a hyphen.
    text = _latex_escape(value)
    return re.sub(r"(?<![\w.])-(?=\d)", "$-$", text) if number else text


def _latex_header(text: str) -> str:
    """A number column's header stacked one word per line ("difference / (pp)"), so that it is no
    wider than its numbers."""
    words = str(text).split()
    if len(words) < 2:
        return _latex_escape(text)
    return r"\begin{tabular}[b]{@{}r@{}}" + r"\\".join(_latex_escape(w) for w in words) + r"\end{tabular}"


def html_table(display: pd.DataFrame, caption: str = "", verdict_columns: Sequence[str] = ("verdict", "expected")) -> str:
    """The display as one HTML table element (escaped; no script, no external resource), for the
    static report and Snakemake's. Number columns carry class "num"; a cell of `verdict_columns`
    carries "verdict" and its verdict (the words before any bracket) as a class, e.g.
    "v-not-replicated", so a stylesheet can colour it."""
    numeric = _numeric_display_columns(display)

    def cell(tag: str, column: str, value: Any) -> str:
        classes = ["num"] if column in numeric else []
        if tag == "td" and column in verdict_columns and value:
            verdict = str(value).split(" (")[0].lower()
            classes += ["verdict", "v-" + re.sub(r"[^a-z0-9]+", "-", verdict).strip("-")]
        attribute = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{attribute}>{html.escape(str(value))}</{tag}>"

    lines = ['<table class="onecycle-table">']
    if caption:
        lines.append(f"<caption>{html.escape(caption)}</caption>")
    lines.append("<thead><tr>" + "".join(cell("th", c, c) for c in display.columns) + "</tr></thead>")
    lines.append("<tbody>")
    lines.extend("<tr>" + "".join(cell("td", c, v) for c, v in zip(display.columns, row)) + "</tr>"
                 for row in display.itertuples(index=False))
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines) + "\n"
