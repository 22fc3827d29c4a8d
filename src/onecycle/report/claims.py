"""Smith's claims as tested hypotheses: a verdict per claim, from our runs and from the papers' numbers.

A claim (onecycle.experiments.workflow.Claim, written in an experiment's `claims:`) compares final test
accuracies (percent) of the experiment's groups. Each comparison is a difference d = candidate -
baseline against a threshold theta:

    superior      theta = +margin_pp (default 0)    "candidate is better by more than the margin"
    non_inferior  theta = -margin_pp                "candidate is at most margin_pp worse"
    speedup       theta = -margin_pp, on d_s = (best accuracy the candidate reached by iteration
                  B_s / k) - (the baseline's final accuracy), B_s the baseline's iterations: per
                  seed, from the candidate's evaluation history
    ordering      every group of a tier better than every group of the next tier: superior
                  comparisons, theta = +margin_pp (default 0)

The decision rule. L and U are one-sided lower and upper confidence bounds (each at `confidence`,
default 0.95) on the mean of d (onecycle.report.stats.difference_bounds: a paired t over the seeds when
both groups ran the same seeds, Welch's t where they differ):

    supported     iff L > theta   (the data rule out d <= theta at level 1 - confidence)
    contradicted  iff U < theta   (the data rule out d >= theta at level 1 - confidence)
    inconclusive  otherwise, with what would settle it: the half-width of the bound (the
                  smallest |mean d - theta| these seeds can resolve) and how many seeds per group
                  would, were the mean and spread to stay as observed.

With two seeds the t quantile is 6.31 (one degree of freedom), so a small effect cannot be
supported however it falls. An ordering is supported iff every one of its m comparisons is (an
intersection-union test: level 1 - confidence without correction), and contradicted iff any
one is contradicted at confidence 1 - (1 - confidence) / m (Bonferroni over the m chances).

Runs that are not there make the claim "pending"; a run that diverged makes it "diverged" and is
named. Neither is ever counted as a loss or a win: the statistic beside the verdict is over the
completed runs only, and the note says what they alone would give.

The expected verdict is the same rule applied to the published numbers of the claim's groups
(configs/reference/published.yaml via the experiment's `published:` mapping): Welch's t from the
printed mean, std and run count where the paper gives a spread, else the point values
(supported iff d > theta, contradicted iff d < theta). Groups without a published row take the
claim's `expected:` from the config, if it has one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from onecycle.report import stats
from onecycle.experiments.workflow import Claim, ExperimentConfig

VERDICTS = ("supported", "contradicted", "inconclusive", "pending", "diverged")

# How an expected verdict was obtained (the start of `expected_basis`): a t test on the published
# spreads, a comparison of published point values, or the config's own `expected:`.
BASIS_TEST, BASIS_POINT, BASIS_STATED = "Welch t", "published point values", "stated in the config"

COLUMNS = ("claim_id", "kind", "text", "source", "candidate", "baseline", "groups", "margin_pp", "k",
           "verdict", "expected", "expected_basis", "n", "n_candidate", "n_baseline", "pairing",
           "mean_diff_pp", "lower_bound_pp", "upper_bound_pp", "threshold_pp", "confidence", "df",
           "t_statistic", "resolution_pp", "seeds_to_settle", "slowest_speedup", "diverged_runs",
           "pending_runs", "note")

# What the Markdown and LaTeX tables show; the CSV has every column.
DISPLAY_COLUMNS = ("claim_id", "kind", "candidate", "baseline", "n", "mean_diff_pp", "lower_bound_pp",
                   "upper_bound_pp", "threshold_pp", "verdict", "expected", "note")


@dataclass(frozen=True)
class Comparison:
    """One difference candidate - baseline against its threshold, with its bounds."""

    candidate: str
    baseline: str
    threshold: float
    bounds: stats.DifferenceBounds

    def verdict(self) -> str:
        if self.bounds.lower > self.threshold:
            return "supported"
        if self.bounds.upper < self.threshold:
            return "contradicted"
        return "inconclusive"

    def summary(self) -> str:
        b = self.bounds
        if b.pairing == "none":
            return f"{self.candidate} - {self.baseline}: {b.mean_diff:+.2f} pp, no bound ({b.note})"
        return (f"{self.candidate} - {self.baseline}: {b.mean_diff:+.2f} pp, bounds [{b.lower:+.2f}, "
                f"{b.upper:+.2f}] vs {self.threshold:+.2f}")


def threshold(claim: Claim) -> float:
    """theta of the module docstring, in percentage points."""
    margin = claim.margin_pp or 0.0
    return margin if claim.kind in ("superior", "ordering") else -margin


def tiers(claim: Claim) -> list[list[str]]:
    """An ordering's groups as tiers, best first; a pair claim as [[candidate], [baseline]]."""
    if claim.groups is None:
        return [[claim.candidate], [claim.baseline]]
    return [[entry] if isinstance(entry, str) else list(entry) for entry in claim.groups]


def ordered_pairs(claim: Claim) -> list[tuple[str, str]]:
    """Every (better, worse) pair the claim asserts between adjacent tiers."""
    levels = tiers(claim)
    return [(a, b) for upper, lower in zip(levels, levels[1:]) for a in upper for b in lower]


def order_text(claim: Claim) -> str:
    """'a > {b, c} > d' for an ordering."""
    return " > ".join(t[0] if len(t) == 1 else "{" + ", ".join(t) + "}" for t in tiers(claim))


# --------------------------------------------------------------------------------------------
# From runs
# --------------------------------------------------------------------------------------------

def final_accuracies(runs: pd.DataFrame, group: str) -> dict[int, float]:
    """seed -> final accuracy (percent) of the group's completed runs."""
    done = runs[(runs["group"] == group) & (runs["status"] == "completed")]
    return {int(s): float(a) for s, a in zip(done["seed"], done["final_accuracy"])}


def speedup_values(runs: pd.DataFrame, histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]],
                   claim: Claim) -> tuple[dict[int, float], dict[int, float], list[float], list[str]]:
    """The values a speedup claim compares, per seed, and what else the table reports.

    Candidate: the best test accuracy (percent) among its evaluations at or before iteration
    B / k, "has it reached the target by then". Baseline: its final accuracy. B is the same
    seed's baseline iterations when both groups ran the same seeds, else the baseline's mean.
    Also each candidate seed's speed-up, B / (iterations to reach the baseline's final accuracy
    minus margin_pp), NaN where it never did, and notes for seeds without an evaluation by B / k.
    """
    baseline = runs[(runs["group"] == claim.baseline) & (runs["status"] == "completed")]
    finals = dict(zip(baseline["seed"].astype(int), baseline["final_accuracy"].astype(float)))
    iterations = dict(zip(baseline["seed"].astype(int), baseline["iterations"].astype(float)))
    if not finals:
        return {}, {}, [], []
    completed = set(final_accuracies(runs, claim.candidate))
    curves = {int(seed): frame for seed, frame in histories.get(claim.candidate, ()) if int(seed) in completed}
    paired = set(curves) == set(finals)
    reached: dict[int, float] = {}
    speedups, notes = [], []
    for seed, curve in sorted(curves.items()):
        budget = iterations[seed] if paired else sum(iterations.values()) / len(iterations)
        target = finals[seed] if paired else sum(finals.values()) / len(finals)
        evaluated = curve[curve["test_accuracy"].notna()]
        by_budget = evaluated[evaluated["iteration"] <= budget / claim.k]
        if by_budget.empty:
            notes.append(f"{claim.candidate} seed {seed} has no evaluation by iteration {budget / claim.k:.0f}")
            continue
        reached[seed] = 100.0 * float(by_budget["test_accuracy"].max())
        hit = stats.time_to_accuracy(evaluated, (target - (claim.margin_pp or 0.0)) / 100.0)
        speedups.append(budget / hit if hit else math.nan)
    return reached, finals, speedups, notes


def _comparisons(claim: Claim, runs: pd.DataFrame, histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]],
                 confidence: float) -> tuple[list[Comparison], dict]:
    theta = threshold(claim)
    if claim.kind == "speedup":
        reached, finals, speedups, notes = speedup_values(runs, histories, claim)
        bounds = stats.difference_bounds(reached, finals, confidence)
        finite = [s for s in speedups if not math.isnan(s)]
        slowest = min(speedups) if speedups and len(finite) == len(speedups) else math.nan
        never = len(speedups) - len(finite)
        if never:
            notes.append(f"{never} of {len(speedups)} {claim.candidate} seed(s) never reached the target")
        extra = {"slowest_speedup": slowest, "notes": notes}
        return [Comparison(claim.candidate, claim.baseline, theta, bounds)], extra
    pairs = ordered_pairs(claim)
    return [Comparison(a, b, theta, stats.difference_bounds(final_accuracies(runs, a), final_accuracies(runs, b),
                                                           confidence)) for a, b in pairs], {"notes": []}


def decide(comparisons: Sequence[Comparison], recompute) -> tuple[str, Comparison]:
    """The verdict of the module docstring and the comparison that decides it.

    `recompute(comparison, confidence)` gives a comparison's bounds at another confidence (for
    the Bonferroni-corrected contradiction test of an ordering)."""
    if len(comparisons) == 1:
        return comparisons[0].verdict(), comparisons[0]
    confidence = comparisons[0].bounds.confidence
    corrected = 1 - (1 - confidence) / len(comparisons)
    for comparison in comparisons:
        strict = recompute(comparison, corrected)
        if strict.bounds.upper < strict.threshold:
            return "contradicted", strict
    weakest = min(comparisons, key=lambda c: c.bounds.lower - c.threshold
                  if not math.isnan(c.bounds.lower) else -math.inf)
    if all(c.verdict() == "supported" for c in comparisons):
        return "supported", weakest
    return "inconclusive", weakest


def evaluate(claim: Claim, runs: pd.DataFrame, histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]],
             seeds: Sequence[int], confidence: float = 0.95,
             stale: Mapping[str, Sequence[tuple[int, str]]] | None = None) -> dict:
    """One row of the claims table (COLUMNS, less the expected verdict) from one experiment's
    runs (runs.collect_runs) and evaluation histories (group -> [(seed, history.csv)]). `stale`:
    group -> [(seed, what differs)] of runs of another config, pending here and named in the note."""
    groups = claim.group_names()
    present = {(g, int(s)): status for g, s, status in zip(runs["group"], runs["seed"], runs["status"])}
    pending = [f"{g}/seed{s}" for g in groups for s in seeds if (g, s) not in present]
    diverged = [f"{g}/seed{s}" for g in groups for s in seeds if present.get((g, s)) == "diverged"]
    # Runs whose files disagree (runs.run_problem): named, and counted nowhere.
    broken = [f"{g}/seed{s}" for g in groups for s in seeds if present.get((g, s)) == "broken"]

    def recompute(comparison: Comparison, level: float) -> Comparison:
        values = (final_accuracies(runs, comparison.candidate), final_accuracies(runs, comparison.baseline))
        return Comparison(comparison.candidate, comparison.baseline, comparison.threshold,
                          stats.difference_bounds(*values, level))

    comparisons, extra = _comparisons(claim, runs, histories, confidence)
    evidence, deciding = decide(comparisons, recompute)
    notes = list(extra["notes"])
    if diverged:
        verdict = "diverged"
        notes.insert(0, f"diverged: {', '.join(diverged)}; the completed runs alone: {evidence}")
    elif pending:
        verdict = "pending"
        notes.insert(0, f"{len(pending)} run(s) to finish; so far: {evidence}")
    else:
        verdict = evidence
    if verdict == "inconclusive":
        notes.append(settle_text(deciding))  # which, without a bound, carries the bound's note
    if deciding.bounds.note and not (verdict == "inconclusive" and deciding.bounds.pairing == "none"):
        notes.append(deciding.bounds.note)
    if len(comparisons) > 1:
        notes.append("; ".join(c.summary() for c in comparisons))
    if broken:
        notes.insert(0, f"broken, not counted: {', '.join(broken)}")
    stale_runs = [f"{g}/seed{s} ({why})" for g in groups for s, why in (stale or {}).get(g, ())]
    if stale_runs:
        notes.insert(0, f"stale, not counted: {'; '.join(stale_runs)}")
    row = _statistic_columns(deciding, evidence)
    row.update({"claim_id": claim.id, "kind": claim.kind, "text": claim.text, "source": claim.source,
                "candidate": deciding.candidate, "baseline": deciding.baseline,
                "groups": order_text(claim) if claim.groups is not None else f"{claim.candidate} vs {claim.baseline}",
                "margin_pp": claim.margin_pp if claim.margin_pp is not None else 0.0,
                "k": claim.k if claim.k is not None else math.nan,
                "verdict": verdict, "expected": None, "expected_basis": "",
                "n_candidate": deciding.bounds.n_a, "n_baseline": deciding.bounds.n_b,
                "slowest_speedup": extra.get("slowest_speedup", math.nan),
                "diverged_runs": ", ".join(diverged), "pending_runs": ", ".join(pending),
                "note": "; ".join(notes)})
    return row


def settle_text(comparison: Comparison) -> str:
    """What would decide an inconclusive comparison: the distance from the threshold these
    seeds can resolve, and the seeds per group that would, were mean and spread to stay."""
    b = comparison.bounds
    if b.pairing == "none":
        return f"{b.note}: more seeds would decide it"
    needed = stats.seeds_to_settle(b, comparison.threshold)
    if needed is not None:
        more = f"at this mean and spread {needed} seeds per group would decide it"
    elif b.mean_diff == comparison.threshold:
        more = "no number of seeds would at this mean (it sits on the threshold)"
    else:
        more = f"at this mean and spread more than {stats.MAX_SEEDS_TO_SETTLE} seeds per group would be needed"
    return (f"decided once the mean lies {b.half_width:.2f} pp or more from the threshold "
            f"({comparison.threshold:+.2f}) at n = {b.n}; {more}")


def _statistic_columns(comparison: Comparison, evidence: str) -> dict:
    b, theta = comparison.bounds, comparison.threshold
    t = (b.mean_diff - theta) / b.standard_error if b.standard_error > 0 else math.nan
    needed = stats.seeds_to_settle(b, theta) if evidence == "inconclusive" else None
    return {"n": b.n, "pairing": b.pairing, "mean_diff_pp": b.mean_diff, "lower_bound_pp": b.lower,
            "upper_bound_pp": b.upper, "threshold_pp": theta, "confidence": b.confidence, "df": b.df,
            "t_statistic": t, "resolution_pp": b.half_width,
            "seeds_to_settle": needed if needed is not None else math.nan}


# --------------------------------------------------------------------------------------------
# From the published numbers
# --------------------------------------------------------------------------------------------

def expected_verdict(claim: Claim, experiment: ExperimentConfig, published: pd.DataFrame | None,
                     confidence: float = 0.95) -> tuple[str | None, str]:
    """(verdict the papers' own numbers give, how it was obtained); (None, why) when they give none."""
    groups = claim.group_names()
    if claim.expected is not None:
        return claim.expected, f"{BASIS_STATED} (no published row for every group)"
    if published is None or not all(g in experiment.published for g in groups):
        return None, ""
    by_id = published.set_index("id")
    rows = {g: by_id.loc[experiment.published[g]] for g in groups}
    if claim.kind == "speedup":
        problem = _speedup_lengths_problem(claim, rows[claim.candidate], rows[claim.baseline])
        if problem:
            return None, problem
    theta = threshold(claim)
    spread = all(_has_spread(row) for row in rows.values())
    tags = ", ".join(sorted({str(row["confidence"]) for row in rows.values()}))

    def compare(a: str, b: str, level: float) -> Comparison:
        ra, rb = rows[a], rows[b]
        if spread:
            bounds = stats.welch_bounds_from_stats(ra["accuracy"], ra["std"], int(ra["n_runs"]), rb["accuracy"],
                                                   rb["std"], int(rb["n_runs"]), level)
        else:  # point values: the bounds collapse onto the published difference
            diff = ra["accuracy"] - rb["accuracy"]
            bounds = stats.DifferenceBounds("point", 1, 1, 1, diff, diff, diff, math.nan, 0.0, level,
                                            math.nan, math.nan)
        return Comparison(a, b, theta, bounds)

    comparisons = [compare(a, b, confidence) for a, b in ordered_pairs(claim)]
    verdict, _ = decide(comparisons, lambda c, level: compare(c.candidate, c.baseline, level))
    if spread:
        runs = sorted({int(row["n_runs"]) for row in rows.values()})
        basis = f"{BASIS_TEST} on the published mean ± std, {'/'.join(map(str, runs))} runs per row; rows {tags}"
    else:
        basis = f"{BASIS_POINT} (no spread printed); rows {tags}"
    return verdict, basis


def basis_kind(basis: str) -> str:
    """'test', 'point' or 'stated' for an `expected_basis` text; '' for none."""
    for kind, prefix in (("test", BASIS_TEST), ("point", BASIS_POINT), ("stated", BASIS_STATED)):
        if basis.startswith(prefix):
            return kind
    return ""


def _has_spread(row: pd.Series) -> bool:
    return not pd.isna(row["std"]) and not pd.isna(row["n_runs"]) and int(row["n_runs"]) >= 2


def _speedup_lengths_problem(claim: Claim, candidate: pd.Series, baseline: pd.Series) -> str:
    """A published final accuracy says whether the target was reached by B / k only if the
    candidate trained no longer than that."""
    for unit in ("iterations", "epochs"):
        if unit in candidate["settings"] and unit in baseline["settings"]:
            ratio = baseline["settings"][unit] / candidate["settings"][unit]
            if ratio + 1e-9 < claim.k:
                return (f"the published {claim.candidate} trained {candidate['settings'][unit]} {unit}, more "
                        f"than 1/{claim.k:g} of the baseline's {baseline['settings'][unit]}")
            return ""
    return "the published rows give no comparable training length"


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

def claims_table(experiment: ExperimentConfig, runs: pd.DataFrame,
                 histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]], seeds: Sequence[int], *,
                 published: pd.DataFrame | None = None, confidence: float = 0.95,
                 stale: Mapping[str, Sequence[tuple[int, str]]] | None = None) -> pd.DataFrame:
    """One row per claim of the experiment (COLUMNS): verdict from the runs, expected verdict
    from the published numbers."""
    rows = []
    for claim in experiment.claims:
        row = evaluate(claim, runs, histories, seeds, confidence, stale)
        row["expected"], row["expected_basis"] = expected_verdict(claim, experiment, published, confidence)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))
