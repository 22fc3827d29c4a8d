"""Statistics for aggregating runs over seeds: numpy/pandas and scipy.stats (t intervals and bounds, Holm).

Values must be finite: a diverged run has no final accuracy, and silently averaging NaN (or
silently dropping it) would hide the divergence; callers drop diverged runs explicitly and say
so (a cell whose seeds all diverged gets `verdict(..., status="diverged")`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

# Differences closer than this (percentage points) are the same number: accuracies are counts
# over a test set, whose resolution is 100 / N pp >= 1e-5 pp for any test set under 10^7
# images, so anything smaller is float rounding (91.06 - 88.57 vs 90.87 - 88.38).
IDENTICAL_PP = 1e-6

# Seeds per group beyond which `seeds_to_settle` stops looking ("more than this").
MAX_SEEDS_TO_SETTLE = 1000

STATUSES = ("completed", "diverged", "pending")


def _finite_array(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"values must be finite (drop diverged runs explicitly): {array}")
    return array


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n); std is NaN for n < 2, mean is NaN for n == 0. Equal
    values have a std of exactly 0: the float mean of three copies of 0.1 misses 0.1 by an ulp,
    and numpy's std of them would print as 3e-17."""
    array = _finite_array(values)
    n = len(array)
    mean = float(array.mean()) if n else math.nan
    if n < 2:
        std = math.nan
    elif array.min() == array.max():
        std = 0.0
    else:
        std = float(array.std(ddof=1))
    return mean, std, n


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t interval of the mean: mean -+ t((1 + c) / 2, n - 1) * s / sqrt(n), with
    scipy.stats.t's quantile (t(0.975, 2) = 4.302653 for three seeds).

    Honest at small n, where a percentile bootstrap is not: the bootstrap of three values can
    never reach beyond their min and max (its "95 %" interval covers about 75 %), while the t
    interval widens with the t quantile as n falls. (nan, nan) below 2 values or without spread
    (the mean of identical values has no estimated error): tables show the seeds instead.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    array = _finite_array(values)
    n = len(array)
    if n < 2 or array.min() == array.max():
        return math.nan, math.nan
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * float(array.std(ddof=1)) / math.sqrt(n)
    mean = float(array.mean())
    return mean - half, mean + half


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given; NaN stays NaN and is
    not counted among the m hypotheses.

    Sort the m finite p ascending, p(1) <= ... <= p(m); the adjusted p(i) is
    max over j <= i of min(1, (m - j + 1) * p(j)). Rejecting where the adjusted p <= alpha
    keeps the chance of any false rejection among the m at most alpha, under any dependence
    (scipy.stats has Benjamini-Hochberg, `false_discovery_control`, but not Holm).
    """
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    if any(not 0 <= p <= 1 for p, _ in finite):
        raise ValueError(f"p-values must lie in [0, 1], got {list(p_values)}")
    adjusted = [math.nan] * len(p_values)
    running, m = 0.0, len(finite)
    for rank, (p, index) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class DifferenceBounds:
    """One-sided confidence bounds on the mean difference A - B (percentage points).

    `lower` and `upper` are each one-sided bounds at `confidence` (so [lower, upper] is a
    two-sided interval at 2 * confidence - 1). `pairing` is "paired" (one-sample t on the
    per-seed differences), "unpaired" (Welch's t) or "none" when no bound can be formed (fewer
    than 2 seeds, or no spread at all); then the bounds are NaN and `note` says why. `n` is the
    number of pairs (paired) or the smaller group's size (unpaired). `sd_a`/`sd_b` are the
    groups' sample stds, or for a paired bound `sd_a` is the std of the differences and `sd_b`
    is NaN; they size `seeds_to_settle`.
    """

    pairing: str
    n: int
    n_a: int
    n_b: int
    mean_diff: float
    lower: float
    upper: float
    df: float
    standard_error: float
    confidence: float
    sd_a: float
    sd_b: float
    note: str = ""

    @property
    def half_width(self) -> float:
        """How far the one-sided bound lies from the mean: the smallest distance between the
        mean difference and a threshold that these seeds can resolve."""
        return self.mean_diff - self.lower

    @property
    def test(self) -> str:
        """The test behind the bounds, as a table prints it: "paired t, df 2", "Welch t, df 3.4"."""
        if self.pairing == "paired":
            return f"paired t, df {self.df:g}"
        if self.pairing == "unpaired":
            return f"Welch t, df {self.df:.1f}"
        return "no test"

    def p_values(self, threshold: float) -> tuple[float, float]:
        """One-sided p-values from the t statistic behind the bounds (scipy.stats.t): of
        "mean <= threshold" (small: the lower bound clears it, supported) and of "mean >=
        threshold" (small: contradicted). lower > threshold exactly when the first is below
        1 - confidence. NaN, NaN without a bound."""
        if self.pairing not in ("paired", "unpaired") or not self.standard_error > 0:
            return math.nan, math.nan
        t = (self.mean_diff - threshold) / self.standard_error
        return float(scipy_stats.t.sf(t, self.df)), float(scipy_stats.t.cdf(t, self.df))


def _check_confidence(confidence: float) -> None:
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1) for a one-sided bound, got {confidence}")


def difference_bounds(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float],
                      confidence: float = 0.95) -> DifferenceBounds:
    """One-sided t bounds on mean(A) - mean(B) from per-seed values (scipy.stats t-tests).

    The test is fixed by the design, never by the values: paired (scipy.stats.ttest_1samp on
    a[s] - b[s]) when both groups ran the same seeds, so that each seed's shared initialisation
    and data order cancel; unpaired (Welch, scipy.stats.ttest_ind with equal_var=False) where
    the seeds differ, over every value of each group (a subset of shared seeds is not picked out
    of a larger set, so no seed's result is silently dropped). When the paired differences are
    all identical (two seeds both +2.49 pp: the test set's resolution, not a measured spread of
    0) the paired t has no spread to work with and there is no bound; the note says so, and
    that a further seed would give one. The bound is never swapped for Welch's there: that
    would let the data choose the test.
    """
    _check_confidence(confidence)
    a = {int(s): float(v) for s, v in a_by_seed.items()}
    b = {int(s): float(v) for s, v in b_by_seed.items()}
    _finite_array([*a.values(), *b.values()])
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        diffs = np.array([a[s] - b[s] for s in seeds])
        sd = float(diffs.std(ddof=1))
        if np.ptp(diffs) <= IDENTICAL_PP:
            why = (f"the {len(diffs)} paired differences are identical ({diffs[0]:+.2f}): no spread, so no "
                   "paired t bound; another seed would give one")
            return _no_bound(len(a), len(b), float(diffs.mean()), confidence, 0.0, math.nan, why)
        lower = scipy_stats.ttest_1samp(diffs, 0.0, alternative="greater").confidence_interval(confidence).low
        upper = scipy_stats.ttest_1samp(diffs, 0.0, alternative="less").confidence_interval(confidence).high
        return DifferenceBounds("paired", len(diffs), len(a), len(b), float(diffs.mean()), float(lower),
                                float(upper), float(len(diffs) - 1), sd / math.sqrt(len(diffs)), confidence,
                                sd, math.nan)
    values_a, values_b = np.array(list(a.values())), np.array(list(b.values()))
    mean_diff = float(values_a.mean() - values_b.mean()) if len(a) and len(b) else math.nan
    sd_a = float(values_a.std(ddof=1)) if len(a) >= 2 else math.nan
    sd_b = float(values_b.std(ddof=1)) if len(b) >= 2 else math.nan
    if len(a) < 2 or len(b) < 2:
        why = f"needs at least 2 seeds per group, has {len(a)} and {len(b)}"
        return _no_bound(len(a), len(b), mean_diff, confidence, sd_a, sd_b, why)
    if np.ptp(values_a) <= IDENTICAL_PP and np.ptp(values_b) <= IDENTICAL_PP:
        why = "every seed of both groups gave the same accuracy: no spread to bound the mean with"
        return _no_bound(len(a), len(b), mean_diff, confidence, sd_a, sd_b, why)
    greater = scipy_stats.ttest_ind(values_a, values_b, equal_var=False, alternative="greater")
    less = scipy_stats.ttest_ind(values_a, values_b, equal_var=False, alternative="less")
    se = math.sqrt(sd_a**2 / len(a) + sd_b**2 / len(b))
    return DifferenceBounds("unpaired", min(len(a), len(b)), len(a), len(b), mean_diff,
                            float(greater.confidence_interval(confidence).low),
                            float(less.confidence_interval(confidence).high), float(greater.df), se,
                            confidence, sd_a, sd_b)


def welch_bounds_from_stats(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int,
                            confidence: float = 0.95) -> DifferenceBounds:
    """The Welch bounds of `difference_bounds` from published summaries (mean, std, n runs),
    as the papers print them: t quantile (scipy.stats.t) times the Welch standard error, with
    the Welch-Satterthwaite degrees of freedom."""
    _check_confidence(confidence)
    if n_a < 2 or n_b < 2 or not (sd_a >= 0 and sd_b >= 0) or sd_a == sd_b == 0:
        why = f"needs a spread and at least 2 runs per group, has n {n_a} and {n_b}"
        return _no_bound(n_a, n_b, mean_a - mean_b, confidence, sd_a, sd_b, why)
    var_a, var_b = sd_a**2 / n_a, sd_b**2 / n_b
    se = math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    half = float(scipy_stats.t.ppf(confidence, df)) * se
    diff = mean_a - mean_b
    return DifferenceBounds("unpaired", min(n_a, n_b), n_a, n_b, diff, diff - half, diff + half, df, se,
                            confidence, sd_a, sd_b)


def _no_bound(n_a: int, n_b: int, mean_diff: float, confidence: float, sd_a: float, sd_b: float,
              why: str) -> DifferenceBounds:
    return DifferenceBounds("none", min(n_a, n_b), n_a, n_b, mean_diff, math.nan, math.nan, math.nan,
                            math.nan, confidence, sd_a, sd_b, why)


def seeds_to_settle(bounds: DifferenceBounds, threshold: float) -> int | None:
    """Seeds (per group) at which a bound like `bounds` would clear `threshold`, if the mean
    difference and the spread stayed as observed: the smallest n with
    t(confidence, df(n)) * se(n) < |mean_diff - threshold|. None if no number would (the mean
    sits on the threshold, or there is no spread estimate), or if it takes more than
    MAX_SEEDS_TO_SETTLE."""
    gap = abs(bounds.mean_diff - threshold)
    if bounds.pairing == "none" or not gap > 0:
        return None
    for n in range(2, MAX_SEEDS_TO_SETTLE + 1):
        if bounds.pairing == "paired":
            se, df = bounds.sd_a / math.sqrt(n), n - 1
        else:
            var_a, var_b = bounds.sd_a**2 / n, bounds.sd_b**2 / n
            se = math.sqrt(var_a + var_b)
            df = (n - 1) * (var_a + var_b) ** 2 / (var_a**2 + var_b**2)
        if scipy_stats.t.ppf(bounds.confidence, df) * se < gap:
            return n
    return None


def verdict(paper_mean: float, paper_std: float | None, ours_mean: float, ours_std: float,
            n_ours: int, tolerance_pp: float, status: str = "completed") -> str:
    """"replicated", "not replicated", "diverged" or "pending" for one table cell.

    - "pending" if status == "pending", or if no run of ours has finished (n_ours == 0) and the
      status is not "diverged";
    - "diverged" if status == "diverged" (all seeds diverged). This is checked before n_ours:
      when every seed diverged there is no finite result to count, and the cell must say so;
    - otherwise "replicated" iff |ours_mean - paper_mean| <= tolerance_pp + band, with
      band = 2 * sqrt(paper_std**2 + ours_std**2).

    The band is about two standard deviations of the difference between two independent runs,
    one with the paper's and one with our seed-to-seed spread: a gap inside it is explainable
    by seed noise alone. Run-level stds (not standard errors of the means) are used on purpose:
    the paper's number of runs is often unknown or 1, so its mean is no more precise than a run,
    and the criterion should not grow stricter just because we ran more seeds. tolerance_pp
    adds an allowance for systematic differences (hardware, data pipeline, framework).
    paper_std None (published without a spread) leaves only our spread in the band; ours_std
    NaN (a single run, no spread estimate) counts as 0. All values share tolerance_pp's unit
    (percentage points: accuracies in %).
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if status == "pending":
        return "pending"
    if status == "diverged":
        return "diverged"
    if n_ours == 0:
        return "pending"
    if not tolerance_pp >= 0:
        raise ValueError(f"tolerance_pp must be >= 0, got {tolerance_pp}")
    if paper_std is not None and not paper_std >= 0:
        raise ValueError(f"paper_std must be None or >= 0, got {paper_std}")
    if not (math.isfinite(paper_mean) and math.isfinite(ours_mean)):
        raise ValueError(f"means must be finite, got paper {paper_mean}, ours {ours_mean}")
    ours_spread = 0.0 if math.isnan(ours_std) else ours_std
    paper_spread = 0.0 if paper_std is None else paper_std
    band = 2 * math.sqrt(paper_spread**2 + ours_spread**2)
    return "replicated" if abs(ours_mean - paper_mean) <= tolerance_pp + band else "not replicated"


def time_to_accuracy(curve: pd.DataFrame, target: float, x: str = "iteration") -> float | None:
    """The value of column `x` (iteration, epoch, wall_time_s) at the first row, in the curve's
    chronological row order, whose test_accuracy reaches `target` (>=, same unit: a fraction);
    None if it never does. Rows without an evaluation (NaN accuracy) never count."""
    reached = (curve["test_accuracy"] >= target).to_numpy()
    if not reached.any():
        return None
    return float(curve[x].to_numpy()[np.argmax(reached)])


# --------------------------------------------------------------------------------------------
# What a handful of seeds can show
# --------------------------------------------------------------------------------------------

# Below this many values an interval is no estimate (a t interval of two values has one degree
# of freedom and spans -+12.7 standard errors): tables show those seeds' values instead.
MIN_VALUES_FOR_CI = 3
