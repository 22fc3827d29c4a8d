"""Final accuracy against one setting (Part 1 Table 2's epoch budgets, its WD / momentum / batch
comparisons, SC Table 1's training-set sizes): each series' mean with its interval and every
seed; or, as SC's limited-data rows read, the candidate minus the baseline at each setting with
the paper's own differences on the same axes.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator

from onecycle.range_test_plot import choose_scale
from onecycle.report import stats
from onecycle.report.figures.style import (_EDGE, _no_data, _require_columns, _save, _style, _title, _unique_legend,
                                           named_styles)

# A comparison's x (a config path) in words, with its unit, for the axis; others print as the path.
AXIS_LABELS = {"data.train_subset": "training images", "train.epochs": "training budget (epochs)",
               "optim.weight_decay": "weight decay", "train.batch_size": "batch size (images)",
               "optim.momentum": "momentum", "group": ""}


def comparison_figure(runs: pd.DataFrame, x: str, title: str, *, y: str = "final_accuracy",
                      hue: str | None = None, labels: Mapping[str, str] | None = None,
                      names: Mapping[str, str] | None = None) -> Figure:
    """Final accuracy against one setting: per series and setting, every completed seed (small,
    faint), their mean with a bar (the two-sided 95 % t interval of the mean from
    stats.MIN_VALUES_FOR_CI seeds on, the seeds' own range below: an interval of two points
    would be a t(0.975, 1) = 12.7 times their spread), and a cross on the lower edge per diverged
    run (no final accuracy to place it by).

    A numeric x (weight decay, batch size, epochs) is ordered: a line joins the means, and a
    span of more than two decades gets a log axis. A text x (group names) is categorical, in
    order of appearance, and nothing joins its values. labels: x value -> tick text. names:
    hue value -> the series' name (the papers' policy names), which picks its colour and marker.
    """
    _require_columns(runs, [x, y, "status"] + ([hue] if hue else []), f"plot_comparison({title!r}) runs")
    labels, names = dict(labels or {}), dict(names or {})
    numeric_x, categories, frame = _placed(runs, x)
    # Categories get a colour each, as groups do in the other figures; a hue splits into series.
    split = hue or (None if numeric_x else x)
    series = list(dict.fromkeys(frame[split])) if split else ([None] if len(frame) else [])
    shown = {value: names.get(str(value), str(value)) for value in series}
    styles = named_styles(list(shown.values()))
    # Several series at one x sit side by side, not on top of each other: 0.12 of a category
    # apart, or 1.2 % of a numeric axis' span (inv and PC-LR both at 85 epochs, 0.01 pp apart).
    span = 0.12 if not numeric_x else 0.012 * (float(frame["_x"].max() - frame["_x"].min()) if len(frame) else 0.0)
    # (On a log axis, where an added offset would mean nothing, they stay where they are.)
    log_x = numeric_x and choose_scale(frame["_x"].tolist()) == "log"
    offsets = {value: (i - (len(series) - 1) / 2) * span for i, value in enumerate(series)} \
        if hue and not log_x else {}
    with _style():
        fig = Figure(figsize=(9, 5.4), layout="constrained")
        ax = fig.subplots()
        for value in series:
            part = frame if value is None else frame[frame[split] == value]
            _draw_series(ax, part, y, styles[shown[value]], offsets.get(value, 0.0),
                         f"{shown[value]}: " if hue else "", numeric_x)
        _label_axes(ax, frame, x, y, categories, labels)
        if runs.empty:
            _no_data(ax)
        handles, texts = _unique_legend(fig)
        if handles:
            handles.append(Line2D([], [], color="0.5", alpha=0.35, marker="o", linestyle="none"))
            texts.append("faint: each completed seed")
            fig.legend(handles, texts, loc="outside lower center", ncol=2, fontsize="small", frameon=False)
        fig.suptitle(_title(title, fig))
        return fig


def _placed(runs: pd.DataFrame, x: str) -> tuple[bool, list[str] | None, pd.DataFrame]:
    """Whether x is numeric, its categories in order of appearance (None for a numeric x), and
    `runs` with each run's position on the x axis as column `_x` (a category's index)."""
    numeric_x = pd.api.types.is_numeric_dtype(runs[x]) and not pd.api.types.is_bool_dtype(runs[x])
    categories = None
    if numeric_x:
        positions = runs[x].astype(float)
    else:
        categories = list(dict.fromkeys(runs[x].astype(str)))
        positions = runs[x].astype(str).map({c: float(i) for i, c in enumerate(categories)})
    return numeric_x, categories, runs.assign(_x=positions)


def _interval(values: list[float]) -> tuple[float, float]:
    """The bar of one mean: the 95 % t interval from MIN_VALUES_FOR_CI values on, else the values' range."""
    if len(values) >= stats.MIN_VALUES_FOR_CI and np.std(values) > 0:
        return stats.t_interval(values)
    return min(values), max(values)


def _draw_series(ax: Axes, part: pd.DataFrame, y: str, style: Mapping[str, Any], shift: float, name: str,
                 numeric_x: bool) -> None:
    """One series' runs, `shift` to the side: a faint point per completed seed, the mean per x with
    its bar (joined by a line on a numeric x), a cross per diverged run."""
    completed = part[part["status"] == "completed"]
    ax.scatter(completed["_x"] + shift, completed[y], color=style["color"], alpha=0.35, s=16,
               marker=style["marker"])
    groups = completed.groupby("_x", sort=True)[y]
    means = groups.mean()
    bars = np.array([_interval(list(v)) for _, v in groups]).reshape(-1, 2)
    wide = min((len(v) for _, v in groups), default=0) >= stats.MIN_VALUES_FOR_CI
    bar = "95 % t interval of the mean" if wide else "the seeds' range"
    centre = means.to_numpy()
    ax.errorbar(means.index + shift, centre, yerr=[centre - bars[:, 0], bars[:, 1] - centre],
                color=style["color"], marker=style["marker"], markersize=8, capsize=4, elinewidth=1.6,
                linestyle="-" if numeric_x else "none", label=f"{name}mean, bar: {bar}")
    diverged = part[part["status"] == "diverged"]
    if len(diverged):
        ax.plot(diverged["_x"] + shift, np.full(len(diverged), _EDGE), color=style["color"], marker="X",
                markersize=10, markeredgecolor="black", linestyle="none", clip_on=False,
                transform=ax.get_xaxis_transform(), label=f"{name}diverged (no final accuracy)")


def _label_axes(ax: Axes, frame: pd.DataFrame, x: str, y: str, categories: list[str] | None,
                labels: Mapping[str, str]) -> None:
    """A numeric x's scale (log over two decades), a categorical x's ticks (`labels`' texts,
    wrapped), and the axis labels."""
    if categories is None and choose_scale(frame["_x"].tolist()) == "log":
        ax.set_xscale("log")
    if categories is not None:
        ticks = ["\n".join(textwrap.fill(line, 24, break_long_words=False) for line in labels.get(c, c).split("\n"))
                 for c in categories]
        ax.set_xticks(range(len(categories)), ticks)
        ax.set_xlim(-0.6, len(categories) - 0.4)
        ax.grid(False, axis="x")
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel("final test accuracy (%)" if y == "final_accuracy" else y)


def plot_comparison(runs: pd.DataFrame, x: str, out_stem: Path, title: str, *, y: str = "final_accuracy",
                    hue: str | None = None, labels: Mapping[str, str] | None = None,
                    names: Mapping[str, str] | None = None) -> list[Path]:
    """`comparison_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(comparison_figure(runs, x, title, y=y, hue=hue, labels=labels, names=names), out_stem)


# Several series at one setting sit this far apart on the log2 axis (a fraction of a halving),
# so their bars do not hide each other.
SERIES_SPREAD_LOG2 = 0.12


def difference_figure(ours: pd.DataFrame | Mapping[str, pd.DataFrame], paper: pd.DataFrame | None, x: str,
                      title: str, *, candidate: str, baseline: str, paper_name: str = "paper",
                      margin_pp: float | None = None) -> Figure:
    """Candidate minus baseline final accuracy (pp) against the setting x, on a log2 axis ticked
    at every setting (halving training sets sit evenly): ours as the paired mean with the claims'
    one-sided bounds as its bar (aggregate.paired_by_x), the paper's point values
    (context.paper_differences) as open diamonds on the same axes, 0 and the claims' margin as
    horizontal lines. candidate, baseline: the series' names (CLR, PC-LR). `ours` may be several
    series, {label: frame} (e.g. one per protocol setting), each in its own colour and marker,
    side by side at each setting."""
    # One series is drawn in the candidate's style; several, each in its own.
    single = isinstance(ours, pd.DataFrame)
    series = {"ours": ours} if single else dict(ours)
    for frame in series.values():
        _require_columns(frame, ["x", "n", "mean_diff", "lower_bound_pp", "upper_bound_pp"], "difference figure")
    styles = {"ours": named_styles([candidate])[candidate]} if single else named_styles(list(series))
    with _style():
        fig = Figure(figsize=(9, 5.4), layout="constrained")
        ax = fig.subplots()
        ax.axhline(0.0, color="0.4", linewidth=1)
        if margin_pp is not None:
            ax.axhline(-margin_pp, color="0.4", linewidth=1, linestyle=":",
                       label=f"-{margin_pp:g} pp: the claims' margin for 'matches'")
        xs_ours = set()
        for index, (label, frame) in enumerate(series.items()):
            style = styles[label]
            finite = frame[np.isfinite(frame["mean_diff"].astype(float))]
            low = finite["lower_bound_pp"].fillna(finite["mean_diff"])
            high = finite["upper_bound_pp"].fillna(finite["mean_diff"])
            n = ", ".join(sorted({str(v) for v in finite["n"]}))
            shift = 2 ** (SERIES_SPREAD_LOG2 * (index - (len(series) - 1) / 2))
            ax.errorbar(finite["x"] * shift, finite["mean_diff"],
                        yerr=[finite["mean_diff"] - low, high - finite["mean_diff"]],
                        color=style["color"], marker=style["marker"], markersize=9, capsize=5, elinewidth=1.8,
                        label=f"{label}: mean of the paired seeds (n = {n}), bar: one-sided 95 % bounds (the claims')")
            xs_ours |= set(finite["x"].astype(float))
        if paper is not None and len(paper):
            ax.plot(paper["x"], paper["difference_pp"], color="black", marker="D", markerfacecolor="white",
                    markersize=8, linestyle=":", label=f"{paper_name}: published point values (no spread)")
        xs = sorted({*xs_ours, *(paper["x"].astype(float) if paper is not None else [])})
        if xs:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(xs))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticks(xs, [_thousands(v) for v in xs], rotation=30 if len(xs) > 6 else 0)
            ax.set_xlim(xs[0] / 2 ** 0.4, xs[-1] * 2 ** 0.4)
        else:
            _no_data(ax)
        ax.set_xlabel(AXIS_LABELS.get(x, x) + " (log scale)")
        ax.set_ylabel(f"{candidate} - {baseline},\nfinal test accuracy (pp)")
        fig.legend(*_unique_legend(fig), loc="outside lower center", ncol=1, fontsize="small", frameon=False)
        fig.suptitle(_title(title, fig))
        return fig


def _thousands(value: float) -> str:
    """10000 -> "10 000": the papers' and docs' way of writing sizes."""
    return f"{value:,.0f}".replace(",", " ") if math.isfinite(value) else ""


def plot_difference(ours: pd.DataFrame, paper: pd.DataFrame | None, x: str, out_stem: Path, title: str,
                    **options: Any) -> list[Path]:
    """`difference_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(difference_figure(ours, paper, x, title, **options), out_stem)
