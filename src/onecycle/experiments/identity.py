"""A run's identity: which config a run folder's run was made with, and whether that is the plan's.

A planned job's config (onecycle.experiments.expansion.Job.config: validated, defaults left out)
is the protocol its run must follow. Its digest, sha256 of its canonical JSON, is what
`onecycle train` and `onecycle range-test` record in metrics.json (`spec_digest`), computed from
the config they validated, so a hand-written YAML and the workflow's spec.json of one protocol
share it. A run matches a plan when its digest is the plan's, or, for runs recorded before the
digest (or under other defaults), when the config it recorded validates to the same model as the
planned one. Otherwise it is stale: it never counts (onecycle.report.evidence), and whatever
would rerun it moves it aside first (`set_aside`), never deleting it (docs/design.md §10d).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onecycle import io
from onecycle.errors import ConfigError, excerpt
from onecycle.experiments.config import RangeTestConfig, RunConfig, StrictModel

DIGEST_KEY = "spec_digest"
MODELS: dict[str, type[StrictModel]] = {"train": RunConfig, "range_test": RangeTestConfig}
# The files a finished run leaves in its folder (the workflow rules' outputs); metrics.json is
# written last, so it alone means "finished" (docs/design.md §8).
RESULT_FILES = {"train": ("metrics.json", "history.csv", "train_log.csv", "config.json"),
                "range_test": ("metrics.json", "history.csv", "bounds.json", "config.json")}
# Files of a run folder that belong to the folder, not to the run in it: the plan's spec.json
# (the workflow writes it before the run) and the folder's lock (onecycle.io.run_folder).
FOLDER_FILES = ("spec.json", io.RUN_LOCK)
# A set-aside run's folder: `<seed folder>.stale-<label>`.
STALE_MARK = ".stale-"
# A stale run's folder is named by the first hex digits of its digest: 12 give 48 bits, so two
# configs of one job share a name with probability 2^-48 (and even then the `-2` suffix keeps both).
DIGEST_CHARS = 12


def spec_digest(config: Mapping[str, Any]) -> str:
    """sha256 of the config's canonical JSON (keys sorted, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_digest(cfg: StrictModel) -> str:
    """The digest of a validated config: that of its values that differ from the defaults, which
    is what the plan's Job.config holds."""
    return spec_digest(cfg.model_dump(mode="json", exclude_defaults=True))


def _validated(kind: str, config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config's model, as JSON values with every default filled in; None if it does not
    validate (a run recorded by a version with other keys). Keys the model lacks (the resolved
    schedule, bounds, iterations per epoch that metrics.json adds) are left out."""
    model = MODELS[kind]
    fields = {key: value for key, value in config.items() if key in model.model_fields}
    try:
        return model.model_validate(fields).model_dump(mode="json")
    except ValueError:  # pydantic's ValidationError is a ValueError
        return None


def recorded_digest(kind: str, config: Mapping[str, Any]) -> str:
    """The digest of the config a run recorded (metrics.json's or a checkpoint's), for naming it."""
    validated = _validated(kind, config)
    if validated is None:
        return spec_digest({key: value for key, value in config.items() if key in MODELS[kind].model_fields})
    return config_digest(MODELS[kind].model_validate(validated))


def config_difference(kind: str, planned: Mapping[str, Any], metrics: Mapping[str, Any]) -> str | None:
    """None when metrics.json records a run of the planned config; else what differs, in words
    ("schedule.params.base_lr: ran 0.05, planned 0.01")."""
    if metrics.get(DIGEST_KEY) == spec_digest(planned):
        return None
    recorded = metrics.get("config")
    if not isinstance(recorded, Mapping):
        return "its metrics.json records no config"
    ran = _validated(kind, recorded)
    if ran is None:
        return "the config it recorded is not a valid config of this version"
    wanted = _validated(kind, planned)
    return None if ran == wanted else _first_difference(ran, wanted or {}, "")


def _first_difference(ran: Any, planned: Any, where: str) -> str | None:
    if isinstance(ran, Mapping) and isinstance(planned, Mapping):
        for key in sorted(set(ran) | set(planned)):
            found = _first_difference(ran.get(key), planned.get(key), f"{where}.{key}" if where else key)
            if found is not None:
                return found
        return None
    if ran == planned:
        return None
    return f"{where}: ran {excerpt(ran, 40)}, planned {excerpt(planned, 40)}"


def bounds_difference(recorded: Any, current: Any) -> str | None:
    """None when a run trained at the bounds the range tests now give; else how they differ."""
    if recorded == current:
        return None
    ran, now = (value.get("max_lr") if isinstance(value, Mapping) else None for value in (recorded, current))
    return f"trained at bounds of an earlier range test (max_lr {ran}; the range tests now give {now})"


def run_difference(kind: str, planned: Mapping[str, Any], metrics: Mapping[str, Any],
                   bounds: Mapping[str, Any] | None = None) -> str | None:
    """config_difference, and for a training that takes its LR bounds from range tests (`bounds`:
    the bounds it would train at now) whether it trained at those."""
    difference = config_difference(kind, planned, metrics)
    if difference is None and bounds is not None:
        recorded = metrics.get("config") if isinstance(metrics.get("config"), Mapping) else {}
        difference = bounds_difference(recorded.get("bounds"), bounds)
    return difference


def set_aside(out_dir: Path, label: str, names: Sequence[str] | None = None) -> Path:
    """Move a run's files out of `out_dir` (those named, else all but FOLDER_FILES) into a new
    sibling `<out_dir>.stale-<label>` (`-2`, `-3`... if taken); return it. Each file moves with
    one rename, so a kill midway leaves every file whole in one folder or the other."""
    out_dir = Path(out_dir)
    moving = [out_dir / name for name in names] if names is not None else \
        [entry for entry in sorted(out_dir.iterdir()) if entry.name not in FOLDER_FILES]
    moving = [path for path in moving if path.exists()]
    base = out_dir.with_name(f"{out_dir.name}{STALE_MARK}{label[:DIGEST_CHARS]}")
    target, k = base, 1
    while target.exists():
        k += 1
        target = base.with_name(f"{base.name}-{k}")
    target.mkdir(parents=True)
    for path in moving:
        os.replace(path, target / path.name)
    return target


def is_set_aside(path: Path) -> bool:
    """Whether `path` lies in a folder `set_aside` made: no run of the folder it sits in."""
    return any(STALE_MARK in part for part in Path(path).parts)


def read_metrics(path: Path) -> dict[str, Any]:
    """A metrics.json as a mapping, or a ConfigError naming the file."""
    return io.read_json_object(path, "metrics file", ConfigError)


def check_run_folder(out_dir: str | Path, kind: str, cfg: StrictModel, *, bounds: Mapping[str, Any] | None = None,
                     set_aside_stale: bool = False) -> dict[str, Any] | None:
    """What `onecycle train` / `range-test` finds in --out before it starts. Returns the metrics
    of a complete finished run of this very config (and bounds): nothing to redo. Returns None
    to go on: nothing finished there, or (set_aside_stale) a finished run of another config, or
    an incomplete one, moved aside. Without set_aside_stale those two are refused, in one line."""
    out_dir = Path(out_dir)
    metrics_path = out_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    metrics = read_metrics(metrics_path)
    difference = run_difference(kind, cfg.model_dump(mode="json", exclude_defaults=True), metrics, bounds)
    missing = [name for name in RESULT_FILES[kind] if not (out_dir / name).is_file()]
    if difference is None and not missing:
        return metrics
    problem = (f"holds a finished run of another config ({difference})" if difference is not None
               else f"holds a finished run without its {missing[0]}")
    if not set_aside_stale:
        raise ConfigError(f"{out_dir}: {problem}; give another --out, move that run away, or pass "
                          "--set-aside-stale to move it to a sibling folder")
    recorded = metrics.get("config") if isinstance(metrics.get("config"), Mapping) else {}
    moved = set_aside(out_dir, metrics.get(DIGEST_KEY) or recorded_digest(kind, recorded))
    print(f"{out_dir}: {problem}; moved it to {moved}", flush=True)
    return None
