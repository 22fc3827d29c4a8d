"""What every figure of the report shares: its style, its file writing, its colours and markers.

Figures are built on `matplotlib.figure.Figure` objects, never through pyplot: no global
figure registry to leak from a long workflow, and no backend switch at import time (the Agg
canvas is used on save). `_save` writes a figure as PNG (for the reports) and PDF (for papers,
with TrueType fonts embedded), atomically through onecycle.io, with no creation date in the PDF
so that a rerun on the same results gives the same bytes.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.figure import Figure

from onecycle import io

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

# One colour and marker per schedule policy, by the papers' name (onecycle.report.describe.policy_name),
# and per range-test rule (onecycle.bounds.SUGGESTION_RULES), the same in every figure: a reader
# who learns "CLR is the vermilion triangle" in one figure reads it so in the next. Okabe-Ito's
# colour-blind-safe hues for the policies the papers compare (1cycle, CLR, PC-LR, inv, step);
# the rules take tab10's ten clearly different hues (Smith's two in the dark blue and red, the
# four fastai rules in the greens, purple and brown, the two slope rules in pink and olive).
# The grid of a bounds study is black: it is the reference the rules are scored against.
STYLES: dict[str, dict[str, Any]] = {
    "1cycle": {"color": "#0072B2", "marker": "o"},
    "CLR": {"color": "#D55E00", "marker": "^"},
    "PC-LR": {"color": "#009E73", "marker": "s"},
    "inv": {"color": "#E69F00", "marker": "D"},
    "step": {"color": "#CC79A7", "marker": "v"},
    "fastai 1cycle": {"color": "#56B4E9", "marker": "P"},
    "torch 1cycle": {"color": "#000000", "marker": "X"},
    "fixed": {"color": "#999999", "marker": "h"},
    "smith_accuracy_peak": {"color": "#1f77b4", "marker": "v"},
    "smith_loss_turn_up": {"color": "#d62728", "marker": "^"},
    "fastai_valley": {"color": "#2ca02c", "marker": "D"},
    "fastai_slide": {"color": "#17becf", "marker": "s"},
    "fastai_steep": {"color": "#9467bd", "marker": "P"},
    "fastai_minimum": {"color": "#8c564b", "marker": "X"},
    "steepest_slope_lr": {"color": "#e377c2", "marker": "*"},
    "steepest_slope_log_lr": {"color": "#bcbd22", "marker": "h"},
    "grid": {"color": "#333333", "marker": "o"},
}

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


def plain_log_axis(axis: Any, low: float, high: float) -> None:
    """A log axis from low to high, ticked at 1, 2, 5 per decade (at 1 only over more than two
    decades, where the 2s and 5s would crowd) and labelled in plain numbers ("0.5", "20"), which
    read faster than "5 x 10^-1"; the minor ticks unlabelled."""
    wide = high > 0 and low > 0 and np.log10(high / low) > 2
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _fmt(value: float) -> str:
    """A number for a label: 3 significant digits, thousands separated ("7,383", "0.113")."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def group_styles(groups: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour and a marker per group, distinct for up to 10 groups and distinct pairs beyond."""
    colors = sns.color_palette(GROUP_PALETTE, 10)
    return {group: {"color": colors[i % len(colors)], "marker": GROUP_MARKERS[i % len(GROUP_MARKERS)]}
            for i, group in enumerate(groups)}


def named_styles(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each name's colour and marker from STYLES (a policy's papers' name, a rule, "grid"); a name
    STYLES does not know gets one of `group_styles`' that no known name of `names` uses."""
    known = {name: dict(STYLES[name]) for name in names if name in STYLES}
    taken = {(to_hex(style["color"]), style["marker"]) for style in known.values()}
    spare = [style for style in group_styles([f"spare {i}" for i in range(len(names) + len(taken))]).values()
             if (to_hex(style["color"]), style["marker"]) not in taken]
    unknown = [name for name in dict.fromkeys(names) if name not in STYLES]
    return {name: known.get(name) or spare[unknown.index(name)] for name in names}


def _unique_legend(fig: Figure) -> tuple[list[Any], list[str]]:
    handles, labels = {}, []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    return [handles[label] for label in labels], labels
