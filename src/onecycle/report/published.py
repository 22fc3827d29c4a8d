"""The papers' published numbers, loaded from data (configs/reference/published.yaml).

The numbers live in YAML, not in code, so that each one keeps its source section and confidence
tag from docs/paper_reference.md, and a correction is a one-line data change. Every row
is validated on load: a typo in a number (YAML 1.1 reads `1e-4` as a string) must fail here,
naming the row, not later as a strange table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

PUBLISHED_RELATIVE_PATH = Path("configs") / "reference" / "published.yaml"

# The tags of docs/paper_reference.md; NF rows carry no number, so they are not in the file.
CONFIDENCE_TAGS = ("V-img", "V-2", "V-log", "T-1", "LOW")

COLUMNS = ("id", "paper", "table", "dataset", "architecture", "policy", "settings", "accuracy",
           "std", "n_runs", "confidence", "authors_log", "note")
_TEXT_KEYS = ("id", "paper", "table", "dataset", "architecture", "policy", "note")
_PERCENT_KEYS = ("accuracy", "std", "authors_log")
_NULLABLE_KEYS = ("std", "n_runs", "authors_log")

# Settings are typed so that a table can filter or plot by them; cm stays text because the
# papers print it as "max-min/stepsize".
_SETTING_TYPES: dict[str, type] = {
    "cm": str, "momentum": float, "wd": float, "epochs": int, "iterations": int, "tbs": int,
    "train_samples": int, "bn_maf": float, "stepsize_iterations": int,
}


class PublishedDataError(ValueError):
    """A problem in the published-results file, naming the file, row id and key."""


def find_published_file() -> Path:
    """Locate configs/reference/published.yaml above this module or above the working folder.

    Both starts are searched because the package may be imported from an editable checkout
    (the file sits above src/) or run from the repository root by the workflow.
    """
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / PUBLISHED_RELATIVE_PATH
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{PUBLISHED_RELATIVE_PATH} not found above "
                            f"{' or '.join(str(s) for s in starts)}; pass its path explicitly")


def load_published(path: Path | None = None) -> pd.DataFrame:
    """All published rows as a DataFrame with the columns of `COLUMNS`, one row per id.

    `settings` stays a dict per row. Accuracies, std and authors_log are percent.
    """
    path = Path(path) if path is not None else find_published_file()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise PublishedDataError(f"{path}: cannot read published results: {error}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("rows"), list):
        raise PublishedDataError(f"{path}: expected a mapping with a list under 'rows'")
    rows = []
    seen: set[str] = set()
    for index, raw in enumerate(document["rows"]):
        row = _validated_row(raw, index, path)
        if row["id"] in seen:
            raise PublishedDataError(f"{path}: row {row['id']!r}: duplicate id")
        seen.add(row["id"])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    # Nullable integers: a run count is a count, also in the rows that have none.
    frame["n_runs"] = frame["n_runs"].astype("Int64")
    return frame


def _validated_row(raw: Any, index: int, path: Path) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise PublishedDataError(f"{path}: row #{index}: expected a mapping, got {type(raw).__name__}")
    row_id = raw.get("id")
    where = f"{path}: row {row_id!r}" if isinstance(row_id, str) and row_id else f"{path}: row #{index}"

    def fail(key: str, problem: str) -> PublishedDataError:
        return PublishedDataError(f"{where}: key {key!r}: {problem}")

    missing = [key for key in COLUMNS if key not in raw]
    if missing:
        raise fail(missing[0], "missing")
    unknown = sorted(set(raw) - set(COLUMNS))
    if unknown:
        raise fail(unknown[0], f"unknown key (allowed: {', '.join(COLUMNS)})")

    row = dict(raw)
    for key in _TEXT_KEYS:
        if not isinstance(row[key], str):
            raise fail(key, f"expected text, got {row[key]!r}")
    if not row["id"]:
        raise fail("id", "must not be empty")
    for key in _PERCENT_KEYS:
        value = row[key]
        if value is None and key in _NULLABLE_KEYS:
            row[key] = math.nan
            continue
        if not _is_number(value) or not 0 <= value <= 100:
            raise fail(key, f"expected a percentage in [0, 100], got {value!r}")
        row[key] = float(value)
    if row["n_runs"] is not None and not (_is_integer(row["n_runs"]) and row["n_runs"] > 0):
        raise fail("n_runs", f"expected a positive integer or null, got {row['n_runs']!r}")
    if row["confidence"] not in CONFIDENCE_TAGS:
        raise fail("confidence", f"{row['confidence']!r} is not one of {', '.join(CONFIDENCE_TAGS)}")
    row["settings"] = _validated_settings(row["settings"], fail)
    return row


def _validated_settings(settings: Any, fail: Callable[[str, str], PublishedDataError]) -> dict[str, Any]:
    if not isinstance(settings, Mapping):
        raise fail("settings", f"expected a mapping, got {settings!r}")
    if "epochs" not in settings and "iterations" not in settings:
        raise fail("settings", "needs 'epochs' or 'iterations' (the training length)")
    for name, value in settings.items():
        expected = _SETTING_TYPES.get(name)
        if expected is None:
            raise fail(f"settings.{name}", f"unknown setting (allowed: {', '.join(_SETTING_TYPES)})")
        valid = {str: isinstance(value, str), float: _is_number(value), int: _is_integer(value)}[expected]
        if not valid:
            raise fail(f"settings.{name}", f"expected {expected.__name__}, got {value!r}")
    return dict(settings)


def _is_number(value: Any) -> bool:
    # bool is an int subclass: `true` in YAML must not pass as 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
