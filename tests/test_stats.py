"""Aggregation statistics against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from scipy import stats as scipy_stats

from onecycle.report.stats import (difference_bounds, holm, mean_std, seeds_to_settle, t_interval, time_to_accuracy,
                                   verdict, welch_bounds_from_stats)

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
        t_interval([1.0, math.inf])


# --------------------------------------------------------------------------- t_interval

# t quantiles written out, so that the interval is checked against numbers scipy did not produce:
# t(0.975, 2) = 4.302653 and t(0.975, 4) = 2.776445 (any t table).
T975 = {2: 4.302653, 4: 2.776445}


def test_t_interval_of_three_seeds_by_hand():
    # 86.40, 86.45, 87.15 (the smoke's 1cycle seeds): mean 86.6667, deviations -0.2667, -0.2167,
    # +0.4833, sum of squares 0.0711 + 0.0469 + 0.2336 = 0.3517, sd sqrt(0.3517 / 2) = 0.4193,
    # se 0.4193 / sqrt 3 = 0.2421; half width 4.302653 * 0.2421 = 1.0417. The seeds' own range
    # [86.40, 87.15], which a percentile bootstrap of 3 values cannot leave, is far narrower.
    low, high = t_interval([86.40, 86.45, 87.15])
    sd = math.sqrt(((86.40 - 86.6667) ** 2 + (86.45 - 86.6667) ** 2 + (87.15 - 86.6667) ** 2) / 2)
    half = T975[2] * sd / math.sqrt(3)
    # 1e-4 pp: the hand values carry 4 decimals of the mean; the t quantile 7 significant digits.
    assert (low, high) == pytest.approx((86.6667 - half, 86.6667 + half), abs=1e-4)
    assert low < 86.40 - 0.5 and high > 87.15 + 0.3


def test_t_interval_at_another_confidence_and_n():
    # 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); 95 % with df 4.
    low, high = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (low, high) == pytest.approx((3 - T975[4] * math.sqrt(0.5), 3 + T975[4] * math.sqrt(0.5)), abs=1e-5)
    narrower = t_interval([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.8)
    assert low < narrower[0] < narrower[1] < high


def test_t_interval_needs_two_values_with_a_spread():
    for values in ([], [86.4], [86.4, 86.4, 86.4]):
        assert all(math.isnan(v) for v in t_interval(values))
    with pytest.raises(ValueError, match="confidence"):
        t_interval([1.0, 2.0], confidence=1.0)


# --------------------------------------------------------------------------- holm

def test_holm_by_hand():
    # m = 4, sorted p: 0.01, 0.02, 0.03, 0.04 -> 4 * 0.01 = 0.04, 3 * 0.02 = 0.06, 2 * 0.03 = 0.06,
    # 1 * 0.04 = 0.04 -> monotone: 0.04, 0.06, 0.06, 0.06. In the given order.
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # At alpha 0.05 only the smallest survives, where uncorrected all four would.
    assert [p <= 0.05 for p in holm([0.03, 0.01, 0.04, 0.02])] == [False, True, False, False]


def test_holm_caps_at_one_and_leaves_untested_claims_out_of_m():
    # NaN (a claim without a test) is not one of the m = 2: 2 * 0.3 = 0.6, then max(0.6, 1 * 0.9).
    adjusted = holm([0.9, math.nan, 0.3])
    assert adjusted[0] == pytest.approx(0.9) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.6)
    assert holm([0.7, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
    with pytest.raises(ValueError, match="p-values"):
        holm([1.5])


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


def test_identical_paired_differences_keep_the_paired_design_and_give_no_bound():
    # Both seeds +2.49 pp while each group spreads by 0.27: Welch would bound the mean from the
    # groups' spreads, but the seeds pair the runs by construction; the data may not pick the test.
    bounds = difference_bounds({0: 91.06 + 0.19, 1: 91.06 - 0.19}, {0: 88.57 + 0.19, 1: 88.57 - 0.19})
    assert bounds.pairing == "none" and bounds.test == "no test" and math.isnan(bounds.lower)
    assert bounds.mean_diff == pytest.approx(2.49) and "identical" in bounds.note and "another seed" in bounds.note


def test_p_values_agree_with_the_bounds():
    # The lower bound clears a threshold exactly when the "supported" p is below 1 - confidence.
    bounds = difference_bounds({0: 91.0, 1: 91.5, 2: 90.8}, {0: 88.0, 1: 88.4, 2: 87.9})
    assert bounds.test == "paired t, df 2"
    support, contradict = bounds.p_values(bounds.lower)
    assert support == pytest.approx(0.05) and contradict == pytest.approx(0.95)
    # Differences 3.0, 3.1, 2.9: t = (3 - 2) / (0.1 / sqrt 3) = 17.32 on 2 df.
    assert bounds.p_values(2.0)[0] == pytest.approx(scipy_stats.t.sf(17.320508, 2), rel=1e-5)
    assert all(math.isnan(p) for p in difference_bounds({0: 1.0}, {0: 0.0}).p_values(0.0))


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
