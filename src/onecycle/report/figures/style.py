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


def group_styles(groups: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A colour and a marker per group, distinct for up to 10 groups and distinct pairs beyond."""
    colors = sns.color_palette(GROUP_PALETTE, 10)
    return {group: {"color": colors[i % len(colors)], "marker": GROUP_MARKERS[i % len(GROUP_MARKERS)]}
            for i, group in enumerate(groups)}


def _unique_legend(fig: Figure) -> tuple[list[Any], list[str]]:
    handles, labels = {}, []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    return [handles[label] for label in labels], labels
