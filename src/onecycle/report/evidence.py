"""Which runs count: every planned job's run folder classified before any table, claim or figure reads it.

Tables are built from the plan, never from what happens to lie in a folder (docs/design.md
§10d). Each planned job is
- fresh: a completed run of exactly the planned config (onecycle.experiments.identity), whose
  files agree (onecycle.report.runs.run_problem);
- diverged: the same, stopped by divergence (it counts, as "diverged");
- broken: a run of the planned config whose files disagree, are missing or unreadable;
- stale: a finished run of another config, or (training) at the bounds of an earlier range test;
- missing: nothing finished there yet.
Fresh, diverged and broken runs are "counted": the tables hold them, the broken ones named and
summarised nowhere. Stale and missing runs are not: the tables name the stale ones with what
differs, and say how many of each there are and the command that refreshes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from onecycle import io
from onecycle.errors import ConfigError
from onecycle.experiments.expansion import Job, Plan
from onecycle.experiments.identity import is_set_aside, read_metrics, run_difference
from onecycle.report.runs import BROKEN, collect_runs

FRESH, DIVERGED, STALE, MISSING = "fresh", "diverged", "stale", "missing"
STATES = (FRESH, DIVERGED, BROKEN, STALE, MISSING)
COUNTED = (FRESH, DIVERGED, BROKEN)


@dataclass(frozen=True)
class Evidence:
    """One planned job and what its folder holds: its state, why (stale, broken), its metrics."""
    job: Job
    state: str
    reason: str | None = None
    metrics: dict[str, Any] | None = None


@dataclass
class TrainRuns:
    """An experiment's training runs: the runs table of the counted ones (runs.collect_runs,
    broken ones marked), the jobs of the sound ones (fresh or diverged), and every job's evidence."""
    runs: pd.DataFrame
    sound: list[Job]
    evidence: list[Evidence]

    def stale(self) -> dict[str, list[tuple[int, str]]]:
        """group -> [(seed, what differs)] of its stale runs."""
        found: dict[str, list[tuple[int, str]]] = {}
        for item in self.evidence:
            if item.state == STALE:
                found.setdefault(item.job.group, []).append((item.job.seed, item.reason))
        return found


def read_bounds(path: Path) -> dict[str, Any] | None:
    """A bounds.json as a mapping, None when it is not there; a ConfigError naming an unreadable one."""
    if not path.is_file():
        return None
    return io.read_json_object(path, "bounds file", ConfigError)


def _identity(plan: Plan, job: Job) -> Evidence | None:
    """Missing or stale, from metrics.json alone; None when the run is of the planned config."""
    path = job.out_dir / "metrics.json"
    if not path.is_file():
        return Evidence(job, MISSING)
    metrics = read_metrics(path)
    bounds = read_bounds(plan.bounds_path(job.experiment)) if job.needs_bounds else None
    difference = run_difference(job.kind, job.config, metrics, bounds)
    return None if difference is None else Evidence(job, STALE, difference, metrics)


def experiment_runs(plan: Plan, experiment: str, settings: Mapping[str, str] | None = None) -> TrainRuns:
    """The experiment's training jobs classified, and the runs table of the counted ones, each
    checked against its history.csv (onecycle.report.runs.collect_runs)."""
    evidence: dict[str, Evidence] = {}
    counted = []
    for job in plan.experiment_trains(experiment):
        found = _identity(plan, job)
        if found is None:
            counted.append(job)
        else:
            evidence[job.job_id] = found
    runs = collect_runs([job.out_dir / "metrics.json" for job in counted], settings=settings,
                        history_paths=[job.out_dir / "history.csv" for job in counted])
    sound = []
    for job, status, note in zip(counted, runs["status"], runs["note"]):
        state = {"completed": FRESH, "diverged": DIVERGED}.get(status, BROKEN)
        evidence[job.job_id] = Evidence(job, state, note if state == BROKEN else None)
        if state != BROKEN:
            sound.append(job)
    ordered = [evidence[job.job_id] for job in plan.experiment_trains(experiment)]
    return TrainRuns(runs, sound, ordered)


def range_test_problem(out_dir: Path) -> str | None:
    """Why a finished range test's files cannot be read (history.csv, bounds.json), naming the file."""
    history = out_dir / "history.csv"
    try:
        frame = pd.read_csv(history)
    except FileNotFoundError:
        return f"{history} missing"
    except (OSError, ValueError) as error:  # pandas' EmptyDataError and ParserError are ValueErrors
        return f"{history} unreadable ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    if frame.empty or "lr" not in frame.columns:
        return f"{history} holds no curve (no rows, or no 'lr' column)"
    try:
        bounds = read_bounds(out_dir / "bounds.json")
    except ConfigError as error:
        return str(error)
    if bounds is None or not isinstance(bounds.get("suggestions"), dict):
        return f"{out_dir / 'bounds.json'} {'missing' if bounds is None else 'lacks its suggestions'}"
    return None


def range_test_evidence(plan: Plan, jobs: Iterable[Job]) -> list[Evidence]:
    """Range tests classified: missing, stale, broken (range_test_problem), else fresh or diverged."""
    found = []
    for job in jobs:
        state = _identity(plan, job)
        if state is None:
            metrics = read_metrics(job.out_dir / "metrics.json")
            problem = range_test_problem(job.out_dir)
            status = DIVERGED if metrics.get("status") == "diverged" else FRESH
            state = Evidence(job, BROKEN, problem, metrics) if problem else Evidence(job, status, None, metrics)
        found.append(state)
    return found


def plan_evidence(plan: Plan) -> list[Evidence]:
    """Every job of the plan, range tests first, then each experiment's trainings."""
    return [*range_test_evidence(plan, plan.range_tests.values()),
            *(item for name in plan.workflow.experiments for item in experiment_runs(plan, name).evidence)]


def unplanned_runs(plan: Plan) -> list[tuple[Path, str]]:
    """Run folders under the results folder that no planned job names, and why: set aside before
    their job reran, or left by an earlier config (a seed or group since removed). The report page
    lists them; nothing counts them. The one place that walks folders (docs/design.md §8 keeps
    aggregation to the plan's files): to say what the tables leave out."""
    planned = {job.out_dir for job in [*plan.range_tests.values(), *plan.trains.values()]}
    found = []
    for kind in ("range_test", "train"):
        for metrics in sorted((plan.results_dir / kind).rglob("metrics.json")):
            if metrics.parent not in planned:
                why = "set aside before its job ran again" if is_set_aside(metrics.parent) else "no job of this config"
                found.append((metrics.parent, why))
    return found


def histories(jobs: Sequence[Job]) -> dict[str, list[tuple[int, pd.DataFrame]]]:
    """group -> [(seed, history.csv)] of the given (sound) jobs."""
    found: dict[str, list[tuple[int, pd.DataFrame]]] = {}
    for job in jobs:
        path = job.out_dir / "history.csv"
        if path.exists():
            found.setdefault(job.group or "range_test", []).append((job.seed, pd.read_csv(path)))
    return found


def config_file(plan: Plan) -> str | None:
    """The repository's config file for this results folder (configs/*.yaml with this
    results_dir), so that pages name the file a reader knows, however `onecycle report` was
    called (the workflow passes its copy, workflow_config.json)."""
    for path in sorted(Path("configs").glob("*.yaml")):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(document, dict) and document.get("results_dir") == plan.workflow.results_dir:
            return path.as_posix()
    return None


def refresh_command(plan: Plan) -> str:
    """The command that reruns the missing and stale runs (setting the stale ones aside first)."""
    return f"snakemake --cores all --configfile {config_file(plan) or 'YOUR_CONFIG.yaml'} --rerun-incomplete"


def not_counted_text(plan: Plan, evidence: Sequence[Evidence]) -> str:
    """" Not counted: 1 stale, 2 missing run(s) of 12 planned; refresh: `...`." for a caption, or
    "" when every planned run counts (broken ones are named in the tables' notes)."""
    counts = Counter(item.state for item in evidence)
    parts = [f"{counts[state]} {state}" for state in (STALE, BROKEN, MISSING) if counts[state]]
    if not parts:
        return ""
    return (f" Not counted: {', '.join(parts)} run(s) of {len(evidence)} planned (stale and broken ones named in "
            f"the notes); refresh with `{refresh_command(plan)}`.")
