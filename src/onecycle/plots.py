"""Figures of the replication report, each the counterpart of a figure in Smith's papers.

Figures are built on `matplotlib.figure.Figure` objects, never through pyplot: no global
figure registry to leak from a long workflow, and no backend switch at import time (the Agg
canvas is used on save). Each figure is written as PNG (for the report) and PDF (for papers),
atomically through onecycle.io, with no creation date in the PDF so that a rerun on the same
results gives the same bytes.

Several seeds are drawn as their mean with a min-max band on a common x grid. A seed that
diverged contributes only where it has finite values: its curve stops where it stopped, and is
never padded (docs/design.md §6 and §11: divergence must not be hidden by padding).
"""

from __future__ import annotations

import contextlib
import itertools
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from onecycle import io
from onecycle.range_test_plot import choose_scale

# Titles quote whole `replicates` strings; wrapped at this many characters they fit the figure.
TITLE_WIDTH = 70

_SUGGESTION_MARKERS = ("v", "^", "D", "s", "P", "X", "*", "o")


@contextlib.contextmanager
def _style() -> Iterator[None]:
    # Temporary rc settings only: importing or calling this module leaves global state alone.
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.2):
        yield


def _save(fig: Figure, out_stem: Path) -> list[Path]:
    out_stem = Path(out_stem)
    paths = []
    for suffix, extra in ((".png", {"dpi": 150}), (".pdf", {"metadata": {"CreationDate": None}})):
        target = out_stem.parent / f"{out_stem.name}{suffix}"
        with io.atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], **extra)
        paths.append(target)
    return paths


def _finish(ax: Axes, *, empty: bool, legend_loc: str) -> None:
    """Legend where there is something to label; a visible note where there is no data yet.

    A report rebuilt while runs are still pending must still produce its figure files (the
    workflow declares them), so an empty input draws an empty, labelled figure, not an error.
    """
    if empty:
        ax.text(0.5, 0.5, "no finished runs yet", transform=ax.transAxes, ha="center", va="center")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=legend_loc, fontsize="small")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column {missing[0]!r} (has: {', '.join(map(str, frame.columns))})")


def _finite_curve(frame: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) points where both are finite, sorted by x; NaN tails and NaN gaps between
    periodic evaluations drop out."""
    xs = pd.to_numeric(frame[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(frame[y], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    order = np.argsort(xs[keep], kind="stable")
    return xs[keep][order], ys[keep][order]


def _seed_curves(frames: Sequence[pd.DataFrame], x: str, y: str, y_scale: float) -> list[tuple[np.ndarray, ...]]:
    # Sorted by x: a momentum range test may ramp momentum downwards, and interpolation needs x rising.
    curves = [_finite_curve(f, x, y) for f in frames]
    return [(xs[order], ys[order] * y_scale) for xs, ys in curves for order in [np.argsort(xs, kind="stable")]]


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


def plot_range_test(histories: Sequence[pd.DataFrame], bounds: Mapping[str, Any] | None, out_stem: Path,
                    title: str, *, x_scale: str | None = None, x: str = "lr") -> list[Path]:
    """LR range test: smoothed train loss, test loss and test accuracy (%) against LR.

    histories: one range-test history.csv frame per seed. bounds: a bounds.json mapping (or the
    combined bounds of several seeds): `base_lr`/`max_lr` are drawn as vertical lines, and each
    entry of `suggestions` with a `max_lr` as a marker on the loss panel. x_scale: "linear",
    "log", or None to choose with `choose_scale`. x: "lr", or "momentum" for a momentum range
    test (Part 1 Fig 7b: LR held, momentum ramped; no LR bounds then). Returns the written PNG
    and PDF paths.
    """
    if x not in ("lr", "momentum"):
        raise ValueError(f"plot_range_test: x must be 'lr' or 'momentum', got {x!r}")
    panels = (("smoothed_loss", "smoothed train loss", 1.0), ("test_loss", "test loss", 1.0),
              ("test_accuracy", "test accuracy (%)", 100.0))
    for i, history in enumerate(histories):
        _require_columns(history, [x] + [column for column, _, _ in panels], f"range-test history #{i}")
    if x_scale is None:
        x_scale = choose_scale([v for h in histories for v in h[x].to_numpy(dtype=float)])
    if x_scale not in ("linear", "log"):
        raise ValueError(f"plot_range_test: x_scale must be 'linear', 'log' or None, got {x_scale!r}")

    with _style():
        fig = Figure(figsize=(15, 4.5), layout="constrained")
        axes = fig.subplots(1, len(panels), sharex=True)
        color = sns.color_palette("colorblind")[0]
        for ax, (column, label, scale) in zip(axes, panels):
            _draw_mean_band(ax, _seed_curves(histories, x, column, scale), color, "range test")
            ax.set_xscale(x_scale)
            ax.set_xlabel("learning rate" if x == "lr" else "momentum")
            ax.set_ylabel(label)
        if bounds is not None and x == "lr":
            _draw_bounds(axes, axes[0], bounds)
        _finish(axes[0], empty=not histories, legend_loc="best")
        fig.suptitle(textwrap.fill(title, TITLE_WIDTH))
        return _save(fig, out_stem)


def _draw_bounds(axes: Sequence[Axes], marker_ax: Axes, bounds: Mapping[str, Any]) -> None:
    rule = bounds.get("chosen_rule", "chosen rule")
    for key, style in (("base_lr", ":"), ("max_lr", "--")):
        value = bounds.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"bounds: {key!r} must be a number or null, got {value!r}")
        for i, ax in enumerate(axes):
            ax.axvline(value, color="black", linestyle=style, linewidth=1,
                       label=f"{key} = {value:.3g} ({rule})" if i == 0 else None)
    suggestions = bounds.get("suggestions") or {}
    if not isinstance(suggestions, Mapping):
        raise ValueError(f"bounds: 'suggestions' must be a mapping of rule -> suggestion, got {suggestions!r}")
    palette = sns.color_palette("dark", len(suggestions))
    for (name, suggestion), marker, color in zip(suggestions.items(), itertools.cycle(_SUGGESTION_MARKERS), palette):
        if not isinstance(suggestion, Mapping) or "max_lr" not in suggestion:
            raise ValueError(f"bounds: suggestion {name!r} has no 'max_lr' key")
        if suggestion["max_lr"] is None:
            continue
        # Markers sit along the bottom edge (x in data, y in axes units) so they stay visible
        # whatever the loss scale, including past a diverged seed's last point.
        marker_ax.plot([suggestion["max_lr"]], [0.04], marker=marker, color=color, linestyle="none",
                       markersize=8, clip_on=False, transform=marker_ax.get_xaxis_transform(),
                       label=f"{name}: max_lr {suggestion['max_lr']:.3g}")


def plot_accuracy_curves(curves: Mapping[str, Sequence[pd.DataFrame]], traces: Mapping[str, pd.DataFrame] | None,
                         out_stem: Path, title: str) -> list[Path]:
    """Test accuracy (%) against iteration, one mean line with a min-max band per group (the
    shape of SC Fig 1a: 1cycle vs the step baseline), with each group's LR and, where recorded,
    momentum beneath it on shared x axes.

    curves: group -> history.csv frames of its seeds. traces: group -> one train_log.csv frame
    (the schedule is the same for every seed of a group), or None for the accuracy panel only.
    """
    for group, frames in curves.items():
        for i, frame in enumerate(frames):
            _require_columns(frame, ["iteration", "test_accuracy"], f"history #{i} of group {group!r}")
    traces = dict(traces or {})
    for group, frame in traces.items():
        _require_columns(frame, ["iteration", "lr"], f"train log of group {group!r}")
    with_momentum = any("momentum" in f and pd.to_numeric(f["momentum"], errors="coerce").notna().any()
                        for f in traces.values())
    trace_panels = (["lr"] + (["momentum"] if with_momentum else [])) if traces else []

    groups = list(dict.fromkeys([*curves, *traces]))
    colors = dict(zip(groups, sns.color_palette("colorblind", len(groups))))
    with _style():
        fig = Figure(figsize=(8, 5 + 1.6 * len(trace_panels)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1 + len(trace_panels), 1, sharex=True,
                                          height_ratios=[3] + [1] * len(trace_panels)))
        for group, frames in curves.items():
            _draw_mean_band(axes[0], _seed_curves(frames, "iteration", "test_accuracy", 100.0), colors[group], group)
        axes[0].set_ylabel("test accuracy (%)")
        _finish(axes[0], empty=not curves, legend_loc="lower right")
        for ax, column in zip(axes[1:], trace_panels):
            for group, frame in traces.items():
                if column in frame:
                    ax.plot(*_finite_curve(frame, "iteration", column), color=colors[group], label=group)
            ax.set_ylabel("learning rate" if column == "lr" else "momentum")
        axes[-1].set_xlabel("iteration")
        fig.suptitle(textwrap.fill(title, TITLE_WIDTH))
        return _save(fig, out_stem)


def plot_comparison(runs: pd.DataFrame, x: str, out_stem: Path, title: str, *,
                    y: str = "final_accuracy", hue: str | None = None) -> list[Path]:
    """Final accuracy against one setting (weight decay, momentum, batch size...): one point per
    seed and the mean over completed seeds per setting value; diverged runs are marked with a
    cross on the bottom edge, since they have no final accuracy to place them by.

    runs: onecycle.aggregate.collect_runs output (needs columns x, y, `status`). hue: optional
    column splitting the runs into series (e.g. `group`). A numeric x spanning more than two
    decades (weight decay) gets a log axis; a text x is placed in order of appearance.
    """
    _require_columns(runs, [x, y, "status"] + ([hue] if hue else []), f"plot_comparison({title!r}) runs")
    numeric_x = pd.api.types.is_numeric_dtype(runs[x])
    if numeric_x:
        positions = runs[x].astype(float)
    else:
        categories = list(dict.fromkeys(runs[x].astype(str)))
        positions = runs[x].astype(str).map({c: float(i) for i, c in enumerate(categories)})
    frame = runs.assign(_x=positions)
    series = list(dict.fromkeys(frame[hue])) if hue else ([None] if len(frame) else [])
    colors = sns.color_palette("colorblind", len(series))

    with _style():
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        for value, color in zip(series, colors):
            part = frame if value is None else frame[frame[hue] == value]
            completed = part[part["status"] == "completed"]
            label = None if value is None else str(value)
            ax.scatter(completed["_x"], completed[y], color=color, alpha=0.6, s=25,
                       label=f"{label}: seeds" if label else "seeds")
            means = completed.groupby("_x", sort=True)[y].mean()
            ax.plot(means.index, means.to_numpy(), color=color, marker="o", markersize=7,
                    label=f"{label}: mean" if label else "mean")
            diverged = part[part["status"] == "diverged"]
            if len(diverged):
                ax.plot(diverged["_x"], np.full(len(diverged), 0.03), color=color, marker="x",
                        markersize=9, linestyle="none", clip_on=False, transform=ax.get_xaxis_transform(),
                        label=f"{label}: diverged" if label else "diverged")
        if numeric_x and choose_scale(frame["_x"].tolist()) == "log":
            ax.set_xscale("log")
        if not numeric_x:
            ax.set_xticks(range(len(categories)), categories)
        ax.set_xlabel(x)
        ax.set_ylabel("final test accuracy (%)" if y == "final_accuracy" else y)
        _finish(ax, empty=runs.empty, legend_loc="best")
        fig.suptitle(textwrap.fill(title, TITLE_WIDTH))
        return _save(fig, out_stem)


def plot_bounds_study(scored: pd.DataFrame, grid: pd.DataFrame, rules: Mapping[str, Mapping[str, Any]],
                      out_stem: Path, title: str, *, within_pp: float,
                      paper: tuple[float, str] | None = None) -> list[Path]:
    """Final accuracy against max_lr (log axis) in a bounds study (onecycle.bounds_study).

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
        fig.suptitle(textwrap.fill(title, TITLE_WIDTH))
        return _save(fig, out_stem)


def plot_range_test_settings(values: Mapping[str, Mapping[str, Sequence[float]]], rules: Sequence[str],
                             out_stem: Path, title: str) -> list[Path]:
    """Each rule's suggested max_lr (log axis) under each range-test setting: one row per rule,
    one marker per setting at the mean over seeds with a bar from the lowest seed to the highest
    (a std bar would cross zero on the log axis).

    values: setting -> rule -> the seeds' suggestions (onecycle.bounds_study.setting_values).
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
        fig.suptitle(textwrap.fill(title, TITLE_WIDTH))
        return _save(fig, out_stem)


# Verdict colours of the claims scorecard: green/red for the two answers, yellow for "not yet
# decided by the data", grey for no data yet, purple for a divergence (colorblind-safe: the
# words are printed in every cell as well).
VERDICT_COLORS = {"supported": "#1a9850", "contradicted": "#d73027", "inconclusive": "#fee08b",
                  "pending": "#d9d9d9", "diverged": "#8073ac"}


def plot_scorecard(measured: pd.DataFrame, expected: pd.DataFrame | None, out_stem: Path, title: str, *,
                   expected_untested: pd.DataFrame | None = None) -> list[Path]:
    """The claims scorecard as a grid, claims down, dataset / architecture pairs across, each
    cell coloured and labelled by its verdict (onecycle.claims.VERDICTS); blank where the claim
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
        _finish(axes[-1], empty=not rows, legend_loc="best")
        fig.suptitle(textwrap.fill(title, int(TITLE_WIDTH * width / 8)))
        return _save(fig, out_stem)
