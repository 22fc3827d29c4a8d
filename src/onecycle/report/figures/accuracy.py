"""Accuracy against iteration (SC Fig 1a, Part 1 Fig 5a, 16a), every seed of every group, with
the schedules beneath.
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

from onecycle.report.figures.style import (_EDGE, SEED_LINESTYLES, _finite_curve, _no_data, _require_columns, _save,
                                           _style, _title, group_styles)

# Panels to a row when an experiment draws its groups in several (CLR Fig 1's pairs): two keep
# each about 6 inches wide in the 12-inch figure.
PANEL_COLUMNS = 2


@dataclass(frozen=True)
class RunCurve:
    """One training seed: its history.csv and, if it diverged, metrics.json's `diverged`
    record (iteration, epoch, reason)."""

    seed: int
    history: pd.DataFrame
    diverged: Mapping[str, Any] | None = None


def accuracy_figure(curves: Mapping[str, Sequence[RunCurve]], traces: Mapping[str, pd.DataFrame] | None,
                    title: str, *, labels: Mapping[str, str] | None = None,
                    panels: Sequence[Sequence[str]] | None = None) -> Figure:
    """Test accuracy (%) against iteration, every seed of every group (the groups' colours and
    markers from `group_styles`, the seeds' line styles from SEED_LINESTYLES), a diverged seed
    ending in a cross where it stopped, with each group's LR and, where it has one, momentum
    beneath on shared x axes.

    curves: group -> its seeds. traces: group -> the configured schedule over the whole planned
    run (columns iteration, lr, momentum; onecycle.schedules.schedule_frame), or None for the
    accuracy panel only. A trace identical to an earlier group's is drawn dashed over it, so
    neither hides the other. labels: group -> its legend text (e.g. with the LR bounds used).
    panels: groups drawn together, one panel (with its schedules beneath) each, PANEL_COLUMNS
    to a row, as CLR Fig 1 pairs the fixed LR with triangular2; None: every group in one panel.
    A group keeps its colour, marker and legend entry across panels.
    """
    traces, trace_panels = _checked_traces(curves, traces)
    labels = dict(labels or {})
    groups = list(dict.fromkeys([*curves, *traces]))
    styles = group_styles(groups)
    members = [list(panel) for panel in panels] if panels else [groups]
    seeds = list(dict.fromkeys(run.seed for runs in curves.values() for run in runs))
    columns = min(len(members), PANEL_COLUMNS)
    rows = math.ceil(len(members) / columns)
    with _style():
        height = 5.2 + 1.7 * len(trace_panels) + (rows - 1) * (4.0 + 1.4 * len(trace_panels)) + 0.22 * len(groups)
        fig = Figure(figsize=(12, height), layout="constrained")
        grid = fig.add_gridspec(rows * (1 + len(trace_panels)), columns,
                                height_ratios=([3] + [1] * len(trace_panels)) * rows)
        for index, names in enumerate(members):
            axes = _panel_axes(fig, grid, index, columns, len(trace_panels))
            shown = {group: curves[group] for group in names if group in curves}
            _draw_accuracy_panel(axes[0], shown, styles, seeds)
            for ax, column in zip(axes[1:], trace_panels):
                _draw_trace_panel(ax, column, {g: traces[g] for g in names if g in traces}, shown, styles)
            if len(members) > 1:
                axes[0].set_title(" vs ".join(names), loc="left", fontsize="medium")
            if trace_panels and index == 0:
                axes[1].set_title("schedules as configured, over each group's planned iterations",
                                  fontsize="small", loc="left")
            axes[-1].set_xlabel("iteration")
        _accuracy_legend(fig, curves, styles, labels, seeds)
        fig.suptitle(_title(title, fig))
        return fig


def _panel_axes(fig: Figure, grid: GridSpec, index: int, columns: int, trace_rows: int) -> list[Axes]:
    """Panel `index`'s accuracy axes and its schedule axes beneath, sharing x; only the lowest
    one labels its ticks."""
    row, column = divmod(index, columns)
    first = row * (1 + trace_rows)
    top = fig.add_subplot(grid[first, column])
    axes = [top] + [fig.add_subplot(grid[first + k, column], sharex=top) for k in range(1, 1 + trace_rows)]
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    return axes


def _checked_traces(curves: Mapping[str, Sequence[RunCurve]],
                    traces: Mapping[str, pd.DataFrame] | None) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The traces as a dict and the schedule panels they fill ("lr", and "momentum" where a
    trace has one; none without traces), once the seeds' histories and the traces are checked."""
    for group, runs in curves.items():
        for run in runs:
            _require_columns(run.history, ["iteration", "test_accuracy"], f"history of group {group!r} seed {run.seed}")
    traces = dict(traces or {})
    for group, frame in traces.items():
        _require_columns(frame, ["iteration", "lr"], f"schedule trace of group {group!r}")
    with_momentum = any("momentum" in f and pd.to_numeric(f["momentum"], errors="coerce").notna().any()
                        for f in traces.values())
    trace_panels = (["lr"] + (["momentum"] if with_momentum else [])) if traces else []
    return traces, trace_panels


def _draw_accuracy_panel(ax: Axes, curves: Mapping[str, Sequence[RunCurve]],
                         styles: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> None:
    """Every seed's test accuracy, in its group's colour and marker and its seed's line style
    (`seeds`: every seed of the figure, in order of first appearance), a diverged seed's stop marked."""
    for group, runs in curves.items():
        style = styles[group]
        for run in runs:
            linestyle = SEED_LINESTYLES[seeds.index(run.seed) % len(SEED_LINESTYLES)]
            xs, ys = _finite_curve(run.history, "iteration", "test_accuracy", 100.0)
            ax.plot(xs, ys, color=style["color"], linestyle=linestyle, linewidth=1.4,
                    marker=style["marker"], markersize=5, markevery=max(1, len(xs) // 8),
                    gid=f"curve:{group}:seed {run.seed}")
            if run.diverged is not None:
                _mark_divergence(ax, run, xs, ys, style["color"], group)
    ax.set_ylabel("test accuracy (%)")
    if not curves:
        _no_data(ax)


def _draw_trace_panel(ax: Axes, column: str, traces: Mapping[str, pd.DataFrame],
                      curves: Mapping[str, Sequence[RunCurve]], styles: Mapping[str, Mapping[str, Any]]) -> None:
    """Each group's configured `column` ("lr" or "momentum") against iteration, dashed over an
    identical earlier trace, with a cross where each of its seeds diverged."""
    drawn: list[tuple[np.ndarray, np.ndarray]] = []
    for group, frame in traces.items():
        if column not in frame:
            continue
        xs, ys = _finite_curve(frame, "iteration", column)
        same = any(np.array_equal(xs, x0) and np.array_equal(ys, y0) for x0, y0 in drawn)
        drawn.append((xs, ys))
        ax.plot(xs, ys, color=styles[group]["color"], linewidth=1.6,
                linestyle=(0, (4, 4)) if same else "-", gid=f"trace:{column}:{group}")
        for run in curves.get(group, ()):
            # The schedule's value where the seed diverged (SC: LRs too large for the net).
            if run.diverged is not None and run.diverged.get("iteration") is not None and len(xs):
                it = run.diverged["iteration"]
                ax.plot([it], [np.interp(it, xs, ys)], marker="X", color=styles[group]["color"],
                        markeredgecolor="black", markersize=8, linestyle="none")
    ax.set_ylabel("learning rate" if column == "lr" else "momentum")


def plot_accuracy_curves(curves: Mapping[str, Sequence[RunCurve]], traces: Mapping[str, pd.DataFrame] | None,
                         out_stem: Path, title: str, *, labels: Mapping[str, str] | None = None,
                         panels: Sequence[Sequence[str]] | None = None) -> list[Path]:
    """`accuracy_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(accuracy_figure(curves, traces, title, labels=labels, panels=panels), out_stem)


def _mark_divergence(ax: Axes, run: RunCurve, xs: np.ndarray, ys: np.ndarray, color: Any, group: str) -> None:
    """A cross where the seed stopped: at the iteration it diverged, at its last accuracy (on
    the lower edge if it diverged before any evaluation), joined to its last point."""
    iteration = run.diverged.get("iteration")
    stop_x = float(iteration) if iteration is not None else (xs[-1] if len(xs) else 0.0)
    if len(ys):
        ax.plot([xs[-1], stop_x], [ys[-1], ys[-1]], color=color, linestyle=":", linewidth=1)
        ax.plot([stop_x], [ys[-1]], marker="X", color=color, markersize=11, markeredgecolor="black",
                linestyle="none", gid=f"diverged:{group}:seed {run.seed}")
    else:
        ax.plot([stop_x], [_EDGE], marker="X", color=color, markersize=11, markeredgecolor="black",
                linestyle="none", clip_on=False, transform=ax.get_xaxis_transform(),
                gid=f"diverged:{group}:seed {run.seed}")


def _accuracy_legend(fig: Figure, curves: Mapping[str, Sequence[RunCurve]], styles: Mapping[str, Mapping[str, Any]],
                     labels: Mapping[str, str], seeds: Sequence[int]) -> None:
    """Below the panels: one entry per group (colour and marker, how many seeds, how many
    diverged), then one per seed's line style and one for the divergence cross."""
    handles, texts = [], []
    for group, runs in curves.items():
        diverged = sum(run.diverged is not None for run in runs)
        count = f"{len(runs)} seed{'s' if len(runs) != 1 else ''}" + (f", {diverged} diverged" if diverged else "")
        handles.append(Line2D([], [], color=styles[group]["color"], marker=styles[group]["marker"], linewidth=1.6))
        texts.append(f"{labels.get(group, group)} ({count})")
    for i, seed in enumerate(seeds):
        handles.append(Line2D([], [], color="0.3", linestyle=SEED_LINESTYLES[i % len(SEED_LINESTYLES)]))
        texts.append(f"seed {seed}")
    if any(run.diverged is not None for runs in curves.values() for run in runs):
        handles.append(Line2D([], [], color="0.5", marker="X", markeredgecolor="black", linestyle="none", markersize=9))
        texts.append("diverged: where the seed stopped")
    if handles:
        fig.legend(handles, texts, loc="outside lower center", ncol=2, fontsize="small", frameon=False)
