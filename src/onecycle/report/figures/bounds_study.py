"""The bounds study's figures (onecycle.experiments.bounds_study): final accuracy against max_lr
for the grid and each rule, and each rule's suggestion under each range-test setting.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from onecycle.report.figures.style import (_SUGGESTION_MARKERS, _require_columns, _save, _style, _title, mean_band,
                                           named_styles, plain_log_axis)

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
                      out_stem: Path, title: str, *, best_interval: tuple[float, float] | None = None,
                      paper: tuple[float, str] | None = None) -> list[Path]:
    """Final accuracy against max_lr (log axis) in a bounds study (onecycle.experiments.bounds_study).

    scored: the study's runs with `group`, `max_lr`, `status` and `score` (final accuracy %,
    chance for a diverged run). grid: bounds_study.grid_scores. rules: rule -> {"max_lr" (the
    one trained), "accuracy_mean", "accuracy_std", "suggestions" (per range-test seed)}.
    The grid's seeds are dots, their mean a line with a min-max band; diverged runs are crosses
    on the bottom edge; each rule is a marker at the max_lr it trained with its score, a
    horizontal bar over its range-test seeds' suggestions and a vertical one of its score's std;
    the grid's best mean is a dotted line with its seeds' 95 % t interval (`best_interval`) as a
    band; the paper's
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
        # The grid and every rule in their own colour and marker, the same in every figure (style.STYLES).
        styles = named_styles(["grid", *rules])
        for ax in axes:
            _draw_study_panel(ax, scored, grid_runs, rules, styles, best, best_interval, paper)
        if np.isfinite(best):
            # The zoom: from a few points under the grid's best (or its interval) to just above it.
            low, high = best_interval if best_interval and np.isfinite(best_interval[0]) else (best, best)
            axes[1].set_ylim(min(low - 1.0, best - 3.0), max(high, best) + 0.5)
            axes[1].set_title("zoom on the best settings", fontsize="small")
        axes[1].set_xlabel("max_lr, the 1cycle peak LR trained with (log scale)")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="x-small")
        if scored.empty:
            axes[0].text(0.5, 0.5, "no finished runs yet", transform=axes[0].transAxes, ha="center")
        fig.suptitle(_title(title, fig))
        return _save(fig, out_stem)


def _draw_study_panel(ax: Axes, scored: pd.DataFrame, grid_runs: pd.DataFrame, rules: Mapping[str, Mapping[str, Any]],
                      styles: Mapping[str, Mapping[str, Any]], best: float, best_interval: tuple[float, float] | None,
                      paper: tuple[float, str] | None) -> None:
    """One panel of `plot_bounds_study` (both show everything; the caller zooms the second):
    the grid's seeds and mean band, the diverged runs, the grid's best with its band, each
    rule's score and the paper's bound."""
    completed = grid_runs[grid_runs["status"] == "completed"]
    grid_color = styles["grid"]["color"]
    ax.scatter(completed["max_lr"], completed["score"], color=grid_color, s=14, alpha=0.6,
               label="grid: seeds")
    curves = [(g["max_lr"].to_numpy(dtype=float), g["score"].to_numpy(dtype=float))
              for _, g in grid_runs.sort_values("max_lr").groupby("seed")]
    _draw_mean_band(ax, curves, grid_color, "grid")
    diverged = scored[scored["status"] == "diverged"]
    if len(diverged):
        ax.plot(diverged["max_lr"], np.full(len(diverged), 0.03), color="black", marker="x",
                markersize=8, linestyle="none", clip_on=False, transform=ax.get_xaxis_transform(),
                label=f"diverged runs: {len(diverged)}")
    if np.isfinite(best):
        ax.axhline(best, color=grid_color, linestyle=":", linewidth=1,
                   label=f"grid's best {best:.2f}%")
        if best_interval is not None and np.isfinite(best_interval[0]):
            ax.axhspan(*best_interval, color=grid_color, alpha=0.08, linewidth=0,
                       label="its 95 % t interval over seeds")
    _draw_rules(ax, rules, styles)
    if paper is not None:
        ax.axvline(paper[0], color="black", linestyle="--", linewidth=1,
                   label=textwrap.fill(f"paper: {paper[0]:g} ({paper[1]})", 60))
    ax.set_xscale("log")
    plain_log_axis(ax.xaxis, *ax.get_xlim())
    ax.set_ylabel("final test accuracy (%)")


def _draw_rules(ax: Axes, rules: Mapping[str, Mapping[str, Any]], styles: Mapping[str, Mapping[str, Any]]) -> None:
    """Each rule at the max_lr it trained with its score: a horizontal bar over its range-test
    seeds' suggestions, a vertical one of its score's std."""
    for rule, info in rules.items():
        marker, color = styles[rule]["marker"], styles[rule]["color"]
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


def plot_range_test_settings(values: Mapping[str, Mapping[str, Sequence[float]]], rules: Sequence[str],
                             out_stem: Path, title: str) -> list[Path]:
    """Each rule's suggested max_lr (log axis) under each range-test setting: one row per rule,
    one marker per setting at the mean over seeds with a bar from the lowest seed to the highest
    (a std bar would cross zero on the log axis).

    values: setting -> rule -> the seeds' suggestions (onecycle.report.bounds_study.setting_values).
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
        ax.set_xlabel("suggested max_lr (mean over range-test seeds, bar: lowest to highest seed; log scale)")
        if any(values[s].get(r) for s in settings for r in rules):
            ax.set_xscale("log")  # a log axis without data has no ticks to draw
            plain_log_axis(ax.xaxis, *ax.get_xlim())
        else:
            ax.text(0.5, 0.5, "no finished range tests yet", transform=ax.transAxes, ha="center", va="center")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
        fig.suptitle(_title(title, fig))
        return _save(fig, out_stem)
