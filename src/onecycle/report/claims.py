"""Smith's claims as tested hypotheses: a verdict per claim, from our runs and from the papers' numbers.

A claim (onecycle.experiments.workflow.Claim, written in an experiment's `claims:`) is one comparison of
the experiment's groups (the config refuses the same comparison stated twice). Each compares d
against a threshold theta:

    superior      d = candidate - baseline final accuracy (pp), theta = +margin_pp (default 0)
    non_inferior  the same d, theta = -margin_pp        "candidate is at most margin_pp worse"
    speedup       d_s = log(B_s / T_s), the seed's speed-up to its target (onecycle.report.speedup,
                  the one definition of the target accuracy), theta = log k; shown as ratios
    ordering      every group of a tier better than every group of the next tier: superior
                  comparisons, theta = +margin_pp (default 0)

The decision rule. L and U are one-sided lower and upper confidence bounds (each at `confidence`,
default 0.95) on the mean of d (onecycle.report.stats.difference_bounds: a paired t over the seeds when
both groups ran the same seeds, Welch's t where they differ; the design picks the test, so
identical paired differences give no bound, never a Welch bound in its place). They, n and the
test are the one statement of uncertainty printed with the verdict (`evidence`):

    supported     iff L > theta   (the data rule out d <= theta at level 1 - confidence)
    contradicted  iff U < theta   (the data rule out d >= theta at level 1 - confidence)
    inconclusive  otherwise, with what would settle it: the half-width of the bound (the
                  smallest |mean d - theta| these seeds can resolve) and how many seeds per group
                  would, were the mean and spread to stay as observed.

With two seeds the t quantile is 6.31 (one degree of freedom), so a small effect cannot be
supported however it falls. An ordering is supported iff every one of its m comparisons is (an
intersection-union test: level 1 - confidence without correction), and contradicted iff any
one is contradicted at confidence 1 - (1 - confidence) / m (Bonferroni over the m chances).

A speed-up seed that never reached its target enters at its upper limit, B_s / its last
evaluation, and then the claim cannot be supported. Runs that are not there make the claim
"pending"; a run that diverged makes it "diverged" and is named. Neither is ever counted as a
loss or a win: the statistic beside the verdict is over the completed runs only, and the note
says what they alone would give. An experiment that failed a validity gate, or ran at tiny
scale, shows its label in place of the verdict (onecycle.report.validity); one that states its
departures from the paper shows "... at this scale".

The expected verdict is the same rule applied to the published numbers of the claim's groups
(configs/reference/published.yaml via the experiment's `published:` mapping): Welch's t from the
printed mean, std and run count where the paper gives a spread, else the point values
(supported iff d > theta, contradicted iff d < theta). Groups without a published row take the
claim's `expected:` from the config, if it has one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from onecycle.report import speedup, stats
from onecycle.experiments.workflow import Claim, ExperimentConfig

VERDICTS = ("supported", "contradicted", "inconclusive", "pending", "diverged")
# The verdicts a test decides; only these carry "at this scale" and count for Holm's correction.
TESTED = VERDICTS[:3]
AT_THIS_SCALE = " at this scale"

# How an expected verdict was obtained (the start of `expected_basis`): a t test on the published
# spreads, a comparison of published point values, or the config's own `expected:`.
BASIS_TEST, BASIS_POINT, BASIS_STATED = "Welch t", "published point values", "stated in the config"

COLUMNS = ("claim_id", "kind", "text", "source", "candidate", "baseline", "groups", "margin_pp", "k",
           "verdict", "expected", "expected_basis", "evidence", "per_seed", "n", "n_candidate", "n_baseline",
           "test", "unit", "estimate", "lower_bound", "upper_bound", "threshold", "confidence", "df",
           "t_statistic", "p_value", "seeds_to_settle", "diverged_runs", "pending_runs", "note")

# What the Markdown and LaTeX tables show; the CSV has every column.
DISPLAY_COLUMNS = ("claim_id", "kind", "candidate", "baseline", "evidence", "per_seed", "verdict", "expected",
                   "note")


@dataclass(frozen=True)
class Comparison:
    """One comparison candidate - baseline against its threshold, with its bounds. unit "pp": a
    difference of final accuracies; "x": a speed-up, whose bounds, mean and threshold are on
    log speed-up (the t bound is taken there: ratios multiply) and shown as ratios."""

    candidate: str
    baseline: str
    threshold: float
    bounds: stats.DifferenceBounds
    unit: str = "pp"

    def verdict(self) -> str:
        if self.bounds.lower > self.threshold:
            return "supported"
        if self.bounds.upper < self.threshold:
            return "contradicted"
        return "inconclusive"

    def shown(self, value: float) -> float:
        """A value of the bounds in the unit a reader reads: pp, or the ratio for a speed-up."""
        return math.exp(value) if self.unit == "x" else value

    @property
    def test(self) -> str:
        if self.unit == "x" and self.bounds.pairing != "none":
            return f"t on log speed-up, df {self.bounds.df:g}"
        return self.bounds.test

    def evidence(self) -> str:
        """The one uncertainty statement behind the verdict: estimate, bounds, n, test, threshold."""
        b, fmt = self.bounds, (lambda v: f"{self.shown(v):.2f}x") if self.unit == "x" else (lambda v: f"{v:+.2f} pp")
        if b.pairing == "none":
            estimate = "" if math.isnan(b.mean_diff) else f"{fmt(b.mean_diff)}, "
            return f"{estimate}n = {b.n}, no bound ({b.note}); threshold {fmt(self.threshold)}"
        return (f"{fmt(b.mean_diff)}, one-sided {b.confidence:.0%} bounds [{fmt(b.lower)}, {fmt(b.upper)}], "
                f"n = {b.n}, {self.test}; threshold {fmt(self.threshold)}")

    def summary(self) -> str:
        return f"{self.candidate} vs {self.baseline}: {self.evidence()}"


def threshold(claim: Claim) -> float:
    """theta of the module docstring: percentage points, or log k for a speed-up."""
    return math.log(claim.k) if claim.kind == "speedup" else accuracy_threshold(claim)


def accuracy_threshold(claim: Claim) -> float:
    """The threshold on a difference of accuracies (pp): +margin for superior and ordering,
    -margin otherwise; a speed-up's on the papers' side, where only final accuracies are printed."""
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


def bare_verdict(shown: str) -> str:
    """The verdict word of a table cell: "contradicted" of "contradicted at this scale", "invalid"
    of "invalid: <reason>", "inconclusive" of "inconclusive after Holm (uncorrected: ...)"."""
    return re.split(r":| at this scale| after Holm| \(", str(shown))[0]


# --------------------------------------------------------------------------------------------
# From runs
# --------------------------------------------------------------------------------------------

def final_accuracies(runs: pd.DataFrame, group: str) -> dict[int, float]:
    """seed -> final accuracy (percent) of the group's completed runs."""
    done = runs[(runs["group"] == group) & (runs["status"] == "completed")]
    return {int(s): float(a) for s, a in zip(done["seed"], done["final_accuracy"])}


def _speedup_comparison(claim: Claim, runs: pd.DataFrame, histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]],
                        confidence: float) -> tuple[Comparison, dict]:
    """The speed-up B_s / T_s of each seed (onecycle.report.speedup, the one definition of the
    target), tested against k with a one-sample t bound on log speed-up: the seeds pair the
    runs by construction, each seed's speed-up is against its own baseline run."""
    seeds, how = speedup.seed_speedups(runs, histories, claim.candidate, claim.baseline, claim.margin_pp or 0.0)
    logs = {s.seed: math.log(s.speedup) for s in seeds if s.speedup > 0}
    bounds = stats.difference_bounds(logs, dict.fromkeys(logs, 0.0), confidence)
    never = [s.seed for s in seeds if not s.reached]
    if bounds.pairing == "none" and len(logs) >= 2 and len(never) == len(seeds):
        bounds = replace(bounds, note=f"no seed reached the target within its run, so every speed-up is below "
                                      f"{math.exp(max(logs.values())):.2f}x; values censored so give no t bound")
    elif bounds.pairing == "none" and len(logs) >= 2:
        bounds = replace(bounds, note=f"every seed at {math.exp(bounds.mean_diff):.2f}x, the same evaluation: no "
                                      "spread between seeds at this evaluation spacing, so no t bound; evaluating "
                                      "more often, or another seed, would give one")
    notes = [how]
    if never:
        notes.append(f"{len(never)} of {len(seeds)} seed(s) never reached the target, entered at the upper limit "
                     "B / their last evaluation: the claim cannot be supported")
    per_seed = "; ".join(f"seed {s.seed}: {'' if s.reached else '< '}{s.speedup:.2f}x" for s in seeds)
    return Comparison(claim.candidate, claim.baseline, threshold(claim), bounds, "x"), {
        "notes": notes, "per_seed": per_seed, "censored": bool(never)}


def _comparisons(claim: Claim, runs: pd.DataFrame, histories: Mapping[str, Sequence[tuple[int, pd.DataFrame]]],
                 confidence: float) -> tuple[list[Comparison], dict]:
    if claim.kind == "speedup":
        comparison, extra = _speedup_comparison(claim, runs, histories, confidence)
        return [comparison], extra
    pairs = ordered_pairs(claim)
    comparisons = [Comparison(a, b, threshold(claim), stats.difference_bounds(
        final_accuracies(runs, a), final_accuracies(runs, b), confidence)) for a, b in pairs]
    per_seed = ""
    if len(pairs) == 1:
        a, b = final_accuracies(runs, pairs[0][0]), final_accuracies(runs, pairs[0][1])
        per_seed = "; ".join(f"seed {s}: {a[s] - b[s]:+.2f} pp" for s in sorted(set(a) & set(b)))
    return comparisons, {"notes": [], "per_seed": per_seed, "censored": False}


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


def p_value(comparisons: Sequence[Comparison], censored: bool = False) -> float:
    """The one-sided p of the verdict's direction, the smaller of "supported" (max over an
    ordering's comparisons: every one must hold) and "contradicted" (Bonferroni over them); a
    verdict is decided exactly when it is below 1 - confidence. NaN without a test."""
    ps = [c.bounds.p_values(c.threshold) for c in comparisons]
    if any(math.isnan(p) for pair in ps for p in pair):
        return math.nan
    support = 1.0 if censored else max(p for p, _ in ps)
    return min(support, min(1.0, len(ps) * min(p for _, p in ps)))


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
    if evidence == "supported" and extra["censored"]:
        evidence = "inconclusive"
    if diverged:
        verdict = "diverged"
        notes.insert(0, f"diverged: {', '.join(diverged)}; the completed runs alone: {evidence}")
    elif pending:
        verdict = "pending"
        notes.insert(0, f"{len(pending)} run(s) to finish; so far: {evidence}")
    else:
        verdict = evidence
    if verdict == "inconclusive" and deciding.bounds.pairing != "none":
        notes.append(settle_text(deciding))  # without a bound, the evidence says why there is none
    if len(comparisons) > 1:
        notes.append("; ".join(c.summary() for c in comparisons))
    if broken:
        notes.insert(0, f"broken, not counted: {', '.join(broken)}")
    stale_runs = [f"{g}/seed{s} ({why})" for g in groups for s, why in (stale or {}).get(g, ())]
    if stale_runs:
        notes.insert(0, f"stale, not counted: {'; '.join(stale_runs)}")
    row = _statistic_columns(deciding, evidence, p_value(comparisons, extra["censored"]))
    row.update({"claim_id": claim.id, "kind": claim.kind, "text": claim.text, "source": claim.source,
                "candidate": deciding.candidate, "baseline": deciding.baseline,
                "groups": order_text(claim) if claim.groups is not None else f"{claim.candidate} vs {claim.baseline}",
                "margin_pp": claim.margin_pp if claim.margin_pp is not None else 0.0,
                "k": claim.k if claim.k is not None else math.nan,
                "verdict": verdict, "expected": None, "expected_basis": "", "per_seed": extra["per_seed"],
                "n_candidate": deciding.bounds.n_a, "n_baseline": deciding.bounds.n_b,
                "diverged_runs": ", ".join(diverged), "pending_runs": ", ".join(pending),
                "note": "; ".join(notes)})
    return row


def settle_text(comparison: Comparison) -> str:
    """What would decide an inconclusive comparison: the distance from the threshold these
    seeds can resolve, and the seeds per group that would, were mean and spread to stay."""
    b = comparison.bounds
    needed = stats.seeds_to_settle(b, comparison.threshold)
    if needed is not None:
        more = f"at this mean and spread {needed} seeds per group would decide it"
    elif b.mean_diff == comparison.threshold:
        more = "no number of seeds would at this mean (it sits on the threshold)"
    else:
        more = f"at this mean and spread more than {stats.MAX_SEEDS_TO_SETTLE} seeds per group would be needed"
    distance = (f"a factor {math.exp(b.half_width):.2f}" if comparison.unit == "x" else f"{b.half_width:.2f} pp")
    return f"decided once the estimate lies {distance} or more from the threshold at n = {b.n}; {more}"


def _statistic_columns(comparison: Comparison, evidence: str, p: float) -> dict:
    b, theta, shown = comparison.bounds, comparison.threshold, comparison.shown
    t = (b.mean_diff - theta) / b.standard_error if b.standard_error > 0 else math.nan
    needed = stats.seeds_to_settle(b, theta) if evidence == "inconclusive" else None
    return {"evidence": comparison.evidence(), "n": b.n, "test": comparison.test, "unit": comparison.unit,
            "estimate": shown(b.mean_diff), "lower_bound": shown(b.lower), "upper_bound": shown(b.upper),
            "threshold": shown(theta), "confidence": b.confidence, "df": b.df, "t_statistic": t, "p_value": p,
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
    theta = accuracy_threshold(claim)
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
                 validity: str | None = None,
                 stale: Mapping[str, Sequence[tuple[int, str]]] | None = None) -> pd.DataFrame:
    """One row per claim of the experiment (COLUMNS): verdict from the runs, expected verdict
    from the published numbers. `validity` (onecycle.report.validity.Validity.label), when the
    experiment failed a gate or ran at tiny scale, stands in place of every verdict a test would
    decide (pending and diverged claims keep saying so); otherwise a
    decided verdict of an experiment that states `departures` reads "... at this scale"."""
    rows = []
    for claim in experiment.claims:
        row = evaluate(claim, runs, histories, seeds, confidence, stale)
        row["expected"], row["expected_basis"] = expected_verdict(claim, experiment, published, confidence)
        if validity and row["verdict"] in TESTED:  # pending and diverged runs still say so
            row["note"] = "; ".join(filter(None, [f"no verdict: {validity}", row["note"]]))
            row["verdict"] = validity
        elif experiment.departures and row["verdict"] in TESTED:
            row["verdict"] += AT_THIS_SCALE
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))
