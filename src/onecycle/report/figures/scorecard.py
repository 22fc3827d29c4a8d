"""The claims scorecard figure: claims down, dataset / architecture pairs across, a cell per verdict
(onecycle.report.scorecard writes it).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from onecycle.report.figures.style import _no_data, _save, _style, _title

# Verdict colours of the claims scorecard: green/red for the two answers, yellow for "not yet
# decided by the data", grey for no data yet, purple for a divergence (colorblind-safe: the
# words are printed in every cell as well); white for "invalid" and "tiny": no verdict at all.
VERDICT_COLORS = {"supported": "#1a9850", "contradicted": "#d73027", "inconclusive": "#fee08b",
                  "pending": "#d9d9d9", "diverged": "#8073ac", "invalid": "#ffffff", "tiny": "#ffffff"}


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
                    ax.add_patch(Rectangle((j - 0.48, i - 0.48), 0.96, 0.96,
                                           edgecolor="black" if verdict in ("invalid", "tiny") else "white",
                                           facecolor=VERDICT_COLORS.get(verdict.split("\n")[0], "white"),
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
            # Wrapped to the panel's width, so that two panels' titles never run into each other.
            ax.set_title(textwrap.fill(name + (" (hatched: no spread published, or stated)" if hatched is not None
                                               and hatched.to_numpy().any() else ""), 26), fontsize="medium")
        if not rows:
            _no_data(axes[-1])
        fig.suptitle(_title(title, fig))
        return _save(fig, out_stem)
