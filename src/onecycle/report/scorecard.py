"""The suite's scorecard: every claim x dataset/architecture pair -> verdict, as a table and a figure.

Built from the experiments' claims tables (tables/<experiment>_claims.csv, onecycle.report.claims), never
from the runs again, so the scorecard and the per-experiment tables cannot disagree. Rows are
claim ids (the same id in several experiments is the same statement, e.g. `budget`), columns the
dataset / architecture each experiment trains; a cell holds the verdict of our runs and, where
the papers' numbers give one, theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from onecycle.report import claims
from onecycle.experiments.expansion import Plan
from onecycle.report.figures.scorecard import plot_scorecard
from onecycle.report.outputs import scorecard_outputs
from onecycle.report.tables import write_table



def pair_label(plan: Plan, experiment: str) -> str:
    """'dataset / arch' of the experiment's training runs (e.g. 'cifar10 / wide32')."""
    config = plan.experiment_trains(experiment)[0].config
    return f"{config['data']['dataset']} / {config['model']['arch']}"


def collect(plan: Plan, tables: Mapping[str, Path]) -> pd.DataFrame:
    """One row per (experiment, claim): pair label, claim id, verdict, expected verdict.

    Two experiments on the same pair that state the same claim id keep separate columns,
    labelled with the experiment's name as well."""
    rows = []
    for experiment, path in tables.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: claims table of experiment {experiment!r} not written yet "
                                    f"(onecycle report --only claims)")
        table = pd.read_csv(path, keep_default_na=False)
        for row in table.itertuples():
            rows.append({"experiment": experiment, "pair": pair_label(plan, experiment), "claim_id": row.claim_id,
                         "kind": row.kind, "verdict": row.verdict, "expected": row.expected or None,
                         "basis": claims.basis_kind(row.expected_basis) or None})
    frame = pd.DataFrame(rows, columns=["experiment", "pair", "claim_id", "kind", "verdict", "expected", "basis"])
    clash = frame.duplicated(["pair", "claim_id"], keep=False)
    frame.loc[clash, "pair"] = frame.loc[clash, "pair"] + " (" + frame.loc[clash, "experiment"] + ")"
    return frame


def grid(frame: pd.DataFrame, field: str) -> pd.DataFrame:
    """claim id x pair -> `field` ("verdict" or "expected"), in the order claims and pairs first appear."""
    wide = frame.pivot(index="claim_id", columns="pair", values=field)
    return wide.reindex(index=list(dict.fromkeys(frame["claim_id"])), columns=list(dict.fromkeys(frame["pair"])))


# How the papers' verdict was reached, where it is not a test on their published spreads.
_BASIS_NOTE = {"test": "", "point": ", point values", "stated": ", as stated"}


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """The scorecard as text cells: "verdict", or "verdict (paper: expected[, point values])"."""
    measured, expected, basis = grid(frame, "verdict"), grid(frame, "expected"), grid(frame, "basis")
    cells = measured.copy().astype(object)
    for claim in measured.index:
        for pair in measured.columns:
            verdict, paper = measured.loc[claim, pair], expected.loc[claim, pair]
            if pd.isna(verdict):
                cells.loc[claim, pair] = ""
            elif pd.isna(paper):
                cells.loc[claim, pair] = verdict
            else:
                cells.loc[claim, pair] = f"{verdict} (paper: {paper}{_BASIS_NOTE[basis.loc[claim, pair]]})"
    return cells.reset_index().rename(columns={"claim_id": "claim"})


def write_scorecard(plan: Plan, tables: Mapping[str, Path]) -> list[Path]:
    """tables/claims_scorecard.{csv,md,tex} and figures/claims_scorecard.{png,pdf}."""
    paths = scorecard_outputs(plan.results_dir)
    frame = collect(plan, tables)
    source = plan.workflow.results_dir
    write_table(table(frame), paths["scorecard_csv"].with_suffix(""),
                caption=f"Claims scorecard of {source}: our verdict per claim and dataset / "
                        "architecture (paper: the verdict the published numbers give)")
    expected = grid(frame, "expected")
    # The papers' verdicts that rest on no test (point values, or stated) are hatched.
    untested = grid(frame, "basis").isin(["point", "stated"])
    plot_scorecard(grid(frame, "verdict"), None if expected.isna().all().all() else expected,
                   paths["scorecard_png"].with_suffix(""), title=f"Claims scorecard: {source}",
                   expected_untested=untested)
    return list(paths.values())
