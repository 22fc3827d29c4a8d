"""The answer of docs/sc_confounds.md on one screen: CLR - PC-LR for each protocol setting of the
super-convergence mirror (configs/sc_mirror.yaml) and its confounds (configs/sc_confounds.yaml),
at each training-set size that has run, with SC's published differences on the same axes.

Reads only committed results (each folder's claims table and scorecard, and the runs'
metrics.json); trains nothing. `make figures` runs it after the folders' reports:

    python scripts/sc_confounds_summary.py

Writes results/sc_confounds/tables/sc_confounds_summary.{csv,md} and
results/sc_confounds/figures/sc_confounds_summary.{png,pdf}. A setting's row appears once its
claim at that size is decided (not "pending"). "Gap change" is the setting's CLR - PC-LR minus
its reference's (the mirror's; for the budget setting, the scaled-LR setting's at 1/4 of the
iterations), paired by seed (the same seed gives both the same initial weights and batch order),
with a two-sided 95 % t interval.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from onecycle import io
from onecycle.report.context import paper_differences
from onecycle.report.figures.comparison import plot_difference
from onecycle.report.published import load_published

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
OUT_TABLES, OUT_FIGURES = RESULTS / "sc_confounds" / "tables", RESULTS / "sc_confounds" / "figures"
STEM = "sc_confounds_summary"
# (label, results folder, experiment, claim-id prefix, reference): the mirror first; each change is
# compared with its reference setting (an index here), which differs from it in one thing.
SETTINGS = (
    ("mirror: SC's LRs at batch 125, Caffe", "sc_mirror", "sc_mirror_resnet20", "sc_budget", None),
    ("LRs / 8 (linear rule), Caffe", "sc_confounds", "sc_confounds_scaled_lr", "sc_scaled_budget", 0),
    ("SC's LRs, PyTorch's semantics", "sc_confounds", "sc_confounds_semantics", "sc_torch_budget", 0),
    ("LRs / 8, 4x the iterations (CLR 1 600 vs PC-LR 6 400)", "sc_confounds", "sc_confounds_budget", "sc_budget4x", 1),
)
# The claims' size suffixes and the training images they stand for (the configs' data.train_subset).
SIZES = {"10k": 10_000, "5k": 5_000, "2.5k": 2_500, "1.25k": 1_250}
CONFIDENCE = 0.95  # the claims' level (configs: claims_confidence default)
MARGIN_PP = 0.5    # the claims' margin for "matches" (configs/sc_mirror.yaml, sc_confounds.yaml)


def final_accuracies(folder: str, experiment: str, group: str) -> dict[int, float]:
    """Final test accuracy (%) of each completed seed of a group, from its metrics.json."""
    found = {}
    for path in sorted((RESULTS / folder / "train" / experiment / group).glob("seed*/metrics.json")):
        metrics = io.read_json_object(path, "metrics file")
        if metrics.get("status") == "completed":
            found[int(path.parent.name.removeprefix("seed"))] = 100 * metrics["final"]["test_accuracy"]
    return found


def seed_gaps(folder: str, experiment: str, size: str) -> dict[int, float]:
    clr, pc = (final_accuracies(folder, experiment, f"{p}_{size}") for p in ("clr", "pc"))
    return {seed: clr[seed] - pc[seed] for seed in sorted(set(clr) & set(pc))}


def gap_change(gaps: dict[int, float], mirror: dict[int, float]) -> tuple[float, float, float, int]:
    """Mean of (setting's gap - mirror's gap) over the seeds both have, and its two-sided t interval."""
    diffs = np.array([gaps[s] - mirror[s] for s in sorted(set(gaps) & set(mirror))])
    if len(diffs) < 2:
        return (float(diffs.mean()) if len(diffs) else math.nan), math.nan, math.nan, len(diffs)
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return float(diffs.mean()), float(diffs.mean() - half), float(diffs.mean() + half), len(diffs)


def summary() -> pd.DataFrame:
    rows = []
    for label, folder, experiment, prefix, reference in SETTINGS:
        tables = RESULTS / folder / "tables"
        claims = pd.read_csv(tables / f"{experiment}_claims.csv").set_index("claim_id")
        card = pd.read_csv(tables / "claims_scorecard.csv").set_index("claim")
        groups = pd.read_csv(tables / f"{experiment}.csv").set_index("group")
        for size, images in SIZES.items():
            claim_id = f"{prefix}_{size}"
            if claim_id not in claims.index or claims.loc[claim_id, "verdict"] == "pending":
                continue
            claim = claims.loc[claim_id]
            change = (math.nan, math.nan, math.nan, 0) if reference is None else gap_change(
                seed_gaps(folder, experiment, size), seed_gaps(*SETTINGS[reference][1:3], size))
            rows.append({
                "setting": label, "experiment": experiment, "images": images, "n": int(claim["n"]),
                "clr_mean": groups.loc[f"clr_{size}", "accuracy_mean"], "clr_std": groups.loc[f"clr_{size}", "accuracy_std"],
                "pc_mean": groups.loc[f"pc_{size}", "accuracy_mean"], "pc_std": groups.loc[f"pc_{size}", "accuracy_std"],
                "difference_pp": claim["estimate"], "lower_bound_pp": claim["lower_bound"],
                "upper_bound_pp": claim["upper_bound"],
                # The verdict as the folder's scorecard shows it: Holm-corrected over its claims.
                "verdict": str(card.loc[claim_id].iloc[0]).split(" (paper:")[0],
                "gap_change_reference": "" if reference is None else SETTINGS[reference][0],
                "gap_change_pp": change[0], "gap_change_low": change[1], "gap_change_high": change[2],
                "gap_change_n": change[3]})
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame) -> str:
    lines = ["CLR - PC-LR final accuracy (pp) on the full 10k Fashion-MNIST test set, ResNet-20, CLR in 400 "
             "iterations vs PC-LR in 1 600 unless the setting says otherwise, per protocol setting and "
             "training-set size (scripts/sc_confounds_summary.py). Bounds: the claims' one-sided 95 % t bounds, "
             "paired over seeds; verdict: each folder's scorecard (Holm over its claims), at this scale only. "
             "Gap change: this setting's difference minus its reference's (the mirror's; the 4x-iterations "
             "setting's is the LRs / 8 setting at 10k), paired by seed, two-sided 95 % t interval.", "",
             "| setting | images | n | CLR (%) | PC-LR (%) | CLR - PC-LR (pp) [bounds] | verdict | gap change vs "
             "its reference (pp) |", "|---|---|---|---|---|---|---|---|"]
    for row in table.itertuples():
        change = "" if math.isnan(row.gap_change_pp) else (
            f"{row.gap_change_pp:+.2f} [{row.gap_change_low:+.2f}, {row.gap_change_high:+.2f}], n = {row.gap_change_n}")
        images = f"{row.images:,}".replace(",", " ")
        lines.append(f"| {row.setting} | {images} | {row.n} | {row.clr_mean:.2f} ± {row.clr_std:.2f} | "
                     f"{row.pc_mean:.2f} ± {row.pc_std:.2f} | {row.difference_pp:+.2f} [{row.lower_bound_pp:+.2f}, "
                     f"{row.upper_bound_pp:+.2f}] | {row.verdict} | {change} |")
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame) -> list[Path]:
    pairs = yaml.safe_load((REPO / "configs" / "sc_mirror.yaml").read_text())[
        "experiments"]["sc_mirror_resnet20"]["compare"]["paper"]
    paper = paper_differences(load_published(), pairs, "data.train_subset", "configs/sc_mirror.yaml compare.paper")
    series = {label: part.rename(columns={"images": "x", "difference_pp": "mean_diff"})
              for label, part in table.groupby("setting", sort=False)}
    return plot_difference(series, paper, "data.train_subset", OUT_FIGURES / STEM,
                           title="CLR - PC-LR against the training images, per protocol setting: the SC mirror and "
                                 "its confounds (Fashion-MNIST / ResNet-20) beside arXiv:1708.07120 Table 1",
                           candidate="CLR", baseline="PC-LR", margin_pp=MARGIN_PP,
                           paper_name="arXiv:1708.07120 Table 1, CIFAR-10 / ResNet-56")


def main() -> None:
    try:
        table = summary()
    except FileNotFoundError as error:  # a folder's report has not been built: say which file, in one line
        raise SystemExit(f"sc_confounds_summary: {error.filename}: not found (run `make figures` first)") from None
    io.write_csv(OUT_TABLES / f"{STEM}.csv", table)
    io.write_text(OUT_TABLES / f"{STEM}.md", _markdown(table))
    for path in [OUT_TABLES / f"{STEM}.csv", OUT_TABLES / f"{STEM}.md", *figure(table)]:
        print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
