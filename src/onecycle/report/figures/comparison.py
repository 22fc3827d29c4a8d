"""Final accuracy against one setting (Part 1's WD / momentum / batch comparisons, SC Table 1):
every seed, the mean over completed seeds, and the diverged runs.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from onecycle.range_test_plot import choose_scale
from onecycle.report.figures.style import (_EDGE, _no_data, _require_columns, _save, _style, _title, _unique_legend,
                                           group_styles)

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
    numeric_x, categories, frame = _placed(runs, x)
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
            part = frame if value is None else frame[frame[split] == value]
            # Categories are named on the axis; only a hue's series need names in the legend.
            _draw_series(ax, part, y, styles[str(value)], offsets.get(value, 0.0), f"{value}: " if hue else "",
                         numeric_x)
        _label_axes(ax, frame, x, y, categories, labels)
        if runs.empty:
            _no_data(ax)
        handles, texts = _unique_legend(fig)
        if handles:
            fig.legend(handles, texts, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
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


def _draw_series(ax: Axes, part: pd.DataFrame, y: str, style: Mapping[str, Any], shift: float, name: str,
                 numeric_x: bool) -> None:
    """One series' runs, `shift` to the side: a point per completed seed, their mean per x
    (joined by a line on a numeric x, a bar on a categorical one), a cross per diverged run."""
    completed = part[part["status"] == "completed"]
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
    ax.set_xlabel(x)
    ax.set_ylabel("final test accuracy (%)" if y == "final_accuracy" else y)


def plot_comparison(runs: pd.DataFrame, x: str, out_stem: Path, title: str, *, y: str = "final_accuracy",
                    hue: str | None = None, labels: Mapping[str, str] | None = None) -> list[Path]:
    """`comparison_figure`, written as <out_stem>.png and .pdf; returns the two paths."""
    return _save(comparison_figure(runs, x, title, y=y, hue=hue, labels=labels), out_stem)
