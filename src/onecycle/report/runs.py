"""Reading training runs: one row per run from its result files, and why a run cannot count.

Aggregation reads an explicit list of result files and the settings recorded inside them; it
never walks folders or parses settings back out of paths (docs/design.md §8). A run whose files
disagree is kept, marked BROKEN with the reason, so that the tables name it instead of
summarising it. Accuracies are percent in every row (the papers' unit); history files hold
fractions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from onecycle import io

RUN_STATUSES = ("completed", "diverged")
# What the aggregation calls a run whose files disagree (run_problem): it is named, with the
# reason, in the tables' notes, and never summarised.
BROKEN = "broken"
# Accuracies are correct/count on a test set of at most 10^5 images, so two that differ at all
# differ by >= 1e-5; metrics.json and history.csv store the same double as text, so a copy of the
# same evaluation agrees to far better than this.
SAME_ACCURACY = 1e-9

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
    metrics = io.read_json_object(path, "metrics file", ResultFileError)

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
    non_finite = _non_finite(history, allow_last=row["status"] != "completed")
    if non_finite is not None:
        return f"{name} holds a non-finite {non_finite}"
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


# The columns of history.csv a finished run fills with numbers at every evaluation.
FINITE_COLUMNS = ("train_loss", "test_loss", "test_accuracy")


def _non_finite(history: pd.DataFrame, *, allow_last: bool) -> str | None:
    """"test_loss at iteration 40" for the first evaluation holding a NaN, an infinity or text in
    FINITE_COLUMNS; a diverged run (allow_last) may end on one, the evaluation that stopped it."""
    columns = [column for column in FINITE_COLUMNS if column in history.columns]
    values = history[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if allow_last and len(bad):
        bad[-1] = False
    if not bad.any():
        return None
    row, column = map(int, np.argwhere(bad)[0])
    return f"{columns[column]} at iteration {history['iteration'].iloc[row]}"


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
