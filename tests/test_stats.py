"""Aggregation statistics against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from scipy import stats as scipy_stats

from onecycle.report.stats import (PairedComparison, bootstrap_ci, difference_bounds, mean_std, paired_difference,
                            seeds_to_settle, time_to_accuracy, verdict, welch_bounds_from_stats)

# --------------------------------------------------------------------------- mean_std


def test_mean_std_uses_the_sample_std():
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5 over n-1 = 3.
    assert mean_std([1, 2, 3, 4]) == (2.5, pytest.approx(math.sqrt(5 / 3)), 4)


def test_equal_values_have_no_spread():
    assert np.std([0.1] * 3, ddof=1) > 0  # the float artefact this guards against
    assert mean_std([0.1, 0.1, 0.1])[1] == 0.0


def test_mean_std_of_one_and_of_no_value():
    mean, std, n = mean_std([93.1])
    assert (mean, n) == (93.1, 1) and math.isnan(std)
    mean, std, n = mean_std([])
    assert n == 0 and math.isnan(mean) and math.isnan(std)


def test_non_finite_values_are_refused_not_hidden():
    with pytest.raises(ValueError, match="finite"):
        mean_std([1.0, math.nan])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, math.inf])


# --------------------------------------------------------------------------- bootstrap_ci

def test_bootstrap_ci_of_two_values_by_hand():
    # Resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4, so the 2.5 % and
    # 97.5 % quantiles are 0 and 1, and so are the 20 % and 80 % ones (confidence 0.6), while
    # the 30 % and 70 % quantiles (confidence 0.4) both lie in the middle half: 0.5.
    # (The Monte Carlo share of each outer value is 0.25 +- 0.005.)
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], confidence=0.6) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], confidence=0.4) == (0.5, 0.5)


def test_bootstrap_ci_is_deterministic_given_the_seed_and_contains_the_mean():
    values = [93.2, 94.1, 92.7, 93.9, 93.5]
    low, high = bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) == (low, high)
    assert bootstrap_ci(values, seed=4) != (low, high)
    assert low < np.mean(values) < high
    assert min(values) <= low and high <= max(values)


def test_bootstrap_ci_of_one_and_of_no_value():
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_bootstrap_ci_rejects_a_confidence_outside_0_1(confidence):
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=confidence)


def _hand_bootstrap(values, confidence=0.95, n_resamples=10_000, seed=0):
    """The hand-written percentile bootstrap that scipy.stats.bootstrap replaced."""
    array = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), size=(n_resamples, len(array)))].mean(axis=1)
    return tuple(float(q) for q in np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2]))


@pytest.mark.parametrize("values, confidence, seed", [
    ([0.0, 1.0], 0.95, 0), ([93.2, 94.1, 92.7, 93.9, 93.5], 0.95, 3), ([1.0, 2.0, 3.0], 0.8, 7),
    (list(np.random.default_rng(1).normal(90, 0.5, size=13)), 0.9, 11),
])
def test_bootstrap_ci_on_scipy_gives_the_hand_written_interval(values, confidence, seed):
    # Same generator, same draws (integers(0, n, (resamples, n))), same linear quantiles; only
    # the order in which each resample's mean is summed may differ: a few ulps, 1e-15 relative.
    assert bootstrap_ci(values, confidence=confidence, seed=seed) == pytest.approx(
        _hand_bootstrap(values, confidence, seed=seed), rel=1e-12)


# --------------------------------------------------------------------------- paired_difference

def test_paired_difference_uses_shared_seeds_only_and_exact_p():
    a = {0: 3.0, 1: 5.0, 2: 4.0, 9: 100.0}
    b = {0: 2.0, 1: 3.0, 2: 1.0, 7: -100.0}
    result = paired_difference(a, b)
    # Differences 1, 2, 3: only the all-plus and all-minus of 8 sign flips reach |sum| 6.
    assert (result.n, result.mean_diff, result.p_value) == (3, 2.0, 2 / 8)
    assert result.ci_low <= 2.0 <= result.ci_high
    assert (result.ci_low, result.ci_high) == bootstrap_ci([1.0, 2.0, 3.0])


def test_paired_difference_exact_p_with_mixed_signs():
    # Differences 1, -2, 3, 4: observed sum 6. A flip of a subset of |d| = {1, 2, 3, 4} with
    # sum S gives |10 - 2S| >= 6 iff S <= 2 ({}, {1}, {2}) or S >= 8 ({1,3,4}, {2,3,4},
    # {1,2,3,4}): 6 of 16.
    a = {1: 1.0, 2: -2.0, 3: 3.0, 4: 4.0}
    b = {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}
    assert paired_difference(a, b).p_value == 6 / 16


def test_paired_difference_counts_ties_despite_float_rounding():
    # Differences -0.6, 0.6, 0.3, 0.8, observed |sum| 1.1. The 0.6s with opposite signs cancel,
    # leaving |+-0.3 +- 0.8| = 1.1 for 2 of 4 (4 flips); with equal signs +-1.2 +- 0.3 +- 0.8
    # reaches 2.3 or 1.7 for 2 of 4 each (4 flips): 8 of 16. In floats some of the tying sums
    # come out a hair below the observed one (a naive >= counts only 6).
    result = paired_difference({0: -0.6, 1: 0.6, 2: 0.3, 3: 0.8}, dict.fromkeys(range(4), 0.0))
    assert result.p_value == 8 / 16


def test_paired_difference_monte_carlo_beyond_16_pairs():
    # 18 differences of +-1, twelve positive: sum 6. Under sign flips the sum is 2K - 18,
    # K ~ Binomial(18, 1/2): p = 2 P(K >= 12) = 2 * 31180 / 2**18 = 0.23788...
    exact = 2 * sum(math.comb(18, k) for k in range(12, 19)) / 2**18
    a = {s: (1.0 if s < 12 else -1.0) for s in range(18)}
    b = {s: 0.0 for s in range(18)}
    result = paired_difference(a, b, seed=5)
    assert abs(result.p_value - exact) < 0.02  # Monte Carlo sd ~ 0.004 with 10 000 draws
    assert paired_difference(a, b, seed=5) == result


def test_paired_difference_monte_carlo_never_returns_zero():
    # 20 equal-sign differences: exact p = 2 / 2**20; 10 000 random flips almost surely miss
    # both extreme ones, leaving only the observed assignment: p = 1 / 10 001.
    result = paired_difference({s: 1.0 for s in range(20)}, {s: 0.0 for s in range(20)})
    assert result.p_value == 1 / 10_001


def test_paired_difference_with_one_and_no_shared_seed():
    one = paired_difference({0: 2.0, 1: 5.0}, {1: 4.0})
    assert one == PairedComparison(1, 1.0, 1.0, 1.0, 1.0)
    none = paired_difference({0: 2.0}, {1: 4.0})
    assert none.n == 0
    assert all(math.isnan(v) for v in (none.mean_diff, none.ci_low, none.ci_high, none.p_value))


# --------------------------------------------------------------------------- difference_bounds

def test_paired_bounds_are_the_one_sample_t_by_hand():
    # Differences 1, 2, 3, 6: mean 3, sd sqrt(14/3), se sd/2; t(0.95, 3) = 2.3534.
    bounds = difference_bounds({0: 11.0, 1: 12.0, 2: 13.0, 3: 16.0}, dict.fromkeys(range(4), 10.0))
    half = 2.353363434801823 * math.sqrt(14 / 3) / 2
    assert (bounds.pairing, bounds.n, bounds.df) == ("paired", 4, 3.0)
    assert bounds.lower == pytest.approx(3 - half) and bounds.upper == pytest.approx(3 + half)
    assert bounds.half_width == pytest.approx(half)


def test_unpaired_bounds_are_welch_and_equal_the_summary_version():
    a, b = [91.0, 92.0, 91.4, 91.8], [89.0, 90.5, 89.8]
    bounds = difference_bounds(dict(enumerate(a)), {10 + i: v for i, v in enumerate(b)}, confidence=0.9)
    scipy_low = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="greater").confidence_interval(0.9).low
    assert bounds.pairing == "unpaired" and bounds.lower == pytest.approx(scipy_low, rel=1e-12)
    summary = welch_bounds_from_stats(np.mean(a), np.std(a, ddof=1), 4, np.mean(b), np.std(b, ddof=1), 3, 0.9)
    assert (summary.lower, summary.upper, summary.df) == pytest.approx((bounds.lower, bounds.upper, bounds.df),
                                                                       rel=1e-12)


def test_bounds_need_two_seeds_and_some_spread():
    one = difference_bounds({0: 91.0}, {0: 90.0})
    assert one.pairing == "none" and math.isnan(one.lower) and "at least 2 seeds" in one.note
    flat = difference_bounds({0: 91.0, 1: 91.0}, {0: 90.0, 1: 90.0})
    assert flat.pairing == "none" and "no spread" in flat.note and flat.mean_diff == 1.0


def test_seeds_to_settle_by_hand():
    # Paired differences 0.1, 0.5: sd 0.283. n = 4: 2.353 * 0.283 / 2 = 0.333 > 0.3; n = 5:
    # 2.132 * 0.283 / sqrt(5) = 0.270 < 0.3.
    bounds = difference_bounds({0: 0.1, 1: 0.5}, {0: 0.0, 1: 0.0})
    assert seeds_to_settle(bounds, 0.0) == 5
    assert seeds_to_settle(bounds, 0.3) is None  # the mean sits on the threshold


# --------------------------------------------------------------------------- verdict

def test_verdict_pending_and_diverged():
    assert verdict(93.0, 0.2, math.nan, math.nan, 0, 0.5) == "pending"
    assert verdict(93.0, 0.2, 93.0, 0.1, 4, 0.5, status="pending") == "pending"
    assert verdict(93.0, 0.2, math.nan, math.nan, 0, 0.5, status="diverged") == "diverged"


@pytest.mark.parametrize("ours_mean, expected", [
    (93.5, "replicated"),  # |diff| = 0.5 = tolerance exactly: inclusive
    (92.5, "replicated"),
    (93.75, "not replicated"),
])
def test_verdict_tolerance_boundary_without_spread(ours_mean, expected):
    assert verdict(93.0, 0.0, ours_mean, 0.0, 4, 0.5) == expected


@pytest.mark.parametrize("ours_mean, expected", [(93.0, "replicated"), (93.25, "not replicated")])
def test_verdict_band_from_both_spreads(ours_mean, expected):
    # band = 2 sqrt(0.75**2 + 1**2) = 2 * 1.25 = 2.5; tolerance 0.5 -> |diff| <= 3 replicates.
    assert verdict(90.0, 0.75, ours_mean, 1.0, 4, 0.5) == expected


def test_verdict_without_paper_std_or_with_a_single_run():
    # paper_std None: band = 2 * 1.0 = 2; tolerance 0.5 -> 2.5.
    assert verdict(90.0, None, 92.5, 1.0, 4, 0.5) == "replicated"
    assert verdict(90.0, None, 92.75, 1.0, 4, 0.5) == "not replicated"
    # One run of ours (std NaN counts 0): band = 2 * 0.75 = 1.5; tolerance 0.5 -> 2.
    assert verdict(90.0, 0.75, 92.0, math.nan, 1, 0.5) == "replicated"
    assert verdict(90.0, 0.75, 92.25, math.nan, 1, 0.5) == "not replicated"


def test_verdict_rejects_bad_arguments():
    with pytest.raises(ValueError, match="status"):
        verdict(90.0, 0.1, 90.0, 0.1, 4, 0.5, status="done")
    with pytest.raises(ValueError, match="tolerance"):
        verdict(90.0, 0.1, 90.0, 0.1, 4, -1.0)
    with pytest.raises(ValueError, match="finite"):
        verdict(90.0, 0.1, math.nan, 0.1, 4, 0.5)


# --------------------------------------------------------------------------- time_to_accuracy

CURVE = pd.DataFrame({
    "iteration": [0, 100, 200, 300, 400, 500],
    "epoch": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5],
    "wall_time_s": [0.0, 10.0, 21.0, 33.0, 44.0, 56.0],
    "test_accuracy": [0.10, math.nan, 0.85, 0.90, 0.88, 0.93],
})


@pytest.mark.parametrize("target, x, expected", [
    (0.85, "iteration", 200.0),  # reached exactly (>=)
    (0.89, "iteration", 300.0),  # first reached at 300, not regained at 400
    (0.89, "epoch", 1.5),
    (0.93, "wall_time_s", 56.0),
    (0.05, "iteration", 0.0),
])
def test_time_to_accuracy_hits(target, x, expected):
    assert time_to_accuracy(CURVE, target, x=x) == expected


def test_time_to_accuracy_never_reached():
    assert time_to_accuracy(CURVE, 0.95) is None


# --------------------------------------------------------------------------- small n

@pytest.mark.parametrize(("n", "p"), [(1, 1.0), (2, 0.5), (3, 0.25), (5, 0.0625), (6, 0.03125), (16, 2 / 2**16)])
def test_smallest_sign_flip_p_is_reached_by_differences_of_one_sign(n, p):
    from onecycle.report.stats import smallest_sign_flip_p

    assert smallest_sign_flip_p(n) == p
    # The bound is attained: n positive differences give exactly this p.
    assert paired_difference({s: 1.0 + s for s in range(n)}, dict.fromkeys(range(n), 0.0)).p_value == p


def test_smallest_sign_flip_p_beyond_exact_enumeration_and_of_no_pair():
    from onecycle.report.stats import MONTE_CARLO_PERMUTATIONS, smallest_sign_flip_p

    # 20 pairs: 2 / 2**20 is below what 10 000 random flips can resolve, 1 / 10 001.
    assert smallest_sign_flip_p(20) == 1 / (1 + MONTE_CARLO_PERMUTATIONS)
    assert math.isnan(smallest_sign_flip_p(0))
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        smallest_sign_flip_p(-1)


def test_pairs_needed_for_p():
    from onecycle.report.stats import pairs_needed_for_p

    # 2 / 2**5 = 0.0625 > 0.05 >= 2 / 2**6 = 0.03125; 2 / 2**7 = 0.0156 > 0.01 >= 2 / 2**8.
    assert pairs_needed_for_p(0.05) == 6
    assert pairs_needed_for_p(0.01) == 8
