"""The LR range test figure (CLR §3.3; Part 1 Fig 1a, 4, 14; SC Fig 2): every seed's accuracy
and losses against the LR, the bounds training used, and each heuristic's suggestion.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec

# When a range test's ramp is not known, its LR axis is log if the LRs span over two decades.
from onecycle.range_test_plot import choose_scale
from onecycle.report.figures.style import (_EDGE, _SUGGESTION_MARKERS, GROUP_PALETTE, _finite_curve, _fmt, _no_data,
                                           _require_columns, _save, _style, _title, _unique_legend)

# A loss panel's y axis ends at this multiple of the largest loss a seed started from. Above
# it the curve is past the useful part: the range test itself stops once the smoothed loss
# exceeds 4x its minimum (onecycle.range_test), and the last iterations' spike (10^3 to 10^5 in
# the smoke run) would otherwise flatten the whole curve to a line at 0. What is cut off is
# marked where it leaves the panel and its largest value is written on the panel.
LOSS_CLIP_FACTOR = 1.5

# The figure's panels, left to right: (history column, y label, y scale). Accuracy first: Smith
# reads max_lr where it peaks.
_PANELS = (("test_accuracy", "test accuracy (%)", 100.0), ("smoothed_loss", "smoothed train loss", 1.0),
           ("test_loss", "test loss", 1.0))


@dataclass(frozen=True)
class RangeSeed:
    """One range-test seed: its history.csv, where it diverged (metrics.json's `diverged`
    record, or None), and its own bound suggestions (its bounds.json's `suggestions`)."""

    seed: int
    history: pd.DataFrame
    diverged: Mapping[str, Any] | None = None
    suggestions: Mapping[str, Mapping[str, Any]] | None = None


def loss_limits(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """The y range of a loss panel: from just below the lowest loss to LOSS_CLIP_FACTOR times
    the largest loss any seed started from (its first finite value)."""
    curves = [c for c in curves if len(c[1])]
    if not curves:
        return 0.0, 1.0
    top = LOSS_CLIP_FACTOR * max(ys[0] for _, ys in curves)
    bottom = min(ys.min() for _, ys in curves)
    bottom = min(bottom, top)  # a curve that only rises still gets a positive range
    pad = 0.05 * (top - bottom) if top > bottom else 0.05 * abs(top) or 0.05
    return bottom - pad, top


def range_test_figure(seeds: Sequence[RangeSeed], bounds: Mapping[str, Any] | None, title: str, *,
                      x_scale: str | None = None, x: str = "lr") -> Figure:
    """LR range test: test accuracy (%), smoothed train loss and test loss against the LR, one
    curve per seed, as Smith reads it (accuracy first: his max_lr is where it peaks).

    bounds: the combined bounds training used (onecycle.training.range_test_job.combine_bounds, or one
    seed's bounds.json): `max_lr` and `base_lr` are drawn as vertical lines on every panel,
    labelled with the rule and how the seeds were combined. Each heuristic's suggestion (from
    the seeds' own `suggestions`) is a marker on the accuracy panel's lower edge at the median
    over seeds, its label giving every seed's value. x_scale: "linear" or "log" as the LR was
    ramped (None: `choose_scale`). x: "lr", or "momentum" for a momentum range test (Part 1
    Fig 7b: LR held, momentum ramped; no bounds). Loss axes are clipped by `loss_limits`; what
    is clipped is marked and its largest value written on the panel. The legend sits below
    the panels, off the data.
    """
    x_scale = _checked_scale(seeds, x, x_scale)
    suggestions = _suggestions_by_rule(seeds, bounds) if bounds else {}
    with _style():
        fig = Figure(figsize=(14, 7.4 if suggestions else 6.0), layout="constrained")
        grid = fig.add_gridspec(2 if suggestions else 1, len(_PANELS), height_ratios=[4, 1.8] if suggestions else [1])
        axes = _draw_panels(fig, grid, seeds, x, x_scale)
        if bounds:
            _draw_bounds(axes, bounds, seeds)
        handles, labels = _unique_legend(fig)
        if suggestions:
            _draw_suggestion_row(fig, grid, axes[0], bounds, suggestions, handles, labels)
        elif handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
        ramp = f"{x_scale} {'LR' if x == 'lr' else 'momentum'} axis, as ramped"
        fig.suptitle(_title(f"{title} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}; {ramp})", fig))
        return fig


def _checked_scale(seeds: Sequence[RangeSeed], x: str, x_scale: str | None) -> str:
    """The x axis's scale (`x_scale`, or `choose_scale` of the seeds' values when None), once `x`,
    `x_scale` and the seeds' history columns are checked."""
    if x not in ("lr", "momentum"):
        raise ValueError(f"plot_range_test: x must be 'lr' or 'momentum', got {x!r}")
    for entry in seeds:
        _require_columns(entry.history, [x] + [column for column, _, _ in _PANELS],
                         f"range-test history of seed {entry.seed}")
    if x_scale is None:
        x_scale = choose_scale([v for s in seeds for v in s.history[x].to_numpy(dtype=float)])
    if x_scale not in ("linear", "log"):
        raise ValueError(f"plot_range_test: x_scale must be 'linear', 'log' or None, got {x_scale!r}")
    return x_scale


def _draw_panels(fig: Figure, grid: GridSpec, seeds: Sequence[RangeSeed], x: str, x_scale: str) -> list[Axes]:
    """The `_PANELS` side by side on the grid's top row, sharing their x axis: every seed's
    curve, the loss panels clipped (`_clip_loss_axis`), each diverged seed's stop marked."""
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[0, i], sharex=axes[0]) for i in range(1, len(_PANELS))]
    colors = sns.color_palette(GROUP_PALETTE, max(len(seeds), 1))
    for ax, (column, label, scale) in zip(axes, _PANELS):
        curves = [_finite_curve(s.history, x, column, scale) for s in seeds]
        for entry, (xs, ys), color in zip(seeds, curves, colors):
            # Evaluations come every few iterations: markers show where they are.
            sparse = column != "smoothed_loss"
            ax.plot(xs, ys, color=color, marker="o" if sparse else None, markersize=3, linewidth=1.4,
                    label=f"seed {entry.seed}", gid=f"curve:{column}:seed {entry.seed}")
        if column != "test_accuracy":
            _clip_loss_axis(ax, seeds, curves, colors, x)
        _mark_stops(ax, seeds, curves, colors, x)
        ax.set_ylabel(label)
        ax.set_xlabel("learning rate" if x == "lr" else "momentum")
        ax.set_xscale(x_scale)
        if not seeds:
            _no_data(ax)
    return axes


def _draw_suggestion_row(fig: Figure, grid: GridSpec, accuracy_ax: Axes, bounds: Mapping[str, Any],
                         suggestions: Mapping[str, list[tuple[Any, float | None]]], handles: list[Any],
                         labels: list[str]) -> None:
    """The grid's bottom row: under the accuracy panel the suggestion strip, with the bounds
    used as vertical lines; beside it the legend, the strip's entries added to `handles`."""
    strip = fig.add_subplot(grid[1, 0], sharex=accuracy_ax)
    for key, style in (("max_lr", "--"), ("base_lr", ":")):
        if bounds.get(key) is not None:
            strip.axvline(bounds[key], color="black", linestyle=style, linewidth=1.2)
    handles, labels = _draw_suggestion_strip(strip, suggestions, bounds.get("chosen_rule"), handles, labels)
    holder = fig.add_subplot(grid[1, 1:])
    holder.axis("off")
    holder.legend(handles, labels, loc="center", ncol=2, fontsize="small", frameon=False)


def plot_range_test(seeds: Sequence[RangeSeed], bounds: Mapping[str, Any] | None, out_stem: Path, title: str, *,
                    x_scale: str | None = None, x: str = "lr") -> list[Path]:
    """`range_test_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(range_test_figure(seeds, bounds, title, x_scale=x_scale, x=x), out_stem)


def _clip_loss_axis(ax: Axes, seeds: Sequence[RangeSeed], curves, colors, x: str) -> None:
    low, high = loss_limits(curves)
    ax.set_ylim(low, high)
    notes = []
    for entry, (xs, ys), color in zip(seeds, curves, colors):
        above = np.flatnonzero(ys > high)
        if not len(above):
            continue
        first, peak = above[0], int(np.argmax(ys))
        # Where the curve leaves the panel: an arrow head on the top edge.
        ax.plot([xs[first]], [1 - _EDGE], marker="^", color=color, markersize=8, linestyle="none",
                clip_on=False, transform=ax.get_xaxis_transform(), gid=f"clipped:seed {entry.seed}")
        notes.append(f"seed {entry.seed}: up to {_fmt(ys[peak])} at {'lr' if x == 'lr' else 'momentum'} "
                     f"{_fmt(xs[peak])}")
    if notes:
        ax.text(0.02, 0.97, "off scale ▲\n" + "\n".join(notes), transform=ax.transAxes, ha="left", va="top",
                fontsize="x-small", bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.8"})


def _mark_stops(ax: Axes, seeds: Sequence[RangeSeed], curves, colors, x: str) -> None:
    """A cross on each diverged seed's last point (on the top edge if that point is off scale)."""
    top = ax.get_ylim()[1]
    for entry, (xs, ys), color in zip(seeds, curves, colors):
        if entry.diverged is None or not len(xs):
            continue
        on_scale = ys[-1] <= top
        ax.plot([xs[-1]], [ys[-1] if on_scale else 1 - _EDGE], marker="X", color=color, markersize=9,
                markeredgecolor="black", linestyle="none", clip_on=False,
                transform=ax.transData if on_scale else ax.get_xaxis_transform(), gid=f"stopped:seed {entry.seed}")
    stopped = [s for s in seeds if s.diverged is not None]
    if stopped and ax is ax.figure.axes[0]:
        # One legend entry for the crosses, naming where each seed stopped.
        where = ", ".join(f"seed {s.seed} at {'lr' if x == 'lr' else 'momentum'} {_fmt(s.diverged.get(x) or math.nan)}"
                          for s in stopped)
        ax.plot([], [], marker="X", color="0.5", markeredgecolor="black", linestyle="none", markersize=9,
                label=f"diverged: {where}")


def _median(values: Sequence[float]) -> float:
    return float(np.median(values))


def _draw_bounds(axes: Sequence[Axes], bounds: Mapping[str, Any], seeds: Sequence[RangeSeed]) -> None:
    rule = bounds.get("chosen_rule", "chosen rule")
    for key in ("base_lr", "max_lr"):
        value = bounds.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"bounds: {key!r} must be a number or null, got {value!r}")
    max_lr, base_lr = bounds.get("max_lr"), bounds.get("base_lr")
    combined = bounds.get("n_seeds")
    how = (f"median of {bounds.get('n_seeds_with_bounds', combined)} seeds' {rule}" if combined and combined > 1
           else f"{rule}" + (f", seed {seeds[0].seed}" if len(seeds) == 1 else ""))
    if max_lr is not None:
        for i, ax in enumerate(axes):
            ax.axvline(max_lr, color="black", linestyle="--", linewidth=1.2,
                       label=f"max_lr used: {_fmt(max_lr)} ({how})" if i == 0 else None)
    if base_lr is not None:
        ratio = f" = max_lr / {max_lr / base_lr:.3g} ({bounds.get('policy_kind', '')})" if max_lr and base_lr else ""
        for i, ax in enumerate(axes):
            ax.axvline(base_lr, color="black", linestyle=":", linewidth=1.2,
                       label=f"base_lr used: {_fmt(base_lr)}{ratio}" if i == 0 else None)


def _suggestions_by_rule(seeds: Sequence[RangeSeed],
                         bounds: Mapping[str, Any]) -> dict[str, list[tuple[Any, float | None]]]:
    """rule -> [(seed, its max_lr or None)], from the seeds' own bounds.json suggestions (or, for
    a single bounds file without seeds, its `suggestions`, under seed None)."""
    per_seed = [(s.seed, s.suggestions) for s in seeds if s.suggestions is not None]
    if not per_seed and bounds.get("suggestions"):
        per_seed = [(None, bounds["suggestions"])]
    for _, suggestions in per_seed:
        if not isinstance(suggestions, Mapping):
            raise ValueError(f"bounds: 'suggestions' must be a mapping of rule -> suggestion, got {suggestions!r}")
        for name, suggestion in suggestions.items():
            if not isinstance(suggestion, Mapping) or "max_lr" not in suggestion:
                raise ValueError(f"bounds: suggestion {name!r} has no 'max_lr' key")
    rules = list(dict.fromkeys(name for _, suggestions in per_seed for name in suggestions))
    return {name: [(seed, suggestions.get(name, {}).get("max_lr")) for seed, suggestions in per_seed]
            for name in rules}


def _draw_suggestion_strip(ax: Axes, suggestions: Mapping[str, list[tuple[Any, float | None]]], chosen: str | None,
                           handles: list[Any], labels: list[str]) -> tuple[list[Any], list[str]]:
    """Each heuristic's max_lr on a row of its own under the accuracy panel: a small open marker
    per seed, a large filled one at the median over the seeds that found one. Returns the legend
    entries with one per rule added, giving the median and every seed's value."""
    palette = sns.color_palette("dark", max(len(suggestions), 1))
    rows = list(suggestions)
    for row, (name, marker, color) in enumerate(zip(rows, itertools.cycle(_SUGGESTION_MARKERS), palette)):
        values = suggestions[name]
        found = [v for _, v in values if v is not None]
        if not found:
            continue
        ax.plot(found, [row] * len(found), marker=marker, markerfacecolor="none", color=color, markersize=6,
                linestyle="none", gid=f"suggestion-seeds:{name}")
        handle, = ax.plot([_median(found)], [row], marker=marker, color=color, markersize=10, linestyle="none",
                          gid=f"suggestion:{name}")
        if len(values) == 1:
            where = "" if values[0][0] is None else f" (seed {values[0][0]})"
            text = f"{name}: {_fmt(found[0])}{where}"
        else:
            each = ", ".join(_fmt(v) if v is not None else "none" for _, v in values)
            text = f"{name}: {_fmt(_median(found))} ({each})"
        handles.append(handle)
        labels.append(text + (", the rule used" if name == chosen else ""))
    # Rows are told apart by their markers (the legend names them): tick labels here would
    # widen this column and shrink the accuracy panel above.
    ax.set_yticks(range(len(rows)), [""] * len(rows))
    ax.set_ylim(len(rows) - 0.5, -0.5)
    seeds = "each seed" if any(len(v) > 1 for v in suggestions.values()) else "the seed"
    ax.set_title(f"max_lr by rule: filled = median, open = {seeds}; legend: median (seeds)", fontsize="x-small",
                 loc="left")
    ax.tick_params(labelbottom=False)
    return handles, labels
