"""LR-bound heuristics: pure functions of a recorded LR range-test curve (docs/design.md §5).

Every rule reads the same `history` (one row per iteration: `lr`, `train_loss`, `smoothed_loss`,
and on evaluation rows `test_loss` / `test_accuracy`) and returns a `Suggestion`; `suggest_all`
computes them side by side so that the workflow can store them all and the config names the one
it uses. `lr_bounds` turns a suggestion's max_lr into a (base_lr, max_lr) pair with Smith's
divisors; `combine_bounds` merges several range-test seeds' bounds records into the one training
uses.

Which LR each rule returns as `max_lr` (the peak LR of a cycle, what lr_bounds uses):

| rule                    | max_lr                                                    | lr          |
|-------------------------|-----------------------------------------------------------|-------------|
| smith_accuracy_peak     | LR at the peak of test accuracy (SC, Part 1)              | None        |
| smith_loss_turn_up      | LR where the test loss turns up (its minimum; Part 1)     | None        |
| fastai_valley           | fastai's `valley` suggestion                              | = max_lr    |
| fastai_slide            | fastai's `slide` suggestion                               | = max_lr    |
| fastai_steep            | fastai's `steep` suggestion                               | = max_lr    |
| fastai_minimum          | fastai's `minimum` suggestion: (LR at min loss) / 10      | = max_lr    |
| steepest_slope_lr       | LR of the steepest descent of the loss vs LR (Lightning)  | None        |
| steepest_slope_log_lr   | the same vs log LR (torch-lr-finder's suggestion)         | None        |

fastai's suggestion is the LR its users train with, as `fit_one_cycle`'s `lr_max`, so each
fastai rule's max_lr is the suggestion itself, never a multiple of it.

Rows from the first diverged one on are excluded before every rule, by the same test the range
test stops on (`divergence_reason`): a non-finite train or smoothed loss, a raw or smoothed loss
above `divergence_factor` x the best smoothed loss of the rows before, or an infinite test
loss. So no rule suggests an LR from past a blow-up, even on a history recorded without
stopping. A rule that cannot decide (too few points, a flat curve, no descent) returns
max_lr=None and says why in `note`; no rule raises on a short, flat or diverged curve. Malformed
input (missing columns, an LR that does not strictly increase) is not a range test and raises
ValueError.

A library module: it imports numpy and pandas only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("lr", "train_loss", "smoothed_loss", "test_loss", "test_accuracy")

# Smith's rules read test accuracy / loss at evaluation rows. A centred 3-point moving average
# (2 points at either end) is the lightest smoothing that damps a one-evaluation spike (to a
# third of its height) while keeping a one-evaluation-wide true peak where it is; it needs at
# least 3 evaluations.
SMITH_SMOOTHING_WINDOW = 3

# torch-lr-finder `LRFinder.plot(skip_start=10, skip_end=5)` (davidtvs/pytorch-lr-finder,
# torch_lr_finder/lr_finder.py): points trimmed before its steepest-gradient suggestion. Both
# steepest-slope rules use them, so that they differ only in the slope's x coordinate.
STEEPEST_SKIP_START = 10
STEEPEST_SKIP_END = 5

# fastai `Learner.lr_find` (fastai/callback/schedule.py) suggests on
# `recorder.losses[num_it//10:-5]`, then cuts at the first NaN (fastai PR #3477).
FASTAI_SKIP_START_DIVISOR = 10
FASTAI_SKIP_END = 5
# fastai `slide(lr_diff=15, thresh=.005, adjust_value=1.)` defaults.
FASTAI_SLIDE_LR_DIFF = 15
FASTAI_SLIDE_THRESH = 0.005

# The range test stops when the smoothed loss exceeds 4 x its best so far: fastai's LRFinder
# (`smooth_loss > 4*best_loss`, fastai/callback/schedule.py); torch-lr-finder uses 5. The same
# factor applies to the raw loss, which catches a blow-up the lagging average rides out.
DIVERGENCE_FACTOR = 4.0

# lr_bounds divisors, docs/paper_reference.md D2: CLR paper and SC give base = max/3 or /4 (T-1 / V-2;
# we take 4); Part 1 §4.1 gives max/10-20 when only one cycle is used (V-2) and its §5 recipe
# uses max/10 (T-1).
DEFAULT_DIVISORS = {"clr": 4.0, "1cycle": 10.0}


@dataclass(frozen=True)
class Suggestion:
    """What one rule proposes for a recorded range-test curve."""

    rule: str
    max_lr: float | None  # the peak LR this rule proposes (None = the rule could not decide)
    lr: float | None  # the rule's single suggested LR where it has one (fastai: = max_lr), else None
    note: str  # why / how, or why it could not decide


# --------------------------------------------------------------------------- curve preparation


def divergence_reason(loss: float, smoothed: float, best_smoothed: float,
                      factor: float = DIVERGENCE_FACTOR) -> str | None:
    """Why a range-test iteration counts as diverged, or None.

    loss / smoothed: its raw and smoothed train loss; best_smoothed: the lowest smoothed loss
    of the iterations before it (inf for the first). The range test stops on the first
    iteration this returns a reason for, and every rule ignores the rows from there on. The
    factor rules need a positive best loss (a ratio of a negative loss means nothing); below
    that only non-finite losses count.
    """
    if not math.isfinite(loss):
        return f"loss is {loss}"
    if not math.isfinite(smoothed):
        return f"smoothed loss is {smoothed}"
    if best_smoothed <= 0:
        return None
    if loss > factor * best_smoothed:
        return f"loss {loss:.4g} exceeds {factor:g} x the best smoothed loss {best_smoothed:.4g}"
    if smoothed > factor * best_smoothed:
        return (f"smoothed loss {smoothed:.4g} exceeds {factor:g} x the best smoothed loss "
                f"{best_smoothed:.4g}")
    return None


def _diverged_at(history: pd.DataFrame, factor: float = DIVERGENCE_FACTOR) -> int:
    """Position of the first diverged row, or len(history) if none diverged.

    Validates the input, since every rule passes through here.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"range-test history lacks columns {missing}")
    lr = history["lr"].to_numpy(dtype=float)
    if not (np.all(np.isfinite(lr)) and np.all(np.diff(lr) > 0)):
        raise ValueError("range-test history: lr must be finite and strictly increasing")
    # A NaN test loss only means "not evaluated on this row"; NaN weights show up in the train
    # loss first. An infinite test loss is divergence.
    test_loss = history["test_loss"].to_numpy(dtype=float)
    best = math.inf
    rows = zip(history["train_loss"].to_numpy(dtype=float), history["smoothed_loss"].to_numpy(dtype=float))
    for i, (loss, smoothed) in enumerate(rows):
        if divergence_reason(loss, smoothed, best, factor) is not None or math.isinf(test_loss[i]):
            return i
        best = min(best, smoothed)
    return len(history)


def _before_divergence(history: pd.DataFrame, factor: float) -> pd.DataFrame:
    return history.iloc[: _diverged_at(history, factor)]


def _window(history: pd.DataFrame, skip_start: int, skip_end: int, factor: float) -> pd.DataFrame:
    """Recorded rows [skip_start, len - skip_end), then cut at divergence.

    The skips count recorded rows, as fastai's and torch-lr-finder's slicing of their recorded
    lists does; the cut at divergence comes after, as in fastai PR #3477.
    """
    stop = max(0, min(len(history) - skip_end, _diverged_at(history, factor)))
    return history.iloc[skip_start:stop]


def _refusal(rule: str, values: np.ndarray, min_points: int, what: str) -> Suggestion | None:
    """A None-suggestion if `values` are too few or constant, else None (the rule may decide)."""
    if len(values) < min_points:
        return Suggestion(rule, None, None,
                          f"too few {what} ({len(values)} < {min_points}) to decide")
    if np.ptp(values) == 0:
        return Suggestion(rule, None, None, f"flat curve: {what} are constant, nothing to pick")
    return None


# --------------------------------------------------------------------------- Smith's rules


def _smith_extremum(history: pd.DataFrame, rule: str, column: str, peak: bool, factor: float) -> Suggestion:
    """LR at the max (peak=True) or min of the lightly smoothed `column` over evaluation rows."""
    evals = _before_divergence(history, factor).dropna(subset=[column])
    values = evals[column].to_numpy(dtype=float)
    what = f"evaluations of {column} before divergence"
    if (refusal := _refusal(rule, values, SMITH_SMOOTHING_WINDOW, what)) is not None:
        return refusal
    smoothed = evals[column].rolling(SMITH_SMOOTHING_WINDOW, center=True, min_periods=1).mean()
    # np.argmax / argmin keep the first (lowest-LR) point of a tie.
    best = int(np.argmax(smoothed.to_numpy()) if peak else np.argmin(smoothed.to_numpy()))
    max_lr = float(evals["lr"].iloc[best])
    note = (f"{'max' if peak else 'min'} of {column} (centred 3-point moving average over "
            f"{len(evals)} evaluations) at lr={max_lr:.6g}")
    if best == len(evals) - 1:
        note += ("; it is the last evaluation, so the test may have ended before the curve "
                 "turned: max_lr is then a lower bound")
    return Suggestion(rule, max_lr, None, note)


def smith_accuracy_peak(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> Suggestion:
    """max_lr = LR at the peak of test accuracy (SC; docs/paper_reference.md D2 "max_lr = LR at the
    accuracy peak"; CLR paper: where accuracy "slows, becomes ragged or starts to fall")."""
    return _smith_extremum(history, "smith_accuracy_peak", "test_accuracy", True, divergence_factor)


def smith_loss_turn_up(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> Suggestion:
    """max_lr = LR where the test loss turns up, i.e. at its (lightly smoothed) minimum: Part 1
    reads the validation/test loss against LR (docs/paper_reference.md D2)."""
    return _smith_extremum(history, "smith_loss_turn_up", "test_loss", False, divergence_factor)


# --------------------------------------------------------------------------- steepest slope


def _steepest(history: pd.DataFrame, rule: str, log_lr: bool, factor: float) -> Suggestion:
    window = _window(history, STEEPEST_SKIP_START, STEEPEST_SKIP_END, factor)
    if log_lr:
        window = window[window["lr"] > 0]  # a ramp from lr=0 (Caffe triangular) has no log
    loss = window["smoothed_loss"].to_numpy(dtype=float)
    what = (f"smoothed losses after skipping the first {STEEPEST_SKIP_START} and last "
            f"{STEEPEST_SKIP_END} rows and cutting at divergence")
    # np.gradient needs 2 points.
    if (refusal := _refusal(rule, loss, 2, what)) is not None:
        return refusal
    lr = window["lr"].to_numpy(dtype=float)
    slope = np.gradient(loss, np.log(lr) if log_lr else lr)
    steepest = int(np.argmin(slope))
    if slope[steepest] >= 0:
        return Suggestion(rule, None, None, "the smoothed loss never decreases: no descent")
    max_lr = float(lr[steepest])
    x = "log lr" if log_lr else "lr"
    return Suggestion(rule, max_lr, None,
                      f"steepest descent of smoothed train loss vs {x} (np.gradient over "
                      f"{len(loss)} points) at lr={max_lr:.6g}")


def steepest_slope_lr(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> Suggestion:
    """max_lr = LR of the most negative d(smoothed loss)/d(lr) (central differences).

    Lightning >= 2.5.3 takes its gradient w.r.t. the LR values (docs/peers.md §5);
    on a linear ramp this also equals torch-lr-finder's index-spaced gradient.
    """
    return _steepest(history, "steepest_slope_lr", False, divergence_factor)


def steepest_slope_log_lr(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> Suggestion:
    """max_lr = LR of the most negative d(smoothed loss)/d(log lr): torch-lr-finder's suggestion.

    torch-lr-finder takes `np.gradient(losses)` with index spacing after skipping the first 10
    and last 5 points; on its default exponential ramp log lr is evenly spaced, so the argmin is
    the same. Its losses are an EMA started at the first loss with weight 0.05 on each new one;
    ours are fastai's beta-0.98 EMA divided by 1 - beta**(it+1) (onecycle.range_test).
    """
    return _steepest(history, "steepest_slope_log_lr", True, divergence_factor)


# --------------------------------------------------------------------------- fastai's rules
# Ported from fastai/callback/schedule.py (valley, slide, minimum, steep), which suggest on the
# Recorder's smoothed training loss (AvgSmoothLoss: EMA with beta 0.98 divided by 1 - beta**n) -- the same
# quantity as our `smoothed_loss`. Where our inputs differ:
# - fastai skips `num_it//10` points with num_it the *planned* length; a recorded history knows
#   only how many rows it has, which stands in for num_it (they differ after an early stop);
# - fastai's ramp is exponential over ~100 points. valley's and slide's arithmetic is per index,
#   and slide's threshold (0.005 loss per index) is absolute, so on a long linear ramp (Smith's)
#   they mean something else: slide then tends to stop at once, at lrs[-16];
# - fastai cuts at the first NaN only; we also cut at inf and at an infinite test loss;
# - fastai works in float32 tensors, we in float64 (only near-ties can differ);
# - on a constant curve fastai returns an arbitrary point; we return None.


def _fastai_curve(history: pd.DataFrame, factor: float,
                  positive_lr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    window = _window(history, len(history) // FASTAI_SKIP_START_DIVISOR, FASTAI_SKIP_END, factor)
    if positive_lr:
        window = window[window["lr"] > 0]
    return window["lr"].to_numpy(dtype=float), window["smoothed_loss"].to_numpy(dtype=float)


_FASTAI_POINTS = "smoothed losses in fastai's window (first n//10 and last 5 rows skipped)"


def fastai_valley(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> Suggestion:
    """fastai `valley` (default since fastai 2.5): the LR about halfway along the longest valley.

    fastai computes, for every point, the length of the longest strictly decreasing
    (not necessarily contiguous) subsequence ending there, takes the first point reaching the
    longest, and treats the valley as if contiguous: start = end - length. It suggests
    lrs[start + int(L/3) + int(L/6)] with L = end - start; start may be -1, and the index can
    then be -1, which Python wraps to the last point -- kept, as fastai does it.
    max_lr = the suggested lr.
    """
    rule = "fastai_valley"
    lrs, losses = _fastai_curve(history, divergence_factor)
    if (refusal := _refusal(rule, losses, 2, _FASTAI_POINTS)) is not None:
        return refusal
    run = np.ones(len(losses), dtype=int)
    for i in range(1, len(losses)):
        higher_before = losses[:i] > losses[i]
        if higher_before.any():
            run[i] = run[:i][higher_before].max() + 1
    end = int(np.argmax(run))
    start = end - int(run[end])
    sections = (end - start) / 3
    idx = start + int(sections) + int(sections / 2)
    lr = float(lrs[idx])
    note = (f"fastai valley: longest decreasing run of length {run[end]} ends at window point "
            f"{end}; suggestion at point {idx} of {len(losses)}")
    if idx < 0:
        note += " (negative index: fastai wraps to the last point)"
    return Suggestion(rule, lr, lr, note + "; max_lr = fastai's suggested lr")


def fastai_slide(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> Suggestion:
    """fastai `slide` (interval slide rule): walk two points 15 apart back from the high-LR end
    while their index-spaced loss gradients differ by more than 0.005; suggest the LR of the
    left point at the last step that still differed (lrs[-16] if none did). max_lr = that lr.
    """
    rule = "fastai_slide"
    lrs, losses = _fastai_curve(history, divergence_factor)
    # lrs[-(lr_diff + 1)] must exist.
    if (refusal := _refusal(rule, losses, FASTAI_SLIDE_LR_DIFF + 1, _FASTAI_POINTS)) is not None:
        return refusal
    grad = np.gradient(losses)
    right, left = -1, -1 - FASTAI_SLIDE_LR_DIFF
    suggestion = lrs[left]
    while left >= -len(losses) and abs(grad[right] - grad[left]) > FASTAI_SLIDE_THRESH:
        suggestion = lrs[left]
        right -= 1
        left -= 1
    lr = float(suggestion)
    return Suggestion(rule, lr, lr, f"fastai slide over {len(losses)} points: lr={lr:.6g}; "
                                    "max_lr = fastai's suggested lr")


def fastai_minimum(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> Suggestion:
    """fastai `minimum`: suggests lr = (LR at the minimum smoothed loss) / 10, "one-tenth the
    minimum before divergence". max_lr = lr = that tenth: fastai's suggestion, as fastai would
    pass it to fit_one_cycle (the minimum itself sits in the note).
    """
    rule = "fastai_minimum"
    lrs, losses = _fastai_curve(history, divergence_factor)
    if (refusal := _refusal(rule, losses, 2, _FASTAI_POINTS)) is not None:
        return refusal
    lr_min = float(lrs[np.argmin(losses)])
    lr = lr_min / 10
    return Suggestion(rule, lr, lr, f"fastai minimum: min smoothed loss at lr={lr_min:.6g}; "
                                    f"fastai suggests a tenth of it, lr={lr:.6g} = max_lr")


def fastai_steep(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> Suggestion:
    """fastai `steep`: forward differences of the loss over forward differences of log LR; the
    suggestion is the LR at the *left* end of the steepest segment. max_lr = that lr.
    """
    rule = "fastai_steep"
    lrs, losses = _fastai_curve(history, divergence_factor, positive_lr=True)
    if (refusal := _refusal(rule, losses, 2, _FASTAI_POINTS)) is not None:
        return refusal
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    lr = float(lrs[np.argmin(slopes)])
    return Suggestion(rule, lr, lr, f"fastai steep: steepest segment starts at lr={lr:.6g}; "
                                    "max_lr = fastai's suggested lr")


# --------------------------------------------------------------------------- public entry points

SUGGESTION_RULES: dict[str, Callable[..., Suggestion]] = {
    "smith_accuracy_peak": smith_accuracy_peak,
    "smith_loss_turn_up": smith_loss_turn_up,
    "fastai_valley": fastai_valley,
    "fastai_slide": fastai_slide,
    "fastai_steep": fastai_steep,
    "fastai_minimum": fastai_minimum,
    "steepest_slope_lr": steepest_slope_lr,
    "steepest_slope_log_lr": steepest_slope_log_lr,
}


def suggest_all(history: pd.DataFrame, divergence_factor: float = DIVERGENCE_FACTOR) -> dict[str, Suggestion]:
    """Every rule's suggestion, keyed by rule name, in SUGGESTION_RULES order. Rows from the
    first diverged one on (`divergence_reason` with `divergence_factor`) are left out."""
    return {name: rule(history, divergence_factor) for name, rule in SUGGESTION_RULES.items()}


def lr_bounds(suggestion: Suggestion, policy_kind: Literal["clr", "1cycle"],
              divisor: float | None = None) -> tuple[float, float]:
    """(base_lr, max_lr) with max_lr = the suggestion's max_lr and base_lr = max_lr / divisor.

    Default divisor (docs/paper_reference.md D2): 4 for "clr" (CLR paper and SC: max/3 or /4), 10 for
    "1cycle" (Part 1 §4.1: max/10-20 with one cycle; §5 recipe: max/10). Raises TypeError for a
    suggestion that is not a Suggestion (a rule name, a number), and ValueError if the rule
    proposed no max_lr, for an unknown policy_kind, or for a divisor <= 1 (base_lr would not be
    below max_lr).
    """
    if not isinstance(suggestion, Suggestion):
        hint = (f" (a rule name: pass result.suggestions[{suggestion!r}])"
                if isinstance(suggestion, str) else "")
        raise TypeError(f"suggestion must be a Suggestion (one of result.suggestions.values()), "
                        f"got {type(suggestion).__name__} {suggestion!r}{hint}")
    if suggestion.max_lr is None:
        raise ValueError(f"rule {suggestion.rule!r} proposed no max_lr: {suggestion.note}")
    if policy_kind not in DEFAULT_DIVISORS:
        raise ValueError(f"policy_kind must be one of {sorted(DEFAULT_DIVISORS)}, "
                         f"got {policy_kind!r}")
    if not (math.isfinite(suggestion.max_lr) and suggestion.max_lr > 0):
        raise ValueError(f"rule {suggestion.rule!r} proposed max_lr={suggestion.max_lr}, "
                         "which is not a positive LR")
    divisor = DEFAULT_DIVISORS[policy_kind] if divisor is None else divisor
    if isinstance(divisor, bool) or not isinstance(divisor, numbers.Real):
        raise TypeError(f"divisor must be a number > 1 or None, got {divisor!r}")
    if not (math.isfinite(divisor) and divisor > 1):
        raise ValueError(f"divisor must be a finite number > 1, got {divisor}")
    return suggestion.max_lr / divisor, suggestion.max_lr


def combine_bounds(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The bounds training uses, from several range-test seeds: the median of each seed's
    chosen bounds (robust to one noisy seed); seeds whose rule found nothing are left out.

    `rules` keeps every heuristic's per-seed max_lr and gives its own median bounds the same
    way, so that a run can train at any rule's suggestion (schedule.bounds_rule) and a bounds
    study can report each rule's spread over the seeds.
    """
    found = [r for r in records if r.get("max_lr") is not None]
    first = records[0]
    combined = {"chosen_rule": first["chosen_rule"], "policy_kind": first["policy_kind"],
                "n_seeds": len(records), "n_seeds_with_bounds": len(found),
                "per_seed": [{"base_lr": r.get("base_lr"), "max_lr": r.get("max_lr")} for r in records],
                "base_lr": None, "max_lr": None}
    if found:
        combined["base_lr"] = float(pd.Series([r["base_lr"] for r in found]).median())
        combined["max_lr"] = float(pd.Series([r["max_lr"] for r in found]).median())
    else:
        reasons = [r.get("no_bounds") or "no max_lr" for r in records]
        combined["no_bounds"] = f"no seed's range test gave bounds (seed 1 of {len(records)}: {reasons[0]})"
    # Records written before bounds_record stored its divisor used the policy's default.
    divisor = first.get("divisor") or DEFAULT_DIVISORS[first["policy_kind"]]
    combined["rules"] = {}
    for rule in first.get("suggestions", {}):
        per_seed = [r["suggestions"].get(rule, {}).get("max_lr") for r in records]
        values = [v for v in per_seed if v is not None]
        median = float(pd.Series(values).median()) if values else None
        combined["rules"][rule] = {"per_seed": per_seed, "n_seeds_with_bounds": len(values),
                                   "max_lr": median, "base_lr": None if median is None else median / divisor}
    return combined
