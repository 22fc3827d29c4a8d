"""One LR range test on one matplotlib Axes: the library's plot (`RangeTestResult.plot`).

Draws on the `ax` it is given, or on a new `matplotlib.figure.Figure` (never through pyplot:
no global figure registry, no backend switch), and writes no file. The workflow's multi-seed
figure is onecycle.report.figures.range_test.plot_range_test.

A library module: it imports numpy, pandas and matplotlib (onecycle[plots]) only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# A range test whose LRs span more than this many decades is drawn on a log axis; Smith's
# linear ramps (e.g. 0 -> 3, docs/paper_reference.md B2 Fig 2b) start at 0 and stay linear.
LOG_SCALE_DECADES = 2.0

_SUGGESTION_MARKERS = ("v", "^", "D", "s", "P", "X", "*", "o")


def choose_scale(values: Sequence[float]) -> str:
    """"log" when the values span more than two decades and none is <= 0, else "linear"."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(values) == 0 or (values <= 0).any():
        return "linear"
    decades = np.log10(values.max()) - np.log10(values.min())
    # The small slack keeps an exact two-decade span (1e-6..1e-4 is 100.00000000000001x in
    # floating point) on the linear side.
    return "log" if decades > LOG_SCALE_DECADES + 1e-9 else "linear"


def plot_lr_range_test(history: pd.DataFrame, suggestions: Mapping[str, Any] | None = None, *,
                       ax: Axes | None = None, diverged: Mapping[str, Any] | None = None) -> Axes | Figure:
    """Raw and smoothed train loss against LR, the test loss and (right axis) test accuracy
    where evaluated, a marker per rule suggestion on the smoothed curve, and the divergence
    point. A momentum range test (LR held) is drawn against momentum, without suggestions.

    history: RangeTestResult.history; suggestions: RangeTestResult.suggestions (Suggestion
    objects, or bounds.json's mappings with a `max_lr`). Returns `ax` when given, else the new
    Figure.
    """
    _check_arguments(history, ax)
    figure = None
    if ax is None:
        figure = Figure(figsize=(9.5, 4.5), layout="constrained")
        ax = figure.subplots()

    lr = history["lr"].to_numpy(dtype=float)
    momentum_test = len(lr) > 1 and np.all(lr == lr[0])
    x_name = "momentum" if momentum_test else "lr"
    x = history[x_name].to_numpy(dtype=float)
    smoothed = history["smoothed_loss"].to_numpy(dtype=float)
    _draw_losses(ax, history, x_name, x, smoothed, diverged)
    if not momentum_test:
        _draw_suggestions(ax, x, smoothed, suggestions or {})
    if diverged is not None:
        ax.axvline(history[x_name].iloc[-1], color="tab:red", linestyle=":", linewidth=1,
                   label=f"stopped: diverged at {x_name} {history[x_name].iloc[-1]:.3g}")
    handles, labels = _draw_accuracy(ax, history, x_name)
    ax.set_xscale(choose_scale(x))
    ax.set_xlabel("learning rate" if x_name == "lr" else "momentum")
    ax.set_ylabel("loss")
    if figure is None:  # the caller's layout: inside the axes
        ax.legend(handles, labels, loc="best", fontsize="x-small")
        return ax
    figure.legend(handles, labels, loc="outside right upper", fontsize="small")
    return figure


def _check_arguments(history: pd.DataFrame, ax: Axes | None) -> None:
    """The history's columns and `ax`'s type, checked before anything is drawn."""
    missing = [c for c in ("lr", "momentum", "train_loss", "smoothed_loss", "test_loss", "test_accuracy")
               if c not in history.columns]
    if missing:
        raise ValueError(f"history: missing column {missing[0]!r} (a RangeTestResult.history has them all)")
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")


def _draw_losses(ax: Axes, history: pd.DataFrame, x_name: str, x: np.ndarray, smoothed: np.ndarray,
                 diverged: Mapping[str, Any] | None) -> None:
    """The raw and smoothed train loss and the evaluated test loss against `x`, the y range
    set by the losses before any blow-up."""
    ax.plot(x, history["train_loss"].to_numpy(dtype=float), color="tab:blue", alpha=0.25, linewidth=0.8,
            label="train loss")
    ax.plot(x, smoothed, color="tab:blue", label="smoothed train loss")
    evaluated = history.dropna(subset=["test_loss"])
    if len(evaluated):
        ax.plot(evaluated[x_name], evaluated["test_loss"], color="tab:orange", marker=".", label="test loss")
    # The loss at a blow-up dwarfs the curve: the y range is that of the smoothed and test
    # losses before it.
    before = history.iloc[:-1] if diverged is not None and len(history) > 1 else history
    shown = np.concatenate([before["smoothed_loss"].to_numpy(dtype=float),
                            before["test_loss"].to_numpy(dtype=float)])
    shown = shown[np.isfinite(shown)]
    if len(shown):
        low, high = float(shown.min()), float(shown.max())
        pad = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        ax.set_ylim(low - pad, high + pad)


def _draw_accuracy(ax: Axes, history: pd.DataFrame, x_name: str) -> tuple[list[Any], list[str]]:
    """The test accuracy (%) where evaluated, on a right-hand axis; returns the legend entries
    of both axes."""
    accuracy = history.dropna(subset=["test_accuracy"])
    handles, labels = ax.get_legend_handles_labels()
    if len(accuracy):
        twin = ax.twinx()
        twin.plot(accuracy[x_name], 100 * accuracy["test_accuracy"], color="tab:green", marker=".",
                  label="test accuracy")
        twin.set_ylabel("test accuracy (%)")
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    return handles, labels


def _draw_suggestions(ax: Axes, lr: np.ndarray, smoothed: np.ndarray, suggestions: Mapping[str, Any]) -> None:
    """A marker per rule at (its max_lr, the smoothed loss there), as fastai's plot_lr_find."""
    finite = np.isfinite(smoothed)
    # Dark2: eight colours apart from the tab10 ones of the curves.
    colors = itertools.cycle(colormaps["Dark2"].colors)
    markers = itertools.cycle(_SUGGESTION_MARKERS)
    for (name, suggestion), marker, color in zip(suggestions.items(), markers, colors):
        max_lr = suggestion.get("max_lr") if isinstance(suggestion, Mapping) else suggestion.max_lr
        if max_lr is None:
            continue
        loss = np.interp(max_lr, lr[finite], smoothed[finite])
        ax.plot([max_lr], [loss], marker=marker, color=color, linestyle="none", markersize=8,
                label=f"{name}: {max_lr:.3g}")
