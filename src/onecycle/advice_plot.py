"""What `onecycle.advice.advise` tried, on one matplotlib Axes (`Advice.plot`): the held-out
accuracy of each trial against its max LR, the rules behind each candidate, every range-test
seed's suggestions, the diverged trials and the pick.

Draws on the `ax` it is given, or on a new `matplotlib.figure.Figure` (never through pyplot),
and writes no file. A library module: it imports numpy, pandas and matplotlib (onecycle[plots]).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def plot_advice(trials: pd.DataFrame, suggestions: pd.DataFrame, *, ax: Axes | None = None) -> Axes | Figure:
    """trials: Advice.trials; suggestions: Advice.suggestions. Returns `ax` when given, else the
    new Figure."""
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    figure = None
    if ax is None:
        figure = Figure(figsize=(9.5, 4.5), layout="constrained")
        ax = figure.subplots()
    scored = trials[~trials["diverged"]]
    accuracy = 100 * scored["held_out_accuracy"].to_numpy(dtype=float)
    # Diverged trials and the range tests' suggestions go on a line below the lowest score.
    low = float(accuracy.min() - 0.1 * (np.ptp(accuracy) or 1.0)) if len(accuracy) else 0.0
    for source, marker, fill, label in (("rule", "o", "tab:blue", "trial at a rule's suggestion"),
                                        ("grid", "s", "none", "trial at a grid point")):
        rows = scored[scored["source"] == source]
        ax.plot(rows["max_lr"], 100 * rows["held_out_accuracy"], marker=marker, linestyle="none",
                markerfacecolor=fill, color="tab:blue", label=label)
    for row in scored[scored["source"] == "rule"].itertuples():
        ax.annotate(row.rules.replace(", ", "\n"), (row.max_lr, 100 * row.held_out_accuracy), fontsize="xx-small",
                    xytext=(4, 4), textcoords="offset points")
    diverged = trials[trials["diverged"]]
    if len(diverged):
        ax.plot(diverged["max_lr"], [low] * len(diverged), marker="x", linestyle="none", color="tab:red",
                label="trial diverged")
    # Every range-test seed's suggestions, as ticks along the bottom: their spread is part of the story.
    seeds = suggestions.drop(columns="median").to_numpy(dtype=float).ravel()
    seeds = seeds[np.isfinite(seeds)]
    ax.plot(seeds, [low] * len(seeds), marker="|", markersize=12, linestyle="none", color="tab:gray",
            label="a rule's suggestion on one range test")
    chosen = trials[trials["chosen"]]
    ax.plot(chosen["max_lr"], 100 * chosen["held_out_accuracy"], marker="*", markersize=16, linestyle="none",
            color="tab:orange", label=f"chosen: max_lr {float(chosen['max_lr'].iloc[0]):.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("max LR of the trial's 1cycle")
    ax.set_ylabel("held-out accuracy (%)")
    if figure is None:
        ax.legend(loc="best", fontsize="x-small")
        return ax
    figure.legend(loc="outside right upper", fontsize="small")
    return figure
