"""Statistics for aggregating runs over seeds: numpy/pandas and scipy.stats, deterministic given a seed.

Values must be finite: a diverged run has no final accuracy, and silently averaging NaN (or
silently dropping it) would hide the divergence; callers drop diverged runs explicitly and say
so (a cell whose seeds all diverged gets `verdict(..., status="diverged")`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

# Enumerate all 2**n sign flips up to n = 16 (65 536 rows): exact and still cheap; beyond that,
# draw this many random sign vectors (Monte Carlo error of p about 0.005 at p = 0.5).
EXACT_PERMUTATION_MAX_N = 16
MONTE_CARLO_PERMUTATIONS = 10_000

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


def bootstrap_ci(values: Iterable[float], confidence: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Resamples the values with replacement `n_resamples` times (numpy default_rng(seed), so the
    result is deterministic) and returns the (1-c)/2 and (1+c)/2 quantiles of the resampled
    means. (nan, nan) for no values; (x, x) for a single value, which has no spread to resample.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    array = _finite_array(values)
    if len(array) == 0:
        return math.nan, math.nan
    if len(array) == 1:
        return float(array[0]), float(array[0])
    # scipy's percentile bootstrap draws the same resamples from the same generator as the
    # hand-written version it replaced (rng.integers(0, n, (n_resamples, n))), so the interval
    # is unchanged (tests/test_stats.py pins it).
    result = scipy_stats.bootstrap((array,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                                   method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class PairedComparison:
    """A minus B over the seeds both have."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float


def _sign_flip_p_value(diffs: np.ndarray, seed: int) -> float:
    """Two-sided sign-flip permutation p-value of the mean paired difference.

    Under H0 (no difference) each difference is as likely positive as negative; p is the share
    of sign assignments whose |sum| is at least the observed |sum| (scipy.stats.permutation_test
    on |sum|, one-sample "samples" permutations = sign flips). Exact over all 2**n assignments
    for n <= 16; otherwise Monte Carlo, counting the observed one as well,
    p = (1 + hits) / (1 + draws), which never returns 0 (Phipson & Smyth 2010). Sums that tie
    the observed one up to float rounding count as "as extreme" (scipy's relative tolerance).
    """
    n = len(diffs)
    if n == 1:  # both sign assignments have the observed |sum| (scipy wants two observations)
        return 1.0
    draws = 2**n if n <= EXACT_PERMUTATION_MAX_N else MONTE_CARLO_PERMUTATIONS
    result = scipy_stats.permutation_test(
        (diffs,), lambda d, axis: np.abs(np.sum(d, axis=axis)), permutation_type="samples",
        n_resamples=draws, alternative="greater", vectorized=True, rng=np.random.default_rng(seed))
    return float(result.pvalue)


def paired_difference(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float],
                      confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Compare A and B run with the same seeds: differences a[s] - b[s] over the shared seeds.

    mean_diff with a percentile-bootstrap CI (`bootstrap_ci`) and the exact two-sided sign-flip
    permutation p-value (Monte Carlo with `seed` beyond 16 pairs). With no shared seed every
    field but n is NaN; with one, the CI is the single difference and p = 1.
    """
    shared = sorted(set(a_by_seed) & set(b_by_seed))
    diffs = _finite_array(a_by_seed[s] - b_by_seed[s] for s in shared)
    if len(diffs) == 0:
        return PairedComparison(0, math.nan, math.nan, math.nan, math.nan)
    ci_low, ci_high = bootstrap_ci(diffs, confidence=confidence, seed=seed)
    return PairedComparison(len(diffs), float(diffs.mean()), ci_low, ci_high,
                            _sign_flip_p_value(diffs, seed))


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


def _check_confidence(confidence: float) -> None:
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1) for a one-sided bound, got {confidence}")


def difference_bounds(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float],
                      confidence: float = 0.95) -> DifferenceBounds:
    """One-sided t bounds on mean(A) - mean(B) from per-seed values (scipy.stats t-tests).

    Paired (scipy.stats.ttest_1samp on a[s] - b[s]) when both groups ran the same seeds: the
    seed's shared initialisation and data order cancel. Unpaired (Welch, scipy.stats.ttest_ind
    with equal_var=False) where the seeds differ, over every value of each group; a subset of
    shared seeds is not picked out of a larger set, so no seed's result is silently dropped.
    When the paired differences are all identical (two seeds both +2.49 pp: a coincidence of
    the test set's resolution, not a measured spread of 0), the pairing's gain cannot be
    estimated and the Welch bound, from each group's own spread, is used instead (note says so).
    """
    _check_confidence(confidence)
    a = {int(s): float(v) for s, v in a_by_seed.items()}
    b = {int(s): float(v) for s, v in b_by_seed.items()}
    _finite_array([*a.values(), *b.values()])
    note = ""
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        diffs = np.array([a[s] - b[s] for s in seeds])
        if np.ptp(diffs) > IDENTICAL_PP:
            lower = scipy_stats.ttest_1samp(diffs, 0.0, alternative="greater").confidence_interval(confidence).low
            upper = scipy_stats.ttest_1samp(diffs, 0.0, alternative="less").confidence_interval(confidence).high
            sd = float(diffs.std(ddof=1))
            return DifferenceBounds("paired", len(diffs), len(a), len(b), float(diffs.mean()), float(lower),
                                    float(upper), float(len(diffs) - 1), sd / math.sqrt(len(diffs)), confidence,
                                    sd, math.nan)
        note = (f"the {len(diffs)} paired differences are identical ({diffs[0]:+.2f} pp): "
                "Welch bound from each group's spread")
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
                            confidence, sd_a, sd_b, note)


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
# What a handful of seeds can and cannot show
# --------------------------------------------------------------------------------------------

# Below this many values a bootstrap interval is no interval estimate: the percentile bootstrap
# of two values returns the two values themselves (their resampled means are a, (a+b)/2, b), of
# one a zero-width interval. Tables show those seeds' values and their range instead.
MIN_VALUES_FOR_CI = 3


def smallest_sign_flip_p(n: int) -> float:
    """The smallest p `paired_difference` can return with n pairs, whatever the differences.

    Exact test (n <= 16): only the observed sign assignment and its mirror image reach the
    largest |sum| when all n differences share a sign, so p >= 2 / 2**n (n = 1: 1, n = 2: 0.5,
    n = 5: 0.0625, n = 6: 0.03125). Monte Carlo (n > 16): the observed assignment always counts,
    p >= 1 / (1 + draws). NaN for n = 0 (no pair, no test).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if n == 0:
        return math.nan
    if n <= EXACT_PERMUTATION_MAX_N:
        return min(1.0, 2.0 / 2**n)
    return max(2.0 / 2**n, 1.0 / (1 + MONTE_CARLO_PERMUTATIONS))


def pairs_needed_for_p(alpha: float) -> int:
    """The fewest pairs with which the sign-flip test can give p <= alpha at all (6 for 0.05)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = 1
    while smallest_sign_flip_p(n) > alpha:
        n += 1
    return n
