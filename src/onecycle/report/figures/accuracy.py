"""Accuracy against iteration (SC Fig 1a, Part 1 Fig 5a, 16a): each group's mean over its seeds
with their min-max band, in its policy's colour and marker, and the schedules beneath.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from onecycle.range_test_plot import choose_scale
from onecycle.report.figures.style import (_finite_curve, _no_data, _require_columns, _save, _style, _title, mean_band,
                                           named_styles, plain_log_axis)

# Groups of one policy (1cycle in 12, 25 and 50 epochs) share its colour and marker and differ
# in line style, in the order they are given.
GROUP_LINESTYLES = ("-", "--", ":", "-.")
# Panels to a row when an experiment draws its groups in several (CLR Fig 1's pairs): two keep
# each about 6 inches wide in the 12-inch figure.
PANEL_COLUMNS = 2


@dataclass(frozen=True)
class RunCurve:
    """One training seed: its history.csv and, if it diverged, metrics.json's `diverged`
    record (iteration, epoch, lr, reason)."""

    seed: int
    history: pd.DataFrame
    diverged: Mapping[str, Any] | None = None


def undrawable_groups(curves: Mapping[str, Sequence[RunCurve]]) -> list[str]:
    """The groups with no test accuracy to draw: every seed stopped before its first evaluation.
    The figure leaves them out of its accuracy panel; the report says so in a sentence."""
    return [group for group, runs in curves.items()
            if not any(len(_finite_curve(run.history, "iteration", "test_accuracy")[0]) for run in runs)]


def accuracy_figure(curves: Mapping[str, Sequence[RunCurve]], traces: Mapping[str, pd.DataFrame] | None,
                    title: str, *, labels: Mapping[str, str] | None = None,
                    policies: Mapping[str, str] | None = None, panels: Sequence[Sequence[str]] | None = None
                    ) -> Figure:
    """Test accuracy (%) against iteration: each group's mean over its seeds with the seeds'
    min-max band, a cross where a seed diverged; each group's LR (log axis where it spans more
    than two decades, so that a 0.35 -> 0.0035 drop shows beside a 0.1-3 cycle) and, where a
    schedule varies it, momentum beneath on shared x axes.

    curves: group -> its seeds. traces: group -> the configured schedule over the whole planned
    run (columns iteration, lr, momentum; onecycle.schedules.schedule_frame), or None for the
    accuracy panel only. labels: group -> legend text. policies: group -> the papers' policy
    name (onecycle.report.describe.policy_name), which picks colour and marker (style.STYLES).
    A group with no evaluation (`undrawable_groups`) has no curve; if no group has one, the
    figure is the schedule panel alone, with the crosses where each seed diverged.
    panels: groups drawn together, one column of axes each (accuracy, schedules beneath),
    PANEL_COLUMNS to a row, as CLR Fig 1 pairs the fixed LR with triangular2; None: every group
    in one. A group keeps its colour, marker and legend entry across panels.
    """
    traces, schedule_rows = _checked_traces(curves, traces)
    labels, policies = dict(labels or {}), dict(policies or {})
    groups = list(dict.fromkeys([*curves, *traces]))
    styles = _group_styles(groups, policies)
    drawable = [g for g in curves if g not in undrawable_groups(curves)]
    rows = (["accuracy"] if drawable or not schedule_rows else []) + schedule_rows
    members = [list(panel) for panel in panels] if panels else [groups]
    columns = min(len(members), PANEL_COLUMNS)
    blocks = math.ceil(len(members) / columns)
    with _style():
        block_height = 3.4 * ("accuracy" in rows) + 1.9 * len(schedule_rows)
        fig = Figure(figsize=(11 if columns == 1 else 12, 1.6 + blocks * block_height + 0.25 * len(groups)),
                     layout="constrained")
        grid = fig.add_gridspec(blocks * len(rows), columns,
                                height_ratios=[3 if row == "accuracy" else 1.3 for row in rows] * blocks)
        for index, names in enumerate(members):
            axes = _panel_axes(fig, grid, index, columns, len(rows))
            for ax, row in zip(axes, rows):
                if row == "accuracy":
                    _draw_accuracy_panel(ax, {g: curves[g] for g in drawable if g in names}, styles)
                    if not any(g in curves for g in names):
                        _no_data(ax)
                else:
                    _draw_trace_panel(ax, row, {g: traces[g] for g in names if g in traces}, curves, styles)
            if len(members) > 1:
                axes[0].set_title(" vs ".join(names), loc="left", fontsize="medium")
            axes[-1].set_xlabel("iteration")
        _legend(fig, curves, groups, styles, labels, drawable)
        fig.suptitle(_title(title, fig))
        return fig


def _panel_axes(fig: Figure, grid: GridSpec, index: int, columns: int, rows: int) -> list[Axes]:
    """Panel `index`'s `rows` axes, one beneath the other, sharing x; only the lowest labels its ticks."""
    block, column = divmod(index, columns)
    first = block * rows
    top = fig.add_subplot(grid[first, column])
    axes = [top] + [fig.add_subplot(grid[first + k, column], sharex=top) for k in range(1, rows)]
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    return axes


def _group_styles(groups: Sequence[str], policies: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each group's colour and marker (its policy's) and line style (its place among its policy's groups)."""
    names = [policies.get(group, group) for group in groups]
    by_name = named_styles(list(dict.fromkeys(names)))
    styles = {}
    for group, name in zip(groups, names):
        rank = sum(1 for other in styles if policies.get(other, other) == name)
        styles[group] = {**by_name[name], "linestyle": GROUP_LINESTYLES[rank % len(GROUP_LINESTYLES)]}
    return styles


def _checked_traces(curves: Mapping[str, Sequence[RunCurve]],
                    traces: Mapping[str, pd.DataFrame] | None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The traces as a dict and the schedule panels they fill: "lr", and "momentum" where some
    schedule varies it (a constant momentum is in the legend's labels), once checked."""
    for group, runs in curves.items():
        for run in runs:
            _require_columns(run.history, ["iteration", "test_accuracy"], f"history of group {group!r} seed {run.seed}")
    traces = dict(traces or {})
    for group, frame in traces.items():
        _require_columns(frame, ["iteration", "lr"], f"schedule trace of group {group!r}")
    varies = any("momentum" in f and pd.to_numeric(f["momentum"], errors="coerce").nunique() > 1
                 for f in traces.values())
    return traces, (["lr"] + (["momentum"] if varies else [])) if traces else []


def _draw_accuracy_panel(ax: Axes, curves: Mapping[str, Sequence[RunCurve]],
                         styles: Mapping[str, Mapping[str, Any]]) -> None:
    """Each group's mean over its seeds (markers at the evaluations), the seeds' min-max band, and
    a cross where a seed diverged (at the iteration it stopped, at its last accuracy)."""
    for group, runs in curves.items():
        style = styles[group]
        seeds = [_finite_curve(run.history, "iteration", "test_accuracy", 100.0) for run in runs]
        grid, mean, low, high = mean_band(seeds)
        if sum(len(xs) > 0 for xs, _ in seeds) > 1:
            ax.fill_between(grid, low, high, color=style["color"], alpha=0.18, linewidth=0, gid=f"band:{group}")
        ax.plot(grid, mean, color=style["color"], linestyle=style["linestyle"], linewidth=1.8,
                marker=style["marker"], markersize=5, markevery=max(1, len(grid) // 10), gid=f"mean:{group}")
        for run, (xs, ys) in zip(runs, seeds):
            if run.diverged is not None and len(ys):
                stop = run.diverged.get("iteration")
                ax.plot([xs[-1] if stop is None else float(stop)], [ys[-1]], marker="X", color=style["color"],
                        markersize=10, markeredgecolor="black", linestyle="none",
                        gid=f"diverged:{group}:seed {run.seed}")
    ax.set_ylabel("test accuracy (%)")


def _draw_trace_panel(ax: Axes, column: str, traces: Mapping[str, pd.DataFrame],
                      curves: Mapping[str, Sequence[RunCurve]], styles: Mapping[str, Mapping[str, Any]]) -> None:
    """Each group's configured `column` ("lr" or "momentum") against iteration, with a cross at
    the schedule's value where each of its seeds diverged (SC: LRs too large for the net)."""
    values = []
    for group, frame in traces.items():
        if column not in frame:
            continue
        xs, ys = _finite_curve(frame, "iteration", column)
        ax.plot(xs, ys, color=styles[group]["color"], linestyle=styles[group]["linestyle"], linewidth=1.6,
                gid=f"trace:{column}:{group}")
        values += list(ys)
        for run in curves.get(group, ()):
            if run.diverged is not None and run.diverged.get("iteration") is not None and len(xs):
                it = run.diverged["iteration"]
                ax.plot([it], [np.interp(it, xs, ys)], marker="X", color=styles[group]["color"],
                        markeredgecolor="black", markersize=9, linestyle="none",
                        gid=f"trace-diverged:{column}:{group}:seed {run.seed}")
    positive = [v for v in values if v > 0]
    if column == "lr" and choose_scale(positive) == "log":
        # A schedule that ends at 0 has no place on a log axis: its zeros drop out of view.
        ax.set_yscale("log")
        low, high = min(positive) / 2, max(positive) * 2
        plain_log_axis(ax.yaxis, low, high)
        ax.set_ylim(low, high)
        ax.set_ylabel("learning rate\n(log scale)")
    else:
        ax.set_ylabel("learning rate" if column == "lr" else "momentum")


def _legend(fig: Figure, curves: Mapping[str, Sequence[RunCurve]], groups: Sequence[str],
            styles: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], drawable: Sequence[str]) -> None:
    """Below the panels: one entry per group (how many seeds, how many diverged, and, for a group
    without a curve, why), then the band and the divergence cross."""
    handles, texts = [], []
    for group in groups:
        runs = curves.get(group, ())
        diverged = sum(run.diverged is not None for run in runs)
        count = f"{len(runs)} seed{'s' if len(runs) != 1 else ''}" + (f", {diverged} diverged" if diverged else "")
        if runs and group not in drawable:
            count += ": no evaluation before it stopped, no accuracy curve"
        style = styles[group]
        handles.append(Line2D([], [], color=style["color"], marker=style["marker"], linestyle=style["linestyle"],
                              linewidth=1.8))
        texts.append(f"{labels.get(group, group)} ({count})")
    if any(len(curves[g]) > 1 for g in drawable):
        handles.append(Patch(color="0.6", alpha=0.35))
        texts.append("band: lowest to highest seed; line: mean of the seeds still running")
    if any(run.diverged is not None for runs in curves.values() for run in runs):
        handles.append(Line2D([], [], color="0.5", marker="X", markeredgecolor="black", linestyle="none", markersize=9))
        texts.append("diverged: where the seed stopped")
    if handles:
        fig.legend(handles, texts, loc="outside lower center", ncol=1, fontsize="small", frameon=False)


def plot_accuracy_curves(curves: Mapping[str, Sequence[RunCurve]], traces: Mapping[str, pd.DataFrame] | None,
                         out_stem: Path, title: str, *, labels: Mapping[str, str] | None = None,
                         policies: Mapping[str, str] | None = None,
                         panels: Sequence[Sequence[str]] | None = None) -> list[Path]:
    """`accuracy_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(accuracy_figure(curves, traces, title, labels=labels, policies=policies, panels=panels), out_stem)
