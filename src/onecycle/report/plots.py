"""Figures of the replication report, each the counterpart of a figure in Smith's papers.

Figures are built on `matplotlib.figure.Figure` objects, never through pyplot: no global
figure registry to leak from a long workflow, and no backend switch at import time (the Agg
canvas is used on save). Each `*_figure` function returns the Figure (the tests read its axes);
each `plot_*` function draws it and writes it as PNG (for the reports) and PDF (for papers, with
TrueType fonts embedded), atomically through onecycle.io, with no creation date in the PDF so
that a rerun on the same results gives the same bytes.

Every seed is drawn as its own curve: with the two to four seeds the papers and this suite run,
a mean and band would hide which seed did what, and a mean over the seeds still running turns
silently into one seed's curve when the other stops. A seed that diverged stops where it
stopped, marked with a cross, and is never padded (docs/design.md §6 and §11).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from onecycle import io
# When a range test's ramp is not known, its LR axis is log if the LRs span over two decades.
from onecycle.range_test_plot import choose_scale

# A loss panel's y axis ends at this multiple of the largest loss a seed started from. Above
# it the curve is past the useful part: the range test itself stops once the smoothed loss
# exceeds 4x its minimum (onecycle.range_test), and the last iterations' spike (10^3 to 10^5 in
# the smoke run) would otherwise flatten the whole curve to a line at 0. What is cut off is
# marked where it leaves the panel and its largest value is written on the panel.
LOSS_CLIP_FACTOR = 1.5

# Titles quote whole `replicates` strings; wrapped at this many characters per inch of figure
# width (90 on the 12-inch accuracy figure) they fit it.
TITLE_CHARS_PER_INCH = 7.5

# Group colours: qualitative, ten clearly different hues (seaborn's "colorblind" has pairs of
# near-identical oranges and blues among its ten); with more groups the markers still differ.
GROUP_PALETTE = "tab10"
GROUP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
# Seeds of one group share its colour and differ in line style.
SEED_LINESTYLES = ("-", "--", ":", "-.")

_SUGGESTION_MARKERS = ("v", "^", "D", "s", "P", "X", "*", "o", "h", "<")

# Markers on an axis edge sit this far inside it (axes fraction).
_EDGE = 0.03


@contextlib.contextmanager
def _style() -> Iterator[None]:
    # Temporary rc settings only: importing or calling this module leaves global state alone.
    # fonttype 42 embeds TrueType fonts in the PDF (editable, searchable text) instead of Type 3.
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.2), \
            matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
        yield


def _save(fig: Figure, out_stem: Path) -> list[Path]:
    out_stem = Path(out_stem)
    paths = []
    with _style():
        for suffix, extra in ((".png", {"dpi": 150}), (".pdf", {"metadata": {"CreationDate": None}})):
            target = out_stem.parent / f"{out_stem.name}{suffix}"
            with io.atomic_path(target) as tmp:
                fig.savefig(tmp, format=suffix[1:], **extra)
            paths.append(target)
    return paths


def _title(title: str, fig: Figure) -> str:
    return textwrap.fill(title, int(TITLE_CHARS_PER_INCH * fig.get_figwidth()))


def _no_data(ax: Axes) -> None:
    """A report rebuilt while runs are still pending must still produce its figure files (the
    workflow declares them), so an empty input draws an empty, labelled figure, not an error."""
    ax.text(0.5, 0.5, "no finished runs yet", transform=ax.transAxes, ha="center", va="center")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column {missing[0]!r} (has: {', '.join(map(str, frame.columns))})")


def _finite_curve(frame: pd.DataFrame, x: str, y: str, y_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) points where both are finite, sorted by x (a momentum range test may ramp
    downwards); NaN tails and the NaN gaps between periodic evaluations drop out."""
    xs = pd.to_numeric(frame[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(frame[y], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    order = np.argsort(xs[keep], kind="stable")
    return xs[keep][order], ys[keep][order] * y_scale


def _fmt(value: float) -> str:
    """A number for a label: 3 significant digits, thousands separated ("7,383", "0.113")."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


# --------------------------------------------------------------------------------------------
# LR range test (CLR §3.3; Part 1 Fig 1a, 4, 14; SC Fig 2)
# --------------------------------------------------------------------------------------------

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

    bounds: the combined bounds training used (onecycle.range_test.combine_bounds, or one
    seed's bounds.json): `max_lr` and `base_lr` are drawn as vertical lines on every panel,
    labelled with the rule and how the seeds were combined. Each heuristic's suggestion (from
    the seeds' own `suggestions`) is a marker on the accuracy panel's lower edge at the median
    over seeds, its label giving every seed's value. x_scale: "linear" or "log" as the LR was
    ramped (None: `choose_scale`). x: "lr", or "momentum" for a momentum range test (Part 1
    Fig 7b: LR held, momentum ramped; no bounds). Loss axes are clipped by `loss_limits`; what
    is clipped is marked and its largest value written on the panel. The legend sits below
    the panels, off the data.
    """
    if x not in ("lr", "momentum"):
        raise ValueError(f"plot_range_test: x must be 'lr' or 'momentum', got {x!r}")
    panels = (("test_accuracy", "test accuracy (%)", 100.0), ("smoothed_loss", "smoothed train loss", 1.0),
              ("test_loss", "test loss", 1.0))
    for entry in seeds:
        _require_columns(entry.history, [x] + [column for column, _, _ in panels], f"range-test history of seed {entry.seed}")
    if x_scale is None:
        x_scale = choose_scale([v for s in seeds for v in s.history[x].to_numpy(dtype=float)])
    if x_scale not in ("linear", "log"):
        raise ValueError(f"plot_range_test: x_scale must be 'linear', 'log' or None, got {x_scale!r}")

    suggestions = _suggestions_by_rule(seeds, bounds) if bounds else {}
    with _style():
        fig = Figure(figsize=(14, 7.4 if suggestions else 6.0), layout="constrained")
        grid = fig.add_gridspec(2 if suggestions else 1, len(panels), height_ratios=[4, 1.8] if suggestions else [1])
        axes = [fig.add_subplot(grid[0, 0])]
        axes += [fig.add_subplot(grid[0, i], sharex=axes[0]) for i in range(1, len(panels))]
        colors = sns.color_palette(GROUP_PALETTE, max(len(seeds), 1))
        for ax, (column, label, scale) in zip(axes, panels):
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
        if bounds:
            _draw_bounds(axes, bounds, seeds)
        handles, labels = _unique_legend(fig)
        if suggestions:
            strip = fig.add_subplot(grid[1, 0], sharex=axes[0])
            for key, style in (("max_lr", "--"), ("base_lr", ":")):
                if bounds.get(key) is not None:
                    strip.axvline(bounds[key], color="black", linestyle=style, linewidth=1.2)
            handles, labels = _draw_suggestion_strip(strip, suggestions, bounds.get("chosen_rule"), handles, labels)
            holder = fig.add_subplot(grid[1, 1:])
            holder.axis("off")
            holder.legend(handles, labels, loc="center", ncol=2, fontsize="small", frameon=False)
        elif handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
        ramp = f"{x_scale} {'LR' if x == 'lr' else 'momentum'} axis, as ramped"
        fig.suptitle(_title(f"{title} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}; {ramp})", fig))
        return fig


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


def _suggestions_by_rule(seeds: Sequence[RangeSeed], bounds: Mapping[str, Any]) -> dict[str, list[tuple[Any, float | None]]]:
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


def _unique_legend(fig: Figure) -> tuple[list[Any], list[str]]:
    handles, labels = {}, []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    return [handles[label] for label in labels], labels


# --------------------------------------------------------------------------------------------
# Accuracy vs iteration (SC Fig 1a, Part 1 Fig 5a, 16a), with the schedule beneath
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunCurve:
    """One training seed: its history.csv and, if it diverged, metrics.json's `diverged`
    record (iteration, epoch, reason)."""

    seed: int
    history: pd.DataFrame
    diverged: Mapping[str, Any] | None = None


def group_styles(groups: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour and a marker per group, distinct for up to 10 groups and distinct pairs beyond."""
    colors = sns.color_palette(GROUP_PALETTE, 10)
    return {group: {"color": colors[i % len(colors)], "marker": GROUP_MARKERS[i % len(GROUP_MARKERS)]}
            for i, group in enumerate(groups)}


def accuracy_figure(curves: Mapping[str, Sequence[RunCurve]], traces: Mapping[str, pd.DataFrame] | None,
                    title: str, *, labels: Mapping[str, str] | None = None) -> Figure:
    """Test accuracy (%) against iteration, every seed of every group (the groups' colours and
    markers from `group_styles`, the seeds' line styles from SEED_LINESTYLES), a diverged seed
    ending in a cross where it stopped, with each group's LR and, where it has one, momentum
    beneath on shared x axes.

    curves: group -> its seeds. traces: group -> the configured schedule over the whole planned
    run (columns iteration, lr, momentum; onecycle.schedules.schedule_frame), or None for the
    accuracy panel only. A trace identical to an earlier group's is drawn dashed over it, so
    neither hides the other. labels: group -> its legend text (e.g. with the LR bounds used).
    """
    for group, runs in curves.items():
        for run in runs:
            _require_columns(run.history, ["iteration", "test_accuracy"], f"history of group {group!r} seed {run.seed}")
    traces = dict(traces or {})
    for group, frame in traces.items():
        _require_columns(frame, ["iteration", "lr"], f"schedule trace of group {group!r}")
    labels = dict(labels or {})
    with_momentum = any("momentum" in f and pd.to_numeric(f["momentum"], errors="coerce").notna().any()
                        for f in traces.values())
    trace_panels = (["lr"] + (["momentum"] if with_momentum else [])) if traces else []
    groups = list(dict.fromkeys([*curves, *traces]))
    styles = group_styles(groups)

    with _style():
        fig = Figure(figsize=(12, 5.2 + 1.7 * len(trace_panels) + 0.22 * len(groups)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1 + len(trace_panels), 1, sharex=True,
                                          height_ratios=[3] + [1] * len(trace_panels)))
        accuracy_ax = axes[0]
        seeds_seen: list[int] = []
        for group, runs in curves.items():
            style = styles[group]
            for run in runs:
                if run.seed not in seeds_seen:
                    seeds_seen.append(run.seed)
                linestyle = SEED_LINESTYLES[seeds_seen.index(run.seed) % len(SEED_LINESTYLES)]
                xs, ys = _finite_curve(run.history, "iteration", "test_accuracy", 100.0)
                accuracy_ax.plot(xs, ys, color=style["color"], linestyle=linestyle, linewidth=1.4,
                                 marker=style["marker"], markersize=5, markevery=max(1, len(xs) // 8),
                                 gid=f"curve:{group}:seed {run.seed}")
                if run.diverged is not None:
                    _mark_divergence(accuracy_ax, run, xs, ys, style["color"], group)
        _accuracy_legend(accuracy_ax, curves, styles, labels, seeds_seen)
        accuracy_ax.set_ylabel("test accuracy (%)")
        if not curves:
            _no_data(accuracy_ax)
        for ax, column in zip(axes[1:], trace_panels):
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
        if trace_panels:
            axes[1].set_title("schedules as configured, over each group's planned iterations", fontsize="small",
                              loc="left")
        axes[-1].set_xlabel("iteration")
        fig.suptitle(_title(title, fig))
        return fig


def plot_accuracy_curves(curves: Mapping[str, Sequence[RunCurve]], traces: Mapping[str, pd.DataFrame] | None,
                         out_stem: Path, title: str, *, labels: Mapping[str, str] | None = None) -> list[Path]:
    """`accuracy_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(accuracy_figure(curves, traces, title, labels=labels), out_stem)


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


def _accuracy_legend(ax: Axes, curves: Mapping[str, Sequence[RunCurve]], styles: Mapping[str, Mapping[str, Any]],
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
        ax.figure.legend(handles, texts, loc="outside lower center", ncol=2, fontsize="small", frameon=False)


# --------------------------------------------------------------------------------------------
# Final accuracy against one setting (Part 1's WD / momentum / batch comparisons, SC Table 1)
# --------------------------------------------------------------------------------------------

def comparison_figure(runs: pd.DataFrame, x: str, title: str, *, y: str = "final_accuracy",
                      hue: str | None = None, labels: Mapping[str, str] | None = None) -> Figure:
    """Final accuracy against one setting: one point per seed and the mean over completed seeds
    per setting value; diverged runs are crosses on the lower edge (no final accuracy to place
    them by).

    A numeric x (weight decay, batch size, epochs) is ordered: a line joins the means, and a
    span of more than two decades gets a log axis. A text x (group names, "0.95-0.85") is
    categorical, placed in order of appearance, and nothing joins its values: a line would
    suggest a trend between settings that have no order. labels: x value -> tick text.
    """
    _require_columns(runs, [x, y, "status"] + ([hue] if hue else []), f"plot_comparison({title!r}) runs")
    labels = dict(labels or {})
    numeric_x = pd.api.types.is_numeric_dtype(runs[x]) and not pd.api.types.is_bool_dtype(runs[x])
    if numeric_x:
        positions = runs[x].astype(float)
    else:
        categories = list(dict.fromkeys(runs[x].astype(str)))
        positions = runs[x].astype(str).map({c: float(i) for i, c in enumerate(categories)})
    frame = runs.assign(_x=positions)
    # Categories get a colour each, as groups do in the other figures; a hue splits into series.
    split = hue or (None if numeric_x else x)
    series = list(dict.fromkeys(frame[split])) if split else ([None] if len(frame) else [])
    styles = group_styles([str(s) for s in series])
    # Several series at one categorical position sit side by side, not on top of each other.
    offsets = {value: (i - (len(series) - 1) / 2) * 0.12 for i, value in enumerate(series)} \
        if hue and not numeric_x else {}

    with _style():
        fig = Figure(figsize=(9, 5.2), layout="constrained")
        ax = fig.subplots()
        for value in series:
            style = styles[str(value)]
            part = frame if value is None else frame[frame[split] == value]
            shift = offsets.get(value, 0.0)
            completed = part[part["status"] == "completed"]
            # Categories are named on the axis; only a hue's series need names in the legend.
            name = f"{value}: " if hue else ""
            ax.scatter(completed["_x"] + shift, completed[y], color=style["color"], alpha=0.55, s=30,
                       marker=style["marker"], label=f"{name}each seed")
            means = completed.groupby("_x", sort=True)[y].mean()
            if numeric_x:
                ax.plot(means.index, means.to_numpy(), color=style["color"], marker=style["marker"], markersize=8,
                        label=f"{name}mean of completed seeds")
            else:
                ax.plot(means.index + shift, means.to_numpy(), color=style["color"], marker="_", markersize=26,
                        markeredgewidth=2.5, linestyle="none", label=f"{name}mean of completed seeds")
            diverged = part[part["status"] == "diverged"]
            if len(diverged):
                ax.plot(diverged["_x"] + shift, np.full(len(diverged), _EDGE), color=style["color"], marker="X",
                        markersize=10, markeredgecolor="black", linestyle="none", clip_on=False,
                        transform=ax.get_xaxis_transform(), label=f"{name}diverged (no final accuracy)")
        if numeric_x and choose_scale(frame["_x"].tolist()) == "log":
            ax.set_xscale("log")
        if not numeric_x:
            ticks = ["\n".join(textwrap.fill(line, 24, break_long_words=False) for line in labels.get(c, c).split("\n"))
                     for c in categories]
            ax.set_xticks(range(len(categories)), ticks)
            ax.set_xlim(-0.6, len(categories) - 0.4)
            ax.grid(False, axis="x")
        ax.set_xlabel(x)
        ax.set_ylabel("final test accuracy (%)" if y == "final_accuracy" else y)
        if runs.empty:
            _no_data(ax)
        handles, texts = _unique_legend(fig)
        if handles:
            fig.legend(handles, texts, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
        fig.suptitle(_title(title, fig))
        return fig


def plot_comparison(runs: pd.DataFrame, x: str, out_stem: Path, title: str, *, y: str = "final_accuracy",
                    hue: str | None = None, labels: Mapping[str, str] | None = None) -> list[Path]:
    """`comparison_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(comparison_figure(runs, x, title, y=y, hue=hue, labels=labels), out_stem)


# The bounds-study figure's grid: the seeds' mean with their min-max band.
def mean_band(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Mean, min and max over seeds on the union of their x values.

    Each seed is interpolated only inside its own x range (NaN outside), so a seed that stopped
    early drops out of the statistics beyond its last point instead of being extended.
    """
    curves = [c for c in curves if len(c[0])]
    if not curves:
        empty = np.array([])
        return empty, empty, empty, empty
    grid = np.unique(np.concatenate([xs for xs, _ in curves]))
    stacked = np.vstack([np.interp(grid, xs, ys, left=np.nan, right=np.nan) for xs, ys in curves])
    present = np.isfinite(stacked)
    count = present.sum(axis=0)
    covered = count > 0
    mean = np.where(covered, np.where(present, stacked, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
    low = np.where(covered, np.where(present, stacked, np.inf).min(axis=0), np.nan)
    high = np.where(covered, np.where(present, stacked, -np.inf).max(axis=0), np.nan)
    return grid, mean, low, high


def _draw_mean_band(ax: Axes, curves: Sequence[tuple[np.ndarray, np.ndarray]], color: Any,
                    label: str | None) -> None:
    seeds = [(xs, ys) for xs, ys in curves if len(xs)]
    if not seeds:
        return
    grid, mean, low, high = mean_band(seeds)
    if len(seeds) > 1:
        label = f"{label} (mean of {len(seeds)}, min-max band)" if label else None
        ax.fill_between(grid, low, high, color=color, alpha=0.25, linewidth=0)
        # Where a seed stops early (diverged) the mean is over fewer seeds from there on and
        # may jump: mark the stop so the jump is not read as a feature of the curve.
        stops = [(xs[-1], ys[-1]) for xs, ys in seeds if xs[-1] < grid[-1]]
        if stops:
            ax.plot(*zip(*stops), color=color, marker="x", markersize=8, linestyle="none",
                    label="a seed's curve ends here" if label else None)
    ax.plot(grid, mean, color=color, label=label)



def plot_bounds_study(scored: pd.DataFrame, grid: pd.DataFrame, rules: Mapping[str, Mapping[str, Any]],
                      out_stem: Path, title: str, *, within_pp: float,
                      paper: tuple[float, str] | None = None) -> list[Path]:
    """Final accuracy against max_lr (log axis) in a bounds study (onecycle.experiments.bounds_study).

    scored: the study's runs with `group`, `max_lr`, `status` and `score` (final accuracy %,
    chance for a diverged run). grid: bounds_study.grid_scores. rules: rule -> {"max_lr" (the
    one trained), "accuracy_mean", "accuracy_std", "suggestions" (per range-test seed)}.
    The grid's seeds are dots, their mean a line with a min-max band; diverged runs are crosses
    on the bottom edge; each rule is a marker at the max_lr it trained with its score, a
    horizontal bar over its range-test seeds' suggestions and a vertical one of its score's std;
    the grid's best mean is a dotted line with the `within_pp` band beneath it; the paper's
    bound, (max_lr, label), a dashed vertical line. The top panel shows the whole range, the
    bottom one zooms in on the best few points.
    """
    _require_columns(scored, ["group", "max_lr", "status", "score"], "bounds-study runs")
    _require_columns(grid, ["group", "max_lr", "accuracy_mean"], "bounds-study grid")
    grid_runs = scored[scored["group"].isin(grid["group"])]
    finished = grid[grid["accuracy_mean"].notna()]
    best = finished["accuracy_mean"].max() if len(finished) else np.nan
    with _style():
        fig = Figure(figsize=(9, 10), layout="constrained")
        axes = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.3])
        palette = sns.color_palette("colorblind", len(rules) + 1)
        for ax in axes:
            completed = grid_runs[grid_runs["status"] == "completed"]
            ax.scatter(completed["max_lr"], completed["score"], color=palette[0], s=14, alpha=0.6,
                       label="grid: seeds")
            curves = [(g["max_lr"].to_numpy(dtype=float), g["score"].to_numpy(dtype=float))
                      for _, g in grid_runs.sort_values("max_lr").groupby("seed")]
            _draw_mean_band(ax, curves, palette[0], "grid")
            diverged = scored[scored["status"] == "diverged"]
            if len(diverged):
                ax.plot(diverged["max_lr"], np.full(len(diverged), 0.03), color="black", marker="x",
                        markersize=8, linestyle="none", clip_on=False, transform=ax.get_xaxis_transform(),
                        label=f"diverged runs: {len(diverged)}")
            if np.isfinite(best):
                ax.axhline(best, color=palette[0], linestyle=":", linewidth=1,
                           label=f"grid's best {best:.2f}%")
                ax.axhspan(best - within_pp, best, color=palette[0], alpha=0.12, linewidth=0,
                           label=f"within {within_pp:g} pp of it")
            for (rule, info), marker, color in zip(rules.items(), itertools.cycle(_SUGGESTION_MARKERS), palette[1:]):
                if info.get("max_lr") is None or not np.isfinite(info["max_lr"]):
                    continue
                seeds = [v for v in info.get("suggestions", []) if v is not None]
                x = info["max_lr"]
                # x is the trained median, a float round trip away from the seeds' values.
                xerr = [[max(x - min(seeds), 0.0)], [max(max(seeds) - x, 0.0)]] if seeds else None
                y = info.get("accuracy_mean", np.nan)
                yerr = info.get("accuracy_std", np.nan)
                ax.errorbar([x], [y if np.isfinite(y) else np.nan], xerr=xerr,
                            yerr=[yerr] if np.isfinite(yerr) else None, color=color, marker=marker,
                            markersize=8, capsize=3, linestyle="none", label=f"{rule}: {x:.3g}")
            if paper is not None:
                ax.axvline(paper[0], color="black", linestyle="--", linewidth=1,
                           label=textwrap.fill(f"paper: {paper[0]:g} ({paper[1]})", 60))
            ax.set_xscale("log")
            ax.set_ylabel("final test accuracy (%)")
        if np.isfinite(best):
            # The zoom: from a few points under the grid's best to just above it.
            axes[1].set_ylim(best - max(5 * within_pp, 3.0), best + max(within_pp, 0.5))
            axes[1].set_title("zoom on the best settings", fontsize="small")
        axes[1].set_xlabel("max_lr")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="x-small")
        if scored.empty:
            axes[0].text(0.5, 0.5, "no finished runs yet", transform=axes[0].transAxes, ha="center")
        fig.suptitle(_title(title, fig))
        return _save(fig, out_stem)


def plot_range_test_settings(values: Mapping[str, Mapping[str, Sequence[float]]], rules: Sequence[str],
                             out_stem: Path, title: str) -> list[Path]:
    """Each rule's suggested max_lr (log axis) under each range-test setting: one row per rule,
    one marker per setting at the mean over seeds with a bar from the lowest seed to the highest
    (a std bar would cross zero on the log axis).

    values: setting -> rule -> the seeds' suggestions (onecycle.experiments.bounds_study.setting_values).
    """
    settings = list(values)
    with _style():
        fig = Figure(figsize=(11, 1.5 + 0.6 * len(rules)), layout="constrained")
        ax = fig.subplots()
        colors = sns.color_palette("colorblind", len(settings))
        offsets = np.linspace(-0.3, 0.3, len(settings)) if len(settings) > 1 else [0.0]
        for setting, color, marker, offset in zip(settings, colors, itertools.cycle(_SUGGESTION_MARKERS), offsets):
            xs, ys, low, high = [], [], [], []
            for i, rule in enumerate(rules):
                seeds = np.asarray(values[setting].get(rule, []), dtype=float)
                if len(seeds):
                    mean = seeds.mean()
                    xs.append(mean), ys.append(i + offset)
                    # Equal seeds can average a rounding error outside themselves ((3a)/3 != a):
                    # an error bar must not be negative.
                    low.append(max(mean - seeds.min(), 0.0)), high.append(max(seeds.max() - mean, 0.0))
            ax.errorbar(xs, ys, xerr=[low, high], color=color, marker=marker, linestyle="none", capsize=2,
                        markersize=6, label=setting)
        ax.set_yticks(range(len(rules)), rules)
        ax.set_ylim(len(rules) - 0.5, -0.5)
        ax.set_xlabel("suggested max_lr (mean, bar: lowest to highest range-test seed)")
        if any(values[s].get(r) for s in settings for r in rules):
            ax.set_xscale("log")  # a log axis without data has no ticks to draw
        else:
            ax.text(0.5, 0.5, "no finished range tests yet", transform=ax.transAxes, ha="center", va="center")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
        fig.suptitle(_title(title, fig))
        return _save(fig, out_stem)


# Verdict colours of the claims scorecard: green/red for the two answers, yellow for "not yet
# decided by the data", grey for no data yet, purple for a divergence (colorblind-safe: the
# words are printed in every cell as well).
VERDICT_COLORS = {"supported": "#1a9850", "contradicted": "#d73027", "inconclusive": "#fee08b",
                  "pending": "#d9d9d9", "diverged": "#8073ac"}


def plot_scorecard(measured: pd.DataFrame, expected: pd.DataFrame | None, out_stem: Path, title: str, *,
                   expected_untested: pd.DataFrame | None = None) -> list[Path]:
    """The claims scorecard as a grid, claims down, dataset / architecture pairs across, each
    cell coloured and labelled by its verdict (onecycle.report.claims.VERDICTS); blank where the claim
    is not made for that pair. `expected` (same shape: the verdicts the papers' numbers give)
    adds a panel on the left, so a reader sees where ours and the papers' differ; its cells
    that `expected_untested` marks True (point values without a spread, or a verdict stated in
    the config) are hatched: they rest on no test.
    """
    panels = ([("the papers' published numbers", expected)] if expected is not None else []) + [
        ("our runs", measured)]
    rows, columns = list(measured.index), list(measured.columns)
    with _style():
        width = max(4.5, 2.4 + 0.95 * len(columns) * len(panels))
        fig = Figure(figsize=(width, 2.0 + 0.42 * max(len(rows), 1)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
        for ax, (name, verdicts) in zip(axes, panels):
            hatched = expected_untested if verdicts is expected and expected_untested is not None else None
            for i, claim in enumerate(rows):
                for j, pair in enumerate(columns):
                    verdict = verdicts.loc[claim, pair]
                    if pd.isna(verdict):
                        continue
                    untested = hatched is not None and bool(hatched.loc[claim, pair])
                    ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, edgecolor="white",
                                           facecolor=VERDICT_COLORS.get(verdict, "white"),
                                           hatch="///" if untested else None, alpha=0.6 if untested else 1.0))
                    ax.text(j, i, verdict, ha="center", va="center", fontsize=6.5,
                            color="white" if verdict in ("supported", "contradicted", "diverged") and not untested
                            else "black")
            ax.set_xlim(-0.5, len(columns) - 0.5)
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.set_xticks(range(len(columns)), [textwrap.fill(c, 14) for c in columns], rotation=45,
                          ha="right", fontsize="small")
            ax.set_yticks(range(len(rows)), rows, fontsize="small")
            ax.grid(False)
            ax.set_title(name + (" (hatched: no spread published, or stated)" if hatched is not None
                                 and hatched.to_numpy().any() else ""), fontsize="medium")
        if not rows:
            _no_data(axes[-1])
        fig.suptitle(_title(title, fig))
        return _save(fig, out_stem)
