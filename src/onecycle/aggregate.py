"""From raw runs to the replication tables: our numbers beside the papers', with a verdict.

Aggregation reads an explicit list of result files and the settings recorded inside them; it
never walks folders or parses settings back out of paths (docs/design.md §8). Missing runs
are expected while a workflow is in progress: they appear as "pending" rows, never as a crash.
Accuracies are percent in every table (the papers' unit); history files hold fractions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onecycle import io, stats

RUN_STATUSES = ("completed", "diverged")

# Settings every training config records, as columns of the runs table (dotted config paths),
# so that a sweep can be plotted or filtered by them without parsing run names.
DEFAULT_SETTING_COLUMNS: Mapping[str, str] = {
    "dataset": "data.dataset", "train_subset": "data.train_subset", "arch": "model.arch",
    "policy": "schedule.policy", "weight_decay": "optim.weight_decay",
    "batch_size": "train.batch_size", "epochs_planned": "train.epochs",
}

RUN_COLUMNS = ("name", "experiment", "group", "seed", "status", "final_accuracy", "best_accuracy",
               "final_test_loss", "iterations", "iterations_planned", "epochs_completed", "wall_time_s",
               *DEFAULT_SETTING_COLUMNS, "metrics_path")


class ResultFileError(ValueError):
    """A result file that is missing, unreadable or malformed; the message names it."""


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

def collect_runs(metrics_paths: Sequence[Path], *, settings: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per training run, read from its metrics.json (the file list is explicit).

    Columns: `RUN_COLUMNS` plus one per entry of `settings` (column name -> dotted path in the
    run's config, e.g. {"max_momentum": "schedule.params.momentum"}); a setting a run's config
    lacks is None there, and a path no run has is an error (a typo). Accuracies are percent;
    "final"/"best" of a run that diverged before its first evaluation are NaN.
    """
    settings = dict(settings or {})
    clash = sorted(set(settings) & set(RUN_COLUMNS))
    if clash:
        raise ValueError(f"collect_runs: settings column {clash[0]!r} already exists")
    rows, seen = [], {}
    for path in map(Path, metrics_paths):
        row = _run_row(path, settings)
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
                  tolerance_pp: float = 0.5) -> pd.DataFrame:
    """One row per (experiment, group): seeds run, completed and diverged, final accuracy
    mean ± std over the completed seeds with a 95 % bootstrap CI, and the mean epochs,
    iterations and wall time of the completed seeds.

    mapping: group -> id of a `published` row; those groups get the paper's accuracy, std and
    confidence tag, the difference (ours - paper, percentage points) and `stats.verdict`.
    expected_groups: (experiment, group) pairs listed first, in this order; those without runs
    are "pending" rows. Groups without a published row get a verdict from their status only.
    """
    mapping = dict(mapping or {})
    paper_rows = _paper_rows(published, mapping)
    order = list(dict.fromkeys([*map(tuple, expected_groups),
                                *zip(runs["experiment"], runs["group"])]))
    rows = []
    for experiment, group in order:
        members = runs[(runs["experiment"] == experiment) & (runs["group"] == group)]
        row = _group_summary(experiment, group, members)
        if mapping:
            paper = paper_rows.get(group)
            row.update(_paper_comparison(row, paper, tolerance_pp))
        else:
            row["verdict"] = _status_only_verdict(row)
        rows.append(row)
    columns = [*_SUMMARY_COLUMNS, *(_PAPER_COLUMNS if mapping else ()), "verdict"]
    return pd.DataFrame(rows, columns=columns)


_SUMMARY_COLUMNS = ("experiment", "group", "n", "n_completed", "n_diverged", "accuracy_mean", "accuracy_std",
                    "accuracy_ci_low", "accuracy_ci_high", "epochs", "iterations", "wall_time_s")
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
    completed = members[members["status"] == "completed"]
    accuracies = completed["final_accuracy"].to_list()
    mean, std, _ = stats.mean_std(accuracies)
    ci_low, ci_high = stats.bootstrap_ci(accuracies)
    return {"experiment": experiment, "group": group, "n": len(members), "n_completed": len(completed),
            "n_diverged": int((members["status"] == "diverged").sum()),
            "accuracy_mean": mean, "accuracy_std": std, "accuracy_ci_low": ci_low, "accuracy_ci_high": ci_high,
            "epochs": _mean(completed["epochs_completed"]), "iterations": _mean(completed["iterations"]),
            "wall_time_s": _mean(completed["wall_time_s"])}


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def _group_status(row: Mapping[str, Any]) -> str:
    if row["n"] == 0:
        return "pending"
    return "completed" if row["n_completed"] else "diverged"


def _status_only_verdict(row: Mapping[str, Any]) -> str:
    status = _group_status(row)
    return "no published number" if status == "completed" else status


def _paper_comparison(row: Mapping[str, Any], paper: pd.Series | None, tolerance_pp: float) -> dict[str, Any]:
    if paper is None:
        return {"paper_id": None, "paper_accuracy": math.nan, "paper_accuracy_std": math.nan,
                "paper_confidence": None, "difference_pp": math.nan, "verdict": _status_only_verdict(row)}
    # Rows published without a spread hold NaN; stats.verdict takes None for "no std".
    paper_std = None if math.isnan(paper["std"]) else float(paper["std"])
    verdict = stats.verdict(paper["accuracy"], paper_std, row["accuracy_mean"], row["accuracy_std"],
                            row["n_completed"], tolerance_pp, status=_group_status(row))
    return {"paper_id": paper.name, "paper_accuracy": paper["accuracy"], "paper_accuracy_std": paper["std"],
            "paper_confidence": paper["confidence"], "difference_pp": row["accuracy_mean"] - paper["accuracy"],
            "verdict": verdict}


# --------------------------------------------------------------------------------------------
# Time to accuracy ("super-convergence as a number")
# --------------------------------------------------------------------------------------------

_TIME_COLUMNS = ("seed", "target_accuracy", "iterations", "epochs", "wall_time_s", "baseline_iterations",
                 "speedup", "note")


def time_to_accuracy_table(histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]], baseline_group: str,
                           candidate_group: str) -> pd.DataFrame:
    """How soon each candidate seed (1cycle) reaches the baseline's mean final accuracy.

    histories: group -> [(seed, history.csv frame)]. The target is the mean over baseline seeds
    of their last evaluation's test accuracy; a baseline seed with fewer epochs than the longest
    one stopped early (diverged) and is left out of the target. Per candidate seed: iterations,
    epochs and wall time to the target (stats.time_to_accuracy), and the speed-up = mean baseline
    iterations / candidate iterations. A last "mean" row averages the seeds that reached it,
    its speed-up being the ratio of the mean iterations.
    Accuracies are percent. A target never reached gives NaN and a note.
    """
    baseline, candidate = histories.get(baseline_group, ()), histories.get(candidate_group, ())
    for role, group, entries in (("baseline", baseline_group, baseline), ("candidate", candidate_group, candidate)):
        if not entries:
            return _time_note(f"no finished runs of the {role} group {group!r} yet")
    finals, baseline_iterations, left_out = _baseline_finals(baseline, baseline_group)
    if not finals:
        return _time_note(f"no baseline seed of {baseline_group!r} has a final accuracy")
    target = float(np.mean(finals))
    reference_iterations = float(np.mean(baseline_iterations))
    note_target = f"target = mean final accuracy of {len(finals)} {baseline_group} seed(s)"
    if left_out:
        note_target += f"; left out seeds that stopped early: {', '.join(map(str, left_out))}"

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
    reached_rows = [r for r in rows if not math.isnan(r["iterations"])]
    mean_iterations = float(np.mean([r["iterations"] for r in reached_rows])) if reached_rows else math.nan
    rows.append({"seed": "mean", "target_accuracy": 100.0 * target, "iterations": mean_iterations,
                 "epochs": _nan_mean([r["epochs"] for r in reached_rows]),
                 "wall_time_s": _nan_mean([r["wall_time_s"] for r in reached_rows]),
                 "baseline_iterations": reference_iterations,
                 "speedup": reference_iterations / mean_iterations if mean_iterations > 0 else math.nan,
                 "note": f"reached by {len(reached_rows)} of {len(rows)} {candidate_group} seed(s)"})
    return pd.DataFrame(rows, columns=list(_TIME_COLUMNS))


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
    final accuracy and drop out; `n` (shared completed seeds) is always in the result.
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
    result = stats.paired_difference(by_group[group_a], by_group[group_b])
    return {"experiment": experiment, "group_a": group_a, "group_b": group_b,
            "n_a": len(by_group[group_a]), "n_b": len(by_group[group_b]), **asdict(result)}


# --------------------------------------------------------------------------------------------
# Writing tables
# --------------------------------------------------------------------------------------------

def write_table(frame: pd.DataFrame, stem: Path, *, caption: str = "",
                formats: Mapping[str, str] | None = None, display_columns: Sequence[str] | None = None) -> None:
    """Write `frame` as <stem>.csv (raw numbers), <stem>.md (pipe table) and <stem>.tex
    (booktabs), all from this one frame. In .md and .tex, a column `X_std` is merged into `X`
    or `X_mean` as "mean ± std" (the papers' style), and numbers are rounded per column
    (`formats`: column -> format spec where the default would not do, e.g. ".3g" for LRs);
    `display_columns`, if given, are the only columns they show (the CSV keeps every one)."""
    stem = Path(stem)
    io.write_csv(stem.parent / f"{stem.name}.csv", frame)
    display = display_frame(frame if display_columns is None else frame[list(display_columns)], formats)
    io.write_text(stem.parent / f"{stem.name}.md", _markdown(display, caption))
    io.write_text(stem.parent / f"{stem.name}.tex", _latex(display, caption, _numeric_columns(frame, display)))


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


def _numeric_columns(frame: pd.DataFrame, display: pd.DataFrame) -> set[str]:
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])}
    # Merged "mean ± std" columns take their mean column's name minus "_mean".
    return {c for c in display.columns if c in numeric or f"{c}_mean" in numeric}


def _markdown(display: pd.DataFrame, caption: str) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [caption, ""] if caption else []
    lines.append(line(display.columns))
    lines.append("|" + "|".join("---" for _ in display.columns) + "|")
    lines.extend(line(row) for row in display.itertuples(index=False))
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return escaped.replace("±", r"$\pm$")


def _latex(display: pd.DataFrame, caption: str, numeric: set[str]) -> str:
    align = "".join("r" if c in numeric else "l" for c in display.columns)
    lines = [r"% Generated by onecycle.aggregate.write_table; needs \usepackage{booktabs}.",
             r"\begin{table}[htbp]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex_escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(_latex_escape(c) for c in display.columns) + r" \\", r"\midrule"]
    lines.extend(" & ".join(_latex_escape(c) for c in row) + r" \\" for row in display.itertuples(index=False))
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
