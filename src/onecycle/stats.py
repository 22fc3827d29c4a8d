"""Statistics for aggregating runs over seeds: pure numpy/pandas, deterministic given a seed.

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

# Enumerate all 2**n sign flips up to n = 16 (65 536 rows): exact and still cheap; beyond that,
# draw this many random sign vectors (Monte Carlo error of p about 0.005 at p = 0.5).
EXACT_PERMUTATION_MAX_N = 16
MONTE_CARLO_PERMUTATIONS = 10_000

# Sums that tie the observed one up to float rounding count as "as extreme" (scipy's
# permutation_test does the same with a relative tolerance); the scale is sum |d|.
TIE_RELATIVE_TOLERANCE = 1e-9

STATUSES = ("completed", "diverged", "pending")


def _finite_array(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"values must be finite (drop diverged runs explicitly): {array}")
    return array


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n); std is NaN for n < 2, mean is NaN for n == 0."""
    array = _finite_array(values)
    n = len(array)
    mean = float(array.mean()) if n else math.nan
    std = float(array.std(ddof=1)) if n >= 2 else math.nan
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
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), size=(n_resamples, len(array)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


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
    of sign assignments whose |sum| is at least the observed |sum|. Exact over all 2**n
    assignments for n <= 16; otherwise Monte Carlo, counting the observed one as well,
    p = (1 + hits) / (1 + draws), which never returns 0 (Phipson & Smyth 2010).
    """
    n = len(diffs)
    if n <= EXACT_PERMUTATION_MAX_N:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        signs = 1 - 2 * bits
    else:
        signs = np.random.default_rng(seed).choice([-1, 1], size=(MONTE_CARLO_PERMUTATIONS, n))
    observed = abs(diffs.sum())
    tolerance = TIE_RELATIVE_TOLERANCE * np.abs(diffs).sum()
    hits = int(np.count_nonzero(np.abs(signs @ diffs) >= observed - tolerance))
    if n <= EXACT_PERMUTATION_MAX_N:
        return hits / len(signs)
    return (1 + hits) / (1 + len(signs))


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
