"""The runs behind a report page: every job of the config, by experiment and group, each with
links to its run folder, its log and its config, and the wall times they record.

Every verdict on the page links here (#runs-<experiment>, #runs-<experiment>-<group>), so that a
reader goes from a verdict to the files it rests on in one click. A range test that ended when
its loss diverged did what a range test does (it runs until the loss blows up: onecycle.range_test):
it reads "ended: loss diverged", not as a failed job. tables/wall_time.csv gathers the wall times
per group, the numbers docs and README quote.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from onecycle import io
from onecycle.experiments.expansion import Job, Plan
from onecycle.report.evidence import DIVERGED, FRESH, MISSING, Evidence, unplanned_runs

RANGE_TEST = "range test"
NOT_RECORDED = "not recorded"


def wall_time_path(results_dir: Path) -> Path:
    return Path(results_dir) / "tables" / "wall_time.csv"


def _metrics(item: Evidence) -> dict[str, Any] | None:
    """The run's metrics.json, or None where there is none or it does not read (a broken run,
    whose reason the page shows instead)."""
    if item.metrics is not None or item.state == MISSING:
        return item.metrics
    try:
        return io.read_json_object(item.job.out_dir / "metrics.json", "metrics file")
    except ValueError:
        return None


def _group(job: Job) -> str:
    if job.kind == "train":
        return job.group
    return RANGE_TEST if job.variant is None else f"{RANGE_TEST} {job.variant}"


def short_revision(metrics: dict[str, Any]) -> str:
    """The git revision a run recorded, its first 7 hex digits (and any "-dirty" tail)."""
    revision = (metrics.get("provenance") or {}).get("git_revision") or "unknown"
    return revision[:7] + revision[40:] if len(revision) >= 40 else revision


def _status(item: Evidence, metrics: dict[str, Any] | None) -> tuple[str, str]:
    """(status, where it stopped) as the page shows them: a stale or broken run's state and why
    (onecycle.report.evidence), never counted."""
    job = item.job
    if item.state == MISSING:
        return "pending", ""
    if item.reason is not None:
        return f"{item.state}: {item.reason}", ""
    if metrics is None:
        return item.state, ""
    diverged = metrics.get("diverged") or {}
    stopped = ""
    if diverged:
        where = (f"lr {diverged['lr']:.3g}" if diverged.get("lr") is not None
                 else f"iteration {diverged.get('iteration')}")
        stopped = f"{where}: {diverged.get('reason', '')}"
    status = metrics.get("status", "")
    if job.kind == "range_test" and status == "diverged":
        status = "ended: loss diverged"
    return status, stopped


def _files(plan: Plan, job: Job) -> str:
    """folder · log · config, each linked where it exists."""
    relative = job.out_dir.relative_to(plan.results_dir)
    candidates = (("folder", job.out_dir, relative.as_posix() + "/"),
                  ("log", plan.results_dir / "logs" / relative / "run.log", f"logs/{relative.as_posix()}/run.log"),
                  ("config", job.out_dir / "config.json", f"{relative.as_posix()}/config.json"))
    return " · ".join(f'<a href="{html.escape(href)}">{name}</a>' for name, path, href in candidates if path.exists())


def runs_section(plan: Plan, evidence: list[Evidence]) -> str:
    """Every job of the config (`evidence`: onecycle.report.evidence.plan_evidence), by experiment
    and group (range tests first), with its files; then the run folders no job names."""
    parts = ['<section id="runs">', "<h2>Runs</h2>",
             "<p>Every job of the config, finished or not: a diverged run counts, with where it stopped; "
             "a pending one has no result yet; a stale one (another config's) or a broken one (files that "
             "disagree) is never counted. Wall time is the run's own (training and evaluations), from its "
             f"metrics.json; a range test run before the suite recorded it reads \"{NOT_RECORDED}\". Per group: "
             f"<code>tables/{wall_time_path(Path()).name}</code>.</p>"]
    header = ("<thead><tr><th>group</th><th>seed</th><th>status</th><th>iterations</th><th>stopped</th>"
              "<th class=\"num\">wall time (s)</th><th>device</th><th>revision</th><th>files</th></tr></thead>")
    for experiment in plan.workflow.experiments:
        items = _experiment_items(evidence, experiment)
        parts.append(f'<div id="runs-{html.escape(experiment)}"><h3>{html.escape(experiment)}</h3>')
        parts.append(f'<div class="scroll"><table class="onecycle-table runs">{header}')
        for group in dict.fromkeys(_group(item.job) for item in items):
            anchor = f"runs-{experiment}-{group.replace(' ', '-')}"
            parts.append(f'<tbody id="{html.escape(anchor)}">')
            parts += [_row(plan, item) for item in items if _group(item.job) == group]
            parts.append("</tbody>")
        parts.append("</table></div></div>")
    unplanned = unplanned_runs(plan)
    if unplanned:
        listed = "".join(f"<li><code>{html.escape(folder.relative_to(plan.results_dir).as_posix())}</code>: "
                         f"{html.escape(why)}</li>" for folder, why in unplanned)
        parts.append(f"<p>Run folders no job of this config names, never counted:</p><ul>{listed}</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _experiment_items(evidence: list[Evidence], experiment: str) -> list[Evidence]:
    """The experiment's jobs, range tests first (plan_evidence's order)."""
    return [item for item in evidence if item.job.experiment == experiment]


def _row(plan: Plan, item: Evidence) -> str:
    job = item.job
    metrics = _metrics(item)
    status, stopped = _status(item, metrics)
    iterations = wall = device = revision = ""
    if metrics is not None:
        planned = metrics.get("iterations_planned")
        iterations = f"{metrics.get('iterations')} of {planned}" if planned else str(metrics.get("iterations"))
        seconds = metrics.get("wall_time_s")
        wall = f"{seconds:.1f}" if isinstance(seconds, (int, float)) else NOT_RECORDED
        device = (metrics.get("provenance") or {}).get("device", "")
        revision = short_revision(metrics)
    cells = [_group(job), str(job.seed), status, iterations, stopped]
    text = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
    text += f'<td class="num">{html.escape(wall)}</td><td>{html.escape(device)}</td>'
    # A pending run's folder holds at most the spec the DAG wrote ahead of it, and no folder at
    # all in a clone of committed results: nothing to link.
    files = "" if item.state == MISSING else _files(plan, job)
    return f"<tr>{text}<td><code>{html.escape(revision)}</code></td><td>{files}</td></tr>"


def write_wall_times(plan: Plan, evidence: list[Evidence]) -> Path:
    """tables/wall_time.csv: per experiment and group (range tests as "range test"), the jobs,
    those finished, those with a recorded wall time, and the median, lowest, highest and total of
    those wall times (s). Counted runs only (fresh or diverged, of the planned config): a pending
    job has none, and a stale or broken one ran something else."""
    rows = []
    for experiment in plan.workflow.experiments:
        items = _experiment_items(evidence, experiment)
        for group in dict.fromkeys(_group(item.job) for item in items):
            members = [item for item in items if _group(item.job) == group]
            finished = [m for m in (_metrics(item) for item in members if item.state in (FRESH, DIVERGED))
                        if m is not None]
            seconds = [m["wall_time_s"] for m in finished if isinstance(m.get("wall_time_s"), (int, float))]
            series = pd.Series(seconds, dtype=float)
            rows.append({"experiment": experiment, "group": group, "jobs": len(members), "finished": len(finished),
                         "timed": len(seconds), "median_s": series.median() if seconds else math.nan,
                         "min_s": series.min() if seconds else math.nan,
                         "max_s": series.max() if seconds else math.nan,
                         "total_s": series.sum() if seconds else math.nan})
    frame = pd.DataFrame(rows, columns=["experiment", "group", "jobs", "finished", "timed", "median_s", "min_s",
                                        "max_s", "total_s"])
    path = wall_time_path(plan.results_dir)
    io.write_csv(path, frame.round({c: 1 for c in ("median_s", "min_s", "max_s", "total_s")}))
    return path
