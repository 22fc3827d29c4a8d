"""The suite's scorecard: every claim x dataset/architecture pair -> verdict, as a table and a figure.

Built from the experiments' claims tables (tables/<experiment>_claims.csv, onecycle.report.claims), never
from the runs again, so the scorecard and the per-experiment tables cannot disagree. Rows are
claim ids (the same id in several experiments is the same statement, e.g. `budget`), columns the
dataset / architecture each experiment trains; a cell holds the verdict of our runs and, where
the papers' numbers give one, theirs.

Multiplicity: every claim decided by a t bound is a test, and a config tests several. The
scorecard counts them (m) and decides each at family-wise level 1 - claims_confidence with
Holm's step-down correction (stats.holm) on the p of each claim's verdict: a verdict whose
adjusted p is above that level reads "inconclusive after Holm" with the uncorrected one beside
it. The claims tables keep the uncorrected verdict, each with its own test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from onecycle.report import claims, stats
from onecycle.experiments.expansion import Plan
from onecycle.report.context import paper_setting
from onecycle.report.figures.scorecard import plot_scorecard
from onecycle.report.outputs import scorecard_outputs
from onecycle.report.published import load_published
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
                         "basis": claims.basis_kind(row.expected_basis) or None,
                         "p_value": float(row.p_value) if row.p_value != "" else math.nan})
    frame = pd.DataFrame(rows, columns=["experiment", "pair", "claim_id", "kind", "verdict", "expected", "basis",
                                        "p_value"])
    clash = frame.duplicated(["pair", "claim_id"], keep=False)
    frame.loc[clash, "pair"] = frame.loc[clash, "pair"] + " (" + frame.loc[clash, "experiment"] + ")"
    return frame


def holm_corrected(frame: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """`frame` (collect) with `p_holm`, the Holm-adjusted p of each tested claim (stats.holm over the
    m claims whose verdict a t bound decided), and `verdict` as decided at family-wise level
    alpha: a supported or contradicted verdict whose adjusted p exceeds alpha becomes
    "inconclusive after Holm (uncorrected: ...)"."""
    bare = frame["verdict"].map(claims.bare_verdict)
    tested = bare.isin(claims.TESTED) & frame["p_value"].notna()
    adjusted = stats.holm([p if t else math.nan for p, t in zip(frame["p_value"], tested)])
    out = frame.assign(p_holm=adjusted, tested=tested)
    lost = tested & bare.isin(["supported", "contradicted"]) & (out["p_holm"] > alpha)
    out.loc[lost, "verdict"] = "inconclusive after Holm (uncorrected: " + out.loc[lost, "verdict"] + ")"
    return out


def grid(frame: pd.DataFrame, field: str) -> pd.DataFrame:
    """claim id x pair -> `field` ("verdict" or "expected"), in the order claims and pairs first appear."""
    wide = frame.pivot(index="claim_id", columns="pair", values=field)
    return wide.reindex(index=list(dict.fromkeys(frame["claim_id"])), columns=list(dict.fromkeys(frame["pair"])))


# How the papers' verdict was reached, where it is not a test on their published spreads: from
# their point values (no spread published), or stated in the config (`expected:`, read off the
# paper's point values where no published row maps to every group).
_BASIS_NOTE = {"test": "", "point": ", from point values: no test", "stated": ", stated in the config: no test"}


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


def scale_text(plan: Plan) -> str:
    """"At this scale: <pair>: data: ...; net: ..." for every experiment with claims that states
    its departures from the paper; "" if none does."""
    parts = []
    for name, exp in plan.workflow.experiments.items():
        if exp.claims and exp.departures:
            listed = "; ".join(f"{aspect}: {text}" for aspect, text in exp.departures.items())
            parts.append(f"{pair_label(plan, name)} ({name}): {listed}")
    return ("Verdicts 'at this scale' hold for these departures from the paper only. " + " | ".join(parts)) \
        if parts else ""


def multiplicity_text(frame: pd.DataFrame, alpha: float) -> str:
    """How many claims were tested and what Holm's correction did to them."""
    m = int(frame["tested"].sum())
    changed = int(frame["verdict"].str.startswith("inconclusive after Holm").sum())
    return (f"{m} claim(s) tested (a verdict from a t bound); each decided at family-wise level {alpha:g} "
            f"with Holm's step-down correction over the {m}: {changed} verdict(s) of the claims tables "
            "do not survive it") if m else "no claim tested yet: no correction for multiplicity to make"


def write_scorecard(plan: Plan, tables: Mapping[str, Path]) -> list[Path]:
    """tables/claims_scorecard.{csv,md,tex} and figures/claims_scorecard.{png,pdf}."""
    paths = scorecard_outputs(plan.results_dir)
    alpha = round(1 - plan.workflow.claims_confidence, 10)
    frame = holm_corrected(collect(plan, tables), alpha)
    source = plan.workflow.results_dir
    ran = "; ".join(f"{ours}: {theirs}" for ours, theirs in paper_columns(plan, frame).items() if ours != theirs)
    caption = (f"Claims scorecard of {source}: our verdict per claim and dataset / architecture (paper: the "
               f"verdict the paper's own numbers give{f', for what it ran ({ran})' if ran else ''}). "
               f"{multiplicity_text(frame, alpha)}. {scale_text(plan)}")
    write_table(table(frame), paths["scorecard_csv"].with_suffix(""), caption=caption.strip())
    expected = grid(frame, "expected")
    # The papers' verdicts that rest on no test (point values, or stated) are hatched.
    untested = grid(frame, "basis").isin(["point", "stated"])
    shown = frame.assign(verdict=frame["verdict"].map(figure_label))
    plot_scorecard(grid(shown, "verdict"), None if expected.isna().all().all() else expected,
                   paths["scorecard_png"].with_suffix(""), title=f"Claims scorecard: {source}"
                   + (" (ours at this scale)" if scale_text(plan) else ""), expected_untested=untested,
                   paper_columns=paper_columns(plan, frame))
    return list(paths.values())


def paper_columns(plan: Plan, frame: pd.DataFrame) -> dict[str, str]:
    """Our pair label -> what the paper ran ("CIFAR-10 / ResNet-56"), from the published rows
    the experiment cites (its `published` rows and `compare.paper` pairs); our label where it
    cites none, or rows of several settings."""
    published = load_published()
    columns = {}
    for pair, experiment in zip(frame["pair"], frame["experiment"]):
        exp = plan.workflow.experiments[experiment]
        compare = exp.compare.paper if exp.compare is not None else {}
        ids = [*exp.published.values(), *compare, *compare.values()]
        columns[pair] = paper_setting(published, ids, f"experiment {experiment!r}") or pair
    return columns


def figure_label(verdict: str) -> str:
    """A scorecard cell's verdict as the figure prints it: the verdict word, "after Holm" kept."""
    word = claims.bare_verdict(verdict)
    return f"{word}\nafter Holm" if "after Holm" in verdict else word
