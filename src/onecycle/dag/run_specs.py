"""Each planned job's spec.json, written while the Snakefile builds the DAG, and the finished runs
a DAG run is about to redo, moved aside before Snakemake deletes them (docs/design.md §10d).

spec.json is the training or range-test job's input. The Snakefile writes it in-process
(`write_specs`), atomically and only when its content differs from the plan, so a changed
config makes it newer than the run's outputs and Snakemake's mtime trigger reruns the job, with
or without `.snakemake` records (a clone, a copy of a results folder). A folder whose finished
run is of another config gets its spec touched for the same reason, should the spec already say
the plan's config. Rules for these files would cost a Snakemake job each.

Snakemake deletes a job's outputs before it runs the job: `set_aside_redone` (the Snakefile's
onstart, which runs before any job and never in a dry run) moves every finished run that is
about to be redone to a sibling `<seed folder>.stale-<digest>` first, so nothing is lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from onecycle import io
from onecycle.errors import ConfigError
from onecycle.experiments.expansion import Job, Plan
from onecycle.experiments.identity import (DIGEST_KEY, config_difference, read_metrics, recorded_digest,
                                           set_aside)

SPEC = "spec.json"


def _jobs(plan: Plan) -> list[Job]:
    return [*plan.range_tests.values(), *plan.trains.values()]


def spec_path(job: Job) -> Path:
    return job.out_dir / SPEC


def write_specs(plan: Plan) -> list[Job]:
    """Write every job's spec.json whose content is not the plan's; return the jobs whose folder
    holds a finished run of another config (their spec is left newer than that run)."""
    stale = []
    for job in _jobs(plan):
        path, text = spec_path(job), io.json_text(job.config)
        try:
            written = path.read_text(encoding="utf-8") != text
        except (FileNotFoundError, UnicodeDecodeError):
            written = True
        if written:
            io.write_text(path, text)
        if _difference(job) is not None:
            stale.append(job)
            if not written:
                os.utime(path)  # newer than the stale run's outputs: Snakemake reruns the job
    return stale


def _difference(job: Job) -> str | None:
    """How the finished run in the job's folder differs from the plan; None if it does not, or if
    nothing finished is there."""
    metrics = job.out_dir / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        return config_difference(job.kind, job.config, read_metrics(metrics))
    except ConfigError as error:
        return str(error)


def _finished(job: Job) -> bool:
    """A run's result files are there (metrics.json, or a history.csv a finished run wrote)."""
    return any((job.out_dir / name).is_file() for name in ("metrics.json", "history.csv"))


def set_aside_redone(plan: Plan, redone_outputs: Iterable[str]) -> list[tuple[Job, Path]]:
    """Move the finished runs whose jobs Snakemake will run (`redone_outputs`: the paths of the
    outputs of every job it will run) to their stale folders; return (job, where it went)."""
    redone = set(map(str, redone_outputs))
    moved = []
    for job in _jobs(plan):
        if str(job.out_dir / "metrics.json") not in redone or not _finished(job):
            continue
        try:
            metrics = read_metrics(job.out_dir / "metrics.json")
            config = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
            label = metrics.get(DIGEST_KEY) or recorded_digest(job.kind, config)
        except ConfigError:  # no metrics.json, or an unreadable one: not a run anybody can name
            label = "incomplete"
        moved.append((job, set_aside(job.out_dir, label)))
    return moved
