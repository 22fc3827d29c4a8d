"""Bound heuristics on synthetic range-test curves whose answers are derived by hand."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from onecycle.bounds import SUGGESTION_RULES, Suggestion, lr_bounds, suggest_all

NAN = float("nan")


def make_history(lr, smoothed_loss=None, test_loss=None, test_accuracy=None, train_loss=None):
    """A range-test history; test columns default to NaN (no evaluation rows)."""
    lr = np.asarray(lr, dtype=float)
    n = len(lr)

    def column(values, default):
        return np.full(n, default) if values is None else np.asarray(values, dtype=float)

    smoothed = column(smoothed_loss, 2.0)
    return pd.DataFrame({
        "iteration": np.arange(n),
        "lr": lr,
        "momentum": np.full(n, 0.9),
        "train_loss": smoothed if train_loss is None else column(train_loss, NAN),
        "smoothed_loss": smoothed,
        "test_loss": column(test_loss, NAN),
        "test_accuracy": column(test_accuracy, NAN),
    })


def linear_lrs(n):
    """0.01, 0.02, ..., 0.01 n: a linear ramp like Smith's."""
    return 0.01 * np.arange(1, n + 1)


def geometric_lrs(n):
    """1e-4 * 10**(i/10): an exponential ramp like fastai's, evenly spaced in log lr."""
    return 1e-4 * 10.0 ** (np.arange(n) / 10)


def eval_curve(values):
    """Linear ramp (0.01 per row) with evaluation k at row 5k+4, i.e. at lr 0.05 (k + 1)."""
    column = np.full(5 * len(values), NAN)
    column[4::5] = values
    return linear_lrs(len(column)), column


# --------------------------------------------------------------------------- Smith's rules

EVAL_LRS = 0.05 * np.arange(1, 13)  # 0.05 ... 0.60, the lrs of eval_curve's evaluations


def test_accuracy_peak_of_a_symmetric_peak_is_its_lr():
    accuracy = 0.8 - np.abs(EVAL_LRS - 0.3)  # peak 0.8 at lr 0.3
    lr, acc = eval_curve(accuracy)
    s = SUGGESTION_RULES["smith_accuracy_peak"](make_history(lr, test_accuracy=acc))
    assert s.rule == "smith_accuracy_peak"
    assert s.max_lr == pytest.approx(0.3)
    assert s.lr is None


def test_accuracy_peak_ignores_a_one_evaluation_spike():
    accuracy = 0.8 - np.abs(EVAL_LRS - 0.3)
    accuracy[1] += 0.3  # lr 0.10: raw 0.90 beats the true peak 0.80 ...
    assert EVAL_LRS[np.argmax(accuracy)] == pytest.approx(0.10)
    # ... but smoothed: at 0.10 (0.55 + 0.90 + 0.65)/3 = 0.70,
    # below 0.30's (0.75 + 0.8 + 0.75)/3 = 0.7667
    lr, acc = eval_curve(accuracy)
    assert SUGGESTION_RULES["smith_accuracy_peak"](make_history(lr, test_accuracy=acc)).max_lr == \
        pytest.approx(0.3)


def test_accuracy_still_rising_at_the_end_gives_the_last_lr_flagged_as_lower_bound():
    lr, acc = eval_curve(0.1 + EVAL_LRS)
    s = SUGGESTION_RULES["smith_accuracy_peak"](make_history(lr, test_accuracy=acc))
    assert s.max_lr == pytest.approx(0.6)
    assert "lower bound" in s.note


def test_loss_turn_up_is_the_minimum_of_a_u_shaped_test_loss():
    test_loss = 1.0 + (EVAL_LRS - 0.4) ** 2  # minimum at lr 0.4
    lr, loss = eval_curve(test_loss)
    s = SUGGESTION_RULES["smith_loss_turn_up"](make_history(lr, test_loss=loss))
    assert s.max_lr == pytest.approx(0.4)
    assert "lower bound" not in s.note


def test_smith_rules_ignore_rows_from_divergence_on():
    accuracy = 0.8 - np.abs(EVAL_LRS - 0.3)
    accuracy[9:] = 0.99  # evaluations at lr 0.50+ would win if they were kept
    lr, acc = eval_curve(accuracy)
    train = np.full(len(lr), 2.0)
    train[46] = math.inf  # row 46 (lr 0.47) diverges: evaluation 9 (row 49) comes after it
    train[47:] = NAN
    history = make_history(lr, test_accuracy=acc, train_loss=train)
    assert SUGGESTION_RULES["smith_accuracy_peak"](history).max_lr == pytest.approx(0.3)


def test_an_infinite_test_loss_on_an_evaluation_row_is_divergence():
    test_loss = 1.0 + (EVAL_LRS - 0.4) ** 2
    test_loss[5:] = 0.5  # would move the minimum to lr 0.30 ...
    test_loss[5] = math.inf  # ... but evaluation 5 (lr 0.30) already diverged
    lr, loss = eval_curve(test_loss)
    # Evaluations 0-4 (lr 0.05-0.25) remain; the loss still falls there: min at 0.25, the last one.
    s = SUGGESTION_RULES["smith_loss_turn_up"](make_history(lr, test_loss=loss))
    assert s.max_lr == pytest.approx(0.25)
    assert "lower bound" in s.note


def test_smith_rules_need_three_evaluations():
    lr, acc = eval_curve([0.3, 0.5])
    s = SUGGESTION_RULES["smith_accuracy_peak"](make_history(lr, test_accuracy=acc))
    assert s.max_lr is None
    assert "too few" in s.note and "(2 < 3)" in s.note


def test_smith_rules_return_none_on_a_flat_curve():
    lr, acc = eval_curve(np.full(12, 0.1))
    s = SUGGESTION_RULES["smith_accuracy_peak"](make_history(lr, test_accuracy=acc))
    assert s.max_lr is None
    assert "flat" in s.note


# --------------------------------------------------------------------------- steepest slope

def test_steepest_slope_vs_lr_skips_the_first_10_and_last_5_rows():
    lr = linear_lrs(40)  # spacing 0.01
    loss = np.full(40, 2.0)
    loss[0] = 9.0  # a huge drop inside the first 10 rows: skipped
    loss[20] = 1.9  # rows 19 -> 20 -> 21 drop by 0.1 then 0.2
    loss[21:35] = 1.7
    loss[35:] = -5.0  # a huge drop in the last 5 rows: skipped
    # Central differences: row 19: (1.9-2.0)/0.02 = -5; row 20: (1.7-2.0)/0.02 = -15;
    # row 21: (1.7-1.9)/0.02 = -10 -> steepest at row 20, lr 0.21.
    s = SUGGESTION_RULES["steepest_slope_lr"](make_history(lr, loss))
    assert s.max_lr == pytest.approx(0.21)
    assert s.lr is None


def two_drops():
    """Rows 14-16 fall 0.1 then 0.2 (slope vs lr -15 at row 15, lr 0.16); rows 30-32 fall 0.05
    then 0.15 (slope vs lr -10 at row 31, lr 0.32)."""
    loss = np.full(40, 2.0)
    loss[15], loss[16:30] = 1.9, 1.7
    loss[30], loss[31], loss[32:] = 1.7, 1.65, 1.5
    return make_history(linear_lrs(40), loss)


def test_steepest_slope_vs_lr_and_vs_log_lr_differ_on_a_linear_ramp():
    history = two_drops()
    assert SUGGESTION_RULES["steepest_slope_lr"](history).max_lr == pytest.approx(0.16)
    # d loss / d log lr = lr * d loss / d lr: about 0.16 * -15 = -2.4 at row 15 but
    # 0.32 * -10 = -3.2 at row 31, so vs log lr the later drop is steeper.
    assert SUGGESTION_RULES["steepest_slope_log_lr"](history).max_lr == pytest.approx(0.32)


def test_steepest_slope_returns_none_when_the_loss_never_decreases():
    s = SUGGESTION_RULES["steepest_slope_lr"](make_history(linear_lrs(30), 1.0 + linear_lrs(30)))
    assert s.max_lr is None
    assert "never decreases" in s.note


def test_steepest_slope_stops_at_divergence():
    history = two_drops()
    history.loc[25:, ["train_loss", "smoothed_loss"]] = NAN  # the drop at row 31 is gone
    assert SUGGESTION_RULES["steepest_slope_log_lr"](history).max_lr == pytest.approx(0.16)


# --------------------------------------------------------------------------- fastai's rules
# 40 recorded rows: fastai's window is rows [40//10, 40-5) = rows 4..34 (31 points).

def test_fastai_minimum_suggests_a_tenth_of_the_minimums_lr_and_lr_bounds_uses_that():
    # fastai `minimum` returns lr_min/10 ("one-tenth the minimum before divergence"), and
    # fastai passes its suggestion as fit_one_cycle's lr_max: max_lr must be that tenth, not
    # lr_min (issue 14 #5: trained with ten times the suggestion, the net stayed at chance).
    # (The dips stay above a quarter of 1.2, so that no row counts as diverged.)
    loss = np.full(40, 1.2)
    loss[2] = 0.4  # skipped (first 40//10 = 4 rows)
    loss[36] = 0.3  # skipped (last 5 rows)
    loss[20] = 0.45
    s = SUGGESTION_RULES["fastai_minimum"](make_history(geometric_lrs(40), loss))
    # Minimum at row 20, lr 1e-4 * 10**2 = 1e-2; fastai suggests 1e-3.
    assert s.max_lr == pytest.approx(1e-3) and s.lr == s.max_lr
    assert lr_bounds(s, "1cycle") == pytest.approx((1e-4, 1e-3))


def test_fastai_window_is_cut_at_the_first_nan():
    loss = 3.0 - 0.05 * np.arange(40)  # keeps falling ...
    loss[30:] = NAN  # ... until row 30 diverges: the minimum is the last finite row, 29
    s = SUGGESTION_RULES["fastai_minimum"](make_history(geometric_lrs(40), loss))
    assert s.max_lr == pytest.approx(1e-4 * 10 ** 2.9 / 10)


def test_fastai_steep_is_the_left_end_of_the_steepest_segment():
    loss = np.full(40, 2.0)
    loss[:2] = 9.0  # the drop 1 -> 2 is outside the window
    loss[21:] = 1.5  # segment 20 -> 21 falls 0.5 ...
    loss[26:] = 1.2  # ... segment 25 -> 26 only 0.3; log-lr steps are all 0.1 ln 10
    s = SUGGESTION_RULES["fastai_steep"](make_history(geometric_lrs(40), loss))
    assert s.max_lr == pytest.approx(1e-2)  # row 20, not row 21
    assert s.lr == s.max_lr


def test_fastai_valley_by_hand():
    # Window (rows 4..34): 30, 31, 32, then 29, 28, ..., 18 (points 3-14), then 19, 20, ..., 34.
    window = np.concatenate([[30, 31, 32], np.arange(29, 17, -1), np.arange(19, 35)])
    loss = np.concatenate([np.full(4, 50.0), window, np.full(5, 40.0)])
    # Longest decreasing subsequence ending at each point: 1, 1, 1, then 2, 3, ..., 13 at point
    # 14 (a value from 30-32 then 29..18); afterwards at most 12. end = 14, start = 14 - 13 = 1,
    # sections = 13/3, idx = 1 + int(4.33) + int(2.17) = 7 -> window point 7 = row 11.
    s = SUGGESTION_RULES["fastai_valley"](make_history(geometric_lrs(40), loss))
    assert s.max_lr == pytest.approx(1e-4 * 10 ** 1.1)
    assert s.lr == s.max_lr


def test_fastai_valley_wraps_a_negative_index_to_the_last_point():
    # 12 rows: window = rows [1, 7): losses 2, 1, 1.5, 2, 2.5, 3 -> longest decreasing run 2
    # ending at point 1, start = -1, sections = 2/3, idx = -1 + 0 + 0 = -1 -> the last point
    # (row 6). The rise stays below 4 x the minimum, where the range test would have stopped.
    loss = np.array([9.0, 2, 1, 1.5, 2, 2.5, 3, 0, 0, 0, 0, 0])
    s = SUGGESTION_RULES["fastai_valley"](make_history(geometric_lrs(12), loss))
    assert s.max_lr == pytest.approx(1e-4 * 10 ** 0.6)
    assert "wraps" in s.note


def test_fastai_slide_by_hand():
    # 27 rows: window = rows [2, 22), 20 points y: 2.0 for points 0-2, then -0.1 per point down
    # to 1.0 at point 12, flat after. Index gradients: g1 = 0, g2 = -0.05, g3 = g4 = -0.1,
    # g16..g19 = 0. Pairs 15 apart from the end: (19, 4) differ by 0.1, (18, 3) by 0.1,
    # (17, 2) by 0.05 -> suggestion so far point 2; (16, 1) differ by 0 <= 0.005: stop.
    # Point 2 = row 4.
    points = np.arange(20)
    window = 2.0 - 0.1 * np.clip(points - 2, 0, 10)
    loss = np.concatenate([[5.0, 5.0], window, np.full(5, 9.0)])
    s = SUGGESTION_RULES["fastai_slide"](make_history(geometric_lrs(27), loss))
    assert s.max_lr == pytest.approx(1e-4 * 10 ** 0.4)
    assert s.lr == s.max_lr


def test_fastai_slide_needs_16_points():
    # 20 rows: window = rows [2, 15), 13 points.
    s = SUGGESTION_RULES["fastai_slide"](make_history(geometric_lrs(20), 3.0 - 0.1 * np.arange(20)))
    assert s.max_lr is None
    assert "(13 < 16)" in s.note


# --------------------------------------------------------------------------- all rules

def test_suggest_all_returns_every_rule_in_order():
    lr, acc = eval_curve(0.8 - np.abs(EVAL_LRS - 0.3))
    _, test_loss = eval_curve(1.0 + (EVAL_LRS - 0.4) ** 2)
    smoothed = 3.0 - np.tanh((lr - 0.3) / 0.05)
    result = suggest_all(make_history(lr, smoothed, test_loss=test_loss, test_accuracy=acc))
    assert list(result) == list(SUGGESTION_RULES)
    assert all(isinstance(s, Suggestion) and s.rule == name for name, s in result.items())
    assert all(s.max_lr is not None for s in result.values())


@pytest.mark.parametrize("n_rows", [0, 1, 2])
def test_suggest_all_on_too_short_curves_decides_nothing_and_does_not_raise(n_rows):
    lr = linear_lrs(n_rows)
    history = make_history(lr, 2.0 - lr, test_loss=1.0 - lr, test_accuracy=lr)
    for s in suggest_all(history).values():
        assert s.max_lr is None and s.lr is None
        assert "too few" in s.note


def test_suggest_all_on_a_flat_curve_decides_nothing():
    lr, acc = eval_curve(np.full(12, 0.1))
    _, test_loss = eval_curve(np.full(12, 2.3))
    for s in suggest_all(make_history(lr, np.full(len(lr), 2.3), test_loss, acc)).values():
        assert s.max_lr is None
        assert "flat" in s.note


def test_suggest_all_on_a_curve_diverged_from_the_start_decides_nothing():
    lr = linear_lrs(30)
    history = make_history(lr, np.full(30, NAN), train_loss=np.full(30, math.inf))
    assert all(s.max_lr is None for s in suggest_all(history).values())


def test_malformed_histories_raise():
    history = make_history(linear_lrs(30))
    with pytest.raises(ValueError, match="test_accuracy"):
        suggest_all(history.drop(columns="test_accuracy"))
    with pytest.raises(ValueError, match="strictly increasing"):
        suggest_all(make_history(np.r_[linear_lrs(10), linear_lrs(10)]))


# --------------------------------------------------------------------------- lr_bounds

def test_lr_bounds_default_divisors():
    s = Suggestion("smith_accuracy_peak", 3.0, None, "")
    assert lr_bounds(s, "clr") == (0.75, 3.0)  # CLR / SC: max/4
    assert lr_bounds(s, "1cycle") == (0.3, 3.0)  # Part 1: max/10
    assert lr_bounds(s, "1cycle", divisor=20) == (0.15, 3.0)


def test_lr_bounds_refuses_a_rule_that_decided_nothing():
    with pytest.raises(ValueError, match="fastai_slide"):
        lr_bounds(Suggestion("fastai_slide", None, None, "too few"), "1cycle")


@pytest.mark.parametrize("policy_kind, divisor", [("step", None), ("clr", 1.0), ("clr", NAN)])
def test_lr_bounds_rejects_bad_arguments(policy_kind, divisor):
    with pytest.raises(ValueError):
        lr_bounds(Suggestion("x", 1.0, None, ""), policy_kind, divisor)


# --------------------------------------------------------------------------- issue 14


def test_3_every_rule_ignores_a_recorded_curve_from_a_raw_loss_blow_up_on():
    # #3: a history recorded past a blow-up (raw loss 36 at row 40 while the smoothed loss stayed
    # under 4 x its best), then the dead net at chance loss. From row 40 on, the evaluations
    # (accuracy 0.99, test loss 0.1) and the falling smoothed loss would each win their rule.
    n = 80
    lr = linear_lrs(n)
    train = np.full(n, 2.0) - 0.01 * np.arange(n)
    train[40] = 36.0
    smoothed = train.copy()
    smoothed[40] = 3.0  # the lagging average rides the spike out
    smoothed[41:] = 1.0 - 0.01 * np.arange(n - 41)  # ... and later falls steeply
    test_accuracy = np.full(n, NAN)
    test_accuracy[4::5] = 0.5 + 0.005 * np.arange(n // 5)
    test_accuracy[44::5] = 0.99
    test_loss = np.where(np.isnan(test_accuracy), NAN, 1.0)
    test_loss[44::5] = 0.1
    history = make_history(lr, smoothed, test_loss, test_accuracy, train_loss=train)
    blow_up_lr = lr[40]
    for name, suggestion in suggest_all(history).items():
        assert suggestion.max_lr is None or suggestion.max_lr < blow_up_lr, name
    # Without the factor rule (math.inf: non-finite losses only) the late rows would win.
    assert suggest_all(history, divergence_factor=math.inf)["smith_accuracy_peak"].max_lr > blow_up_lr


def test_divergence_reason_reads_raw_and_smoothed_loss_against_the_best_smoothed():
    from onecycle.bounds import divergence_reason

    assert divergence_reason(2.0, 2.0, math.inf) is None  # the first row
    assert divergence_reason(8.0, 2.0, 2.0) is None  # not above 4 x 2
    assert "loss 8.01 exceeds 4 x" in divergence_reason(8.01, 2.0, 2.0)
    assert "smoothed loss 8.01 exceeds 4 x" in divergence_reason(3.0, 8.01, 2.0)
    assert divergence_reason(math.nan, 2.0, 2.0) == "loss is nan"
    assert divergence_reason(1e9, 2.0, 2.0, factor=math.inf) is None


@pytest.mark.parametrize("suggestion, message", [
    ("fastai_valley", "pass result.suggestions['fastai_valley']"),
    (0.1, "suggestion must be a Suggestion (one of result.suggestions.values()), got float 0.1"),
])
def test_6_lr_bounds_wants_a_suggestion(suggestion, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        lr_bounds(suggestion, "1cycle")
    with pytest.raises(TypeError, match="divisor must be a number > 1 or None, got '10'"):
        lr_bounds(Suggestion("x", 1.0, None, ""), "1cycle", "10")
