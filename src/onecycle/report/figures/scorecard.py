"""The claims scorecard figure: claims down, dataset / architecture pairs across, a cell per verdict
(onecycle.report.scorecard writes it).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
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
                   expected_untested: pd.DataFrame | None = None,
                   paper_columns: Mapping[str, str] | None = None) -> list[Path]:
    """The claims scorecard as a grid, claims down, dataset / architecture pairs across, each
    cell coloured and labelled by its verdict (onecycle.report.claims.VERDICTS); blank where the claim
    is not made for that pair. `expected` (same shape: the verdicts the papers' numbers give)
    adds a panel on the left, its columns named by `paper_columns` (our pair -> what the paper
    ran, "CIFAR-10 / ResNet-56"), so a reader sees where ours and the papers' differ; its cells
    that `expected_untested` marks True (point values without a spread, or a verdict stated in
    the config) are hatched, with a note under the panels: they rest on no test.
    """
    paper_columns = dict(paper_columns or {})
    panels = ([("the paper's numbers", expected)] if expected is not None else []) + [("our runs", measured)]
    rows, columns = list(measured.index), list(measured.columns)
    hatched_any = expected_untested is not None and expected is not None and bool(expected_untested.to_numpy().any())
    with _style():
        # Two panels need room for their titles side by side; one panel does not.
        width = max(4.5 + 2.5 * (len(panels) - 1), 2.8 + 1.6 * len(columns) * len(panels))
        fig = Figure(figsize=(width, 2.2 + 0.42 * max(len(rows), 1) + 0.4 * hatched_any), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
        for ax, (name, verdicts) in zip(axes, panels):
            paper = verdicts is expected
            _draw_cells(ax, verdicts, rows, columns, expected_untested if paper else None)
            labels = [paper_columns.get(c, c) if paper else c for c in columns]
            ax.set_xticks(range(len(columns)), [textwrap.fill(c, 18) for c in labels],
                          rotation=0 if len(columns) < 3 else 30, ha="center" if len(columns) < 3 else "right",
                          fontsize="small")
            ax.xaxis.tick_top()
            ax.tick_params(length=0)
            ax.set_yticks(range(len(rows)), rows, fontsize="small")
            ax.grid(False)
            ax.set_title(name, fontsize="medium")
        if hatched_any:
            fig.legend([Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.3", hatch="///")],
                       ["hatched: the paper's verdict rests on its point values (no spread published) or is "
                        "stated in the config: not a test"], loc="outside lower center", fontsize="x-small",
                       frameon=False)
        if not rows:
            _no_data(axes[-1])
        fig.suptitle(_title(title, fig))
        return _save(fig, out_stem)


def _draw_cells(ax, verdicts: pd.DataFrame, rows: list[str], columns: list[str],
                hatched: pd.DataFrame | None) -> None:
    """One panel's cells: coloured by verdict, the verdict's words printed in each."""
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
            ax.text(j, i, verdict, ha="center", va="center", fontsize=7.5,
                    color="white" if verdict in ("supported", "contradicted", "diverged") and not untested
                    else "black")
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
