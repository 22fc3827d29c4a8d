"""The LR range test figure (CLR §3.3; Part 1 Fig 1a, 4, 14; SC Fig 2): every seed's accuracy
and losses against the LR, the bounds training used, and each heuristic's suggestion.
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

# When a range test's ramp is not known, its LR axis is log if the LRs span over two decades.
from onecycle.range_test_plot import choose_scale
from onecycle.report.figures.style import (_EDGE, _finite_curve, _fmt, _no_data, _require_columns, _save, _style,
                                           _title, _unique_legend, named_styles, plain_log_axis)

# The loss panels are on a log axis (a loss that falls from 2.3 to 0.5 and a divergence spike
# to 10^4 are both losses: a linear axis shows only the spike), ending one decade above the
# largest loss a seed started from. Above it the curve is past the useful part: the range test
# itself stops once the smoothed loss exceeds 4x its minimum (onecycle.range_test), and a
# BN net's test loss spikes to 10^3-10^7 between evaluations (results/sc_mirror,
# results/bounds_study). What is cut off is marked with an arrow where it leaves the panel and
# its largest value is given in the legend, off the curves.
LOSS_CLIP_FACTOR = 10.0

# Seeds in shades of grey with their own line styles: the colours belong to the rules' markers
# and the policies' bounds (style.STYLES), which are what a reader looks for on the curves.
SEED_COLORS = ("#1a1a1a", "#6e6e6e", "#a8a8a8")
SEED_LINESTYLES = ("-", "--", "-.")

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
    """The (log) y range of a loss panel: from a little below the lowest positive loss to a little
    above the highest, but no higher than LOSS_CLIP_FACTOR times the largest loss any seed
    started from (its first finite value). A little: a tenth of a decade."""
    curves = [(xs, ys[ys > 0]) for xs, ys in curves]
    curves = [c for c in curves if len(c[1])]
    if not curves:
        return 0.1, 10.0
    cap = LOSS_CLIP_FACTOR * max(ys[0] for _, ys in curves)
    highest = max(ys.max() for _, ys in curves)
    top = cap if highest > cap else highest * 10 ** 0.1
    bottom = min(ys.min() for _, ys in curves)
    return bottom / 10 ** 0.1, top


def range_test_figure(seeds: Sequence[RangeSeed], bounds: Mapping[str, Any] | None, title: str, *,
                      x_scale: str | None = None, x: str = "lr",
                      trained: Sequence[Mapping[str, Any]] | None = None) -> Figure:
    """LR range test: test accuracy (%), smoothed train loss and test loss (log axes) against the
    LR, one curve per seed, as Smith reads it (accuracy first: his max_lr is where it peaks).

    bounds: the combined bounds training used (onecycle.training.range_test_job.combine_bounds, or one
    seed's bounds.json): `max_lr` and `base_lr` are drawn as vertical lines on every panel,
    labelled with the rule and how the seeds were combined. trained: where training took its
    LRs from elsewhere (the config), each schedule as {"label", "low", "high", "policy"}: its
    LRs drawn as lines in its policy's colour (style.STYLES) instead. Each heuristic's
    suggestion (from the seeds' own `suggestions`) is a marker in a strip under the accuracy
    panel at the median over seeds, its label giving every seed's value. x_scale: "linear" or
    "log" as the LR was ramped (None: `choose_scale`). x: "lr", or "momentum" for a momentum
    range test (Part 1 Fig 7b: LR held, momentum ramped; no bounds). A diverged seed's cross
    is at the LR where it diverged. Loss axes are clipped by `loss_limits`; what is clipped is
    marked and its largest value given in the legend, which sits below the panels.
    """
    x_scale = _checked_scale(seeds, x, x_scale)
    suggestions = _suggestions_by_rule(seeds, bounds or {}) if x == "lr" else {}
    with _style():
        fig = Figure(figsize=(14, 7.6 if suggestions else 6.2), layout="constrained")
        grid = fig.add_gridspec(2 if suggestions else 1, len(_PANELS), height_ratios=[4, 1.9] if suggestions else [1])
        axes = _draw_panels(fig, grid, seeds, x, x_scale)
        if trained:
            _draw_trained(axes, trained)
        elif bounds:
            _draw_bounds(axes, bounds, seeds)
        handles, labels = _unique_legend(fig)
        if suggestions:
            _draw_suggestion_row(fig, grid, axes[0], bounds or {}, suggestions, handles, labels, trained)
        elif handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize="small", frameon=False)
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
    curve, the loss panels on clipped log axes (`_clip_loss_axis`), each diverged seed's stop marked."""
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[0, i], sharex=axes[0]) for i in range(1, len(_PANELS))]
    for ax, (column, label, scale) in zip(axes, _PANELS):
        curves = [_finite_curve(s.history, x, column, scale) for s in seeds]
        for i, (entry, (xs, ys)) in enumerate(zip(seeds, curves)):
            # Evaluations come every few iterations: markers show where they are.
            sparse = column != "smoothed_loss"
            ax.plot(xs, ys, color=_seed_color(i), linestyle=SEED_LINESTYLES[i % len(SEED_LINESTYLES)],
                    marker="o" if sparse else None, markersize=2.5, linewidth=1.3,
                    label=f"seed {entry.seed}", gid=f"curve:{column}:seed {entry.seed}")
        if column != "test_accuracy":
            _clip_loss_axis(ax, seeds, curves, x, label)
        _mark_stops(ax, seeds, curves, x)
        ax.set_ylabel(label + (" (log scale)" if column != "test_accuracy" else ""))
        ax.set_xlabel("learning rate" if x == "lr" else "momentum")
        ax.set_xscale(x_scale)
        if not seeds:
            _no_data(ax)
    return axes


def _seed_color(index: int) -> str:
    return SEED_COLORS[index % len(SEED_COLORS)]


def _draw_suggestion_row(fig: Figure, grid: GridSpec, accuracy_ax: Axes, bounds: Mapping[str, Any],
                         suggestions: Mapping[str, list[tuple[Any, float | None]]], handles: list[Any],
                         labels: list[str], trained: Sequence[Mapping[str, Any]] | None) -> None:
    """The grid's bottom row: under the accuracy panel the suggestion strip, with the bounds
    used as vertical lines; beside it the legend, the strip's entries added to `handles`."""
    strip = fig.add_subplot(grid[1, 0], sharex=accuracy_ax)
    if trained:
        _draw_trained([strip], trained, label=False)
    else:
        for key, style in (("max_lr", "--"), ("base_lr", ":")):
            if bounds.get(key) is not None:
                strip.axvline(bounds[key], color="black", linestyle=style, linewidth=1.2)
    handles, labels = _draw_suggestion_strip(strip, suggestions, bounds.get("chosen_rule"), handles, labels)
    holder = fig.add_subplot(grid[1, 1:])
    holder.axis("off")
    holder.legend(handles, labels, loc="center", ncol=2, fontsize="small", frameon=False)


def plot_range_test(seeds: Sequence[RangeSeed], bounds: Mapping[str, Any] | None, out_stem: Path, title: str, *,
                    x_scale: str | None = None, x: str = "lr",
                    trained: Sequence[Mapping[str, Any]] | None = None) -> list[Path]:
    """`range_test_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(range_test_figure(seeds, bounds, title, x_scale=x_scale, x=x, trained=trained), out_stem)


def _clip_loss_axis(ax: Axes, seeds: Sequence[RangeSeed], curves, x: str, name: str) -> None:
    """A log y axis cut at `loss_limits`; where a seed leaves it, an arrow on the top edge, and a
    legend entry (off the curves) with the largest value it reached and where."""
    low, high = loss_limits(curves)
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis, low, high)
    ax.set_ylim(low, high)
    for i, (entry, (xs, ys)) in enumerate(zip(seeds, curves)):
        above = np.flatnonzero(ys > high)
        if not len(above):
            continue
        first, peak = above[0], int(np.argmax(ys))
        ax.plot([xs[first]], [1 - _EDGE], marker="^", color=_seed_color(i), markersize=8, linestyle="none",
                clip_on=False, transform=ax.get_xaxis_transform(), gid=f"clipped:seed {entry.seed}")
        ax.plot([], [], marker="^", color=_seed_color(i), linestyle="none", markersize=8,
                label=f"{name} off scale, seed {entry.seed}: up to {_fmt(ys[peak])} at "
                      f"{'lr' if x == 'lr' else 'momentum'} {_fmt(xs[peak])}")


def _mark_stops(ax: Axes, seeds: Sequence[RangeSeed], curves, x: str) -> None:
    """A cross at the LR (or momentum) where each diverged seed stopped, as its metrics.json
    records it (its last evaluation may be several iterations earlier), at the curve's last
    value, or on the top edge if that is off scale."""
    top = ax.get_ylim()[1]
    for i, (entry, (xs, ys)) in enumerate(zip(seeds, curves)):
        if entry.diverged is None or not len(xs):
            continue
        where = entry.diverged.get(x)
        stop_x = float(where) if isinstance(where, (int, float)) and math.isfinite(where) else xs[-1]
        on_scale = ys[-1] <= top
        ax.plot([stop_x], [ys[-1] if on_scale else 1 - _EDGE], marker="X", color=_seed_color(i), markersize=9,
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


def _draw_trained(axes: Sequence[Axes], trained: Sequence[Mapping[str, Any]], label: bool = True) -> None:
    """The LRs each training schedule used, on every panel, in its policy's colour: its peak (or
    only LR) dashed, its low end dotted; one legend entry per schedule. An LR beyond the range
    test's own x range (SC's CLR peak 3 on a LeNet test that stopped at 0.14) does not stretch the
    axis: a triangle on the right edge marks it, and the legend says it is off the axis."""
    styles = named_styles(list(dict.fromkeys(t["policy"] for t in trained)))
    low_x, high_x = axes[0].get_xlim()
    for entry in trained:
        color = styles[entry["policy"]]["color"]
        values = [(entry["high"], "--")]
        if entry.get("low") is not None and entry["low"] != entry["high"]:
            values.append((entry["low"], ":"))
        beyond = [v for v, _ in values if not low_x <= v <= high_x]
        text = entry["label"] + (f" ({', '.join(_fmt(v) for v in beyond)} beyond this axis ▶)" if beyond else "")
        for i, ax in enumerate(axes):
            for value, linestyle in values:
                if value in beyond:
                    ax.plot([1 - _EDGE / 2], [0.5], marker=">", color=color, markersize=9, linestyle="none",
                            clip_on=False, transform=ax.transAxes)
                else:
                    ax.axvline(value, color=color, linestyle=linestyle, linewidth=1.4)
            if label and i == 0:
                ax.plot([], [], color=color, linestyle="--", linewidth=1.4, label=f"trained: {text}")
        for ax in axes:
            ax.set_xlim(low_x, high_x)


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
    rows = list(suggestions)
    styles = named_styles(rows)
    for row, name in enumerate(rows):
        marker, color = styles[name]["marker"], styles[name]["color"]
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
