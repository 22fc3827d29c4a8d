"""The LR range test (CLR paper §3.3; SC §3; Part 1 §4.1) as a library call on any PyTorch
model, optimizer and iterable of batches.

Train for a few hundred iterations while the LR climbs from `start_lr` (default: the
optimizer's LR, as torch-lr-finder) to `end_lr`; record, per iteration, lr, momentum, the raw
and the smoothed train loss, and every `eval_every` iterations the loss and accuracy on a fixed
held-out subset: Smith reads test accuracy and test loss, not only the train loss
(docs/paper_reference.md D2). Stop when the loss diverges (onecycle.bounds.divergence_reason:
raw or smoothed loss, non-finite values).

The smoothed loss is fastai's (AvgSmoothLoss, beta 0.98): an exponential moving average started
at 0 and divided by 1 - beta**(it+1), i.e. the mean of the losses so far weighted by
beta**age, so its first value is the first loss. torch-lr-finder smooths differently: its
average starts at the first loss and weighs each new one by smooth_f = 0.05, undivided.

Ramps: "linear" is Smith's (Caffe `triangular` with base 0 and stepsize = max_iter,
docs/paper_reference.md C1: lr = start + (end - start) * it / iterations, so end_lr itself is
never run); "exponential" is torch-lr-finder's `ExponentialLR` (lr = start * (end/start) **
(it / (iterations - 1)), end_lr at the last iteration). By default the ramp is exponential when
the range spans more than EXPONENTIAL_RAMP_DECADES decades, else linear; the result says which
ran (`RangeTestResult.ramp`). Each param group keeps its LR's ratio to group 0's throughout.

A library module: it imports torch, numpy, pandas and onecycle's library modules only (the
plot's matplotlib when asked for a plot); the workflow's job around it is
onecycle.training.range_test_job.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from onecycle import bounds as bound_rules
from onecycle.evaluation import batch_pair, class_targets, evaluate, model_device, move_to
from onecycle.progress import SILENT, Progress
from onecycle.schedules import check_momentum_groups, group_momentum, set_momentum

HISTORY_COLUMNS = ("iteration", "lr", "momentum", "train_loss", "smoothed_loss", "test_loss", "test_accuracy")
RAMPS = ("linear", "exponential")

# The default ramp is exponential above this many decades of LR: a linear ramp over k decades
# runs 90 % of its iterations in the top decade and about 9 x 10**-k of them in the bottom one,
# so past two decades (under 9 % in the bottom one) the low LRs get next to no points. fastai's
# and Lightning's default ranges span 8 decades (1e-7 -> 10, 1e-8 -> 1), exponentially
# (docs/peers.md §8); Smith's linear ones span a decade or start at 0. The plot's log axis uses
# the same threshold (range_test_plot.LOG_SCALE_DECADES).
EXPONENTIAL_RAMP_DECADES = 2.0


def ramp_lr(ramp: str, start_lr: float, end_lr: float, iterations: int, it: int) -> float:
    if ramp == "linear":
        return start_lr + (end_lr - start_lr) * it / iterations
    return start_lr * (end_lr / start_lr) ** (it / (iterations - 1))


def default_ramp(start_lr: float, end_lr: float) -> str:
    """"exponential" when start_lr > 0 and end_lr / start_lr exceeds EXPONENTIAL_RAMP_DECADES
    decades, else "linear" (Smith's, which also starts from 0)."""
    # The slack keeps an exact two-decade span on the linear side (1e-6..1e-4 is
    # 100.00000000000001x in floating point), as range_test_plot.choose_scale does.
    if start_lr > 0 and math.log10(end_lr / start_lr) > EXPONENTIAL_RAMP_DECADES + 1e-9:
        return "exponential"
    return "linear"


@dataclass
class RangeTestResult:
    """history: one row per iteration run (HISTORY_COLUMNS); suggestions: every bound rule's
    Suggestion (onecycle.bounds; empty for a momentum range test); diverged: where and why the
    loss diverged, or None; stop_reason: why the test ended before `iterations`, or None;
    ramp and start_lr: what ran, after the defaults were resolved."""

    history: pd.DataFrame
    suggestions: dict[str, bound_rules.Suggestion]
    diverged: dict[str, Any] | None
    stop_reason: str | None = None
    ramp: str = field(kw_only=True)
    start_lr: float = field(kw_only=True)

    def plot(self, ax: Any = None) -> Any:
        """The curve and every rule's suggestion on the matplotlib `ax` given (returned), or on
        a new Figure (returned); nothing is written to disk. Needs matplotlib (onecycle[plots])."""
        plot_lr_range_test = plot_function("onecycle.range_test_plot", "plot_lr_range_test",
                                           "RangeTestResult.plot()")
        return plot_lr_range_test(self.history, self.suggestions, ax=ax, diverged=self.diverged)


def plot_function(module: str, name: str, what: str) -> Callable:
    """`name` from the plotting `module`; without matplotlib, a ModuleNotFoundError whose one line
    says which extra installs it (the library itself needs torch, numpy and pandas only)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "matplotlib":
            raise
        raise ModuleNotFoundError(f"{what} needs matplotlib: pip install 'onecycle[plots]'",
                                  name=error.name) from None


class _TrainStream:
    """The training batches of one range test.

    A re-iterable (list, DataLoader) is iterated again whenever a pass ends, like a training
    loop's epochs. A one-shot iterable (a generator or iterator: iter(x) is x) is read once,
    and the test ends early when it runs out, unless `cache` keeps its batches in memory to
    replay them. A pass that yields nothing ends the test, so an exhausted source never loops
    forever; a source without a single batch is a ValueError.
    """

    def __init__(self, batches: Iterable, cache: bool) -> None:
        self.source = batches
        self.cache: list | None = [] if cache else None
        self.iterator: Iterator = iter(batches)
        self.replaying = False
        self.in_pass = 0
        self.total = 0

    def next(self) -> Any | None:
        """The next batch, or None once the source is exhausted."""
        while True:
            try:
                batch = next(self.iterator)
            except StopIteration:
                if self.in_pass == 0:
                    if self.total == 0:
                        raise ValueError("train_batches yielded no batch: a range test needs at least "
                                         "one") from None
                    return None
                self.in_pass = 0
                self.replaying = self.cache is not None
                self.iterator = iter(self.cache if self.replaying else self.source)
                continue
            self.in_pass += 1
            self.total += 1
            if self.cache is not None and not self.replaying:
                self.cache.append(batch)
            return batch


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_arguments(model: Any, train_batches: Any, optimizer: Any, start_lr: Any, end_lr: Any,
                     iterations: Any, ramp: Any, eval_batches: Any, eval_every: Any,
                     momentum_range: Any, loss_fn: Any, smoothing: Any, divergence_factor: Any,
                     device: Any) -> torch.device | None:
    """Raise a one-line TypeError/ValueError naming the first bad argument; return the device."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    for name, value in (("train_batches", train_batches), ("eval_batches", eval_batches)):
        if value is None and name == "eval_batches":
            continue
        if isinstance(value, (str, bytes, torch.Tensor)) or not isinstance(value, Iterable):
            raise TypeError(f"{name} must be an iterable of (inputs, targets) batches (a DataLoader, "
                            f"a list, a generator), got {type(value).__name__}")
    if ramp is not None and ramp not in RAMPS:
        raise ValueError(f"ramp must be 'linear', 'exponential' or None (by the range), got {ramp!r}")
    if not isinstance(iterations, numbers.Integral) or isinstance(iterations, bool) or iterations < 2:
        raise ValueError(f"iterations must be an integer >= 2 (a ramp needs two LRs), got {iterations!r}")
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if ramp == "exponential" and start_lr == 0:
        raise ValueError("start_lr must be > 0 for an exponential ramp (it multiplies start_lr), got 0; "
                         "use e.g. 1e-7 (fastai) or ramp='linear' (Smith's, from 0)")
    if end_lr < start_lr:
        raise ValueError(f"end_lr ({end_lr!r}) must be above start_lr ({start_lr!r}): the LR ramps up")
    if end_lr == start_lr and momentum_range is None:
        raise ValueError(f"end_lr equals start_lr ({start_lr!r}): give momentum_range for a momentum "
                         "range test, or an end_lr above start_lr")
    if momentum_range is not None:
        # Up to 1 inclusive: Part 1's momentum range test (Fig 7b) ramps 0.7 -> 1.
        if (not isinstance(momentum_range, (tuple, list)) or len(momentum_range) != 2
                or not all(_is_number(m) and 0 <= m <= 1 for m in momentum_range)):
            raise ValueError(f"momentum_range must be a (start, end) pair of momenta in [0, 1], "
                             f"got {momentum_range!r}")
        check_momentum_groups(optimizer, "momentum_range")
    if not isinstance(eval_every, numbers.Integral) or isinstance(eval_every, bool) or eval_every < 1:
        raise ValueError(f"eval_every must be an integer >= 1, got {eval_every!r}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    if not _is_number(smoothing) or not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be a number in [0, 1), got {smoothing!r}")
    if not _is_number(divergence_factor) or not divergence_factor > 1:
        raise ValueError(f"divergence_factor must be a number > 1 (math.inf: stop on non-finite losses only), "
                         f"got {divergence_factor!r}")
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a torch device: {str(error).splitlines()[0]}") from None


def lr_range_test(model: nn.Module, train_batches: Iterable, optimizer: torch.optim.Optimizer, *,
                  start_lr: float | None = None, end_lr: float, iterations: int, ramp: str | None = None,
                  eval_batches: Iterable | None = None, eval_every: int = 10,
                  momentum_range: tuple[float, float] | None = None,
                  loss_fn: Callable = nn.functional.cross_entropy, smoothing: float = 0.98,
                  divergence_factor: float = bound_rules.DIVERGENCE_FACTOR,
                  device: torch.device | str | None = None, cache_batches: bool = False,
                  restore: bool = True, progress: Progress = SILENT,
                  autocast_dtype: torch.dtype | None = None) -> RangeTestResult:
    """Run an LR range test on any model, optimizer and batches; return the curve, every bound
    rule's suggestion (onecycle.bounds) side by side, and `result.plot(ax)`.

    start_lr: default the optimizer's LR (its first param group's). ramp: "linear",
    "exponential", or None: exponential over more than EXPONENTIAL_RAMP_DECADES decades, else
    linear (`result.ramp` says which ran). The LR of param group g is the ramp's times g's
    initial LR over group 0's (and times its `lr_mult`, Caffe's multiplier, when it has one);
    the history records group 0's.
    train_batches: any iterable of (inputs, targets): a DataLoader or a list is iterated again
    as often as needed; a generator or iterator is read once and the test ends when it runs out
    (with a warning and `stop_reason`), unless `cache_batches` keeps its batches to replay.
    eval_batches: the fixed held-out set scored every `eval_every` iterations and at the last
    one (a one-shot iterable is read into a list once). device: where batches go (default: the
    model's parameters' device). momentum_range: (start, end) ramped over the test, as
    momentum for SGD/Nesterov/RMSprop and beta1 for Adam/AdamW; the history records what the
    optimizer's first param group holds. loss_fn(outputs, targets) -> scalar tensor; targets
    are class indices, (N,) or (N, 1) (read as (N,); evaluation.class_targets), for the accuracy.
    divergence_factor: stop when the raw or smoothed loss exceeds it times the best smoothed
    loss so far, or on a non-finite loss (math.inf: on non-finite losses only).
    With `restore` (default) the model (weights and train/eval mode) and the optimizer are put
    back as they were, even if the test raises. `progress` hears of every iteration and
    evaluation (onecycle.progress; silent by default). `autocast_dtype` (torch.bfloat16, say): each
    iteration's forward pass and loss under torch.autocast, as `train.precision: bf16` runs them
    (onecycle.training.run.train_step); evaluations stay in the model's precision, as a run's do."""
    if start_lr is None and isinstance(optimizer, torch.optim.Optimizer):
        start_lr = float(optimizer.param_groups[0]["lr"])  # torch-lr-finder's default
    device = _check_arguments(model, train_batches, optimizer, start_lr, end_lr, iterations, ramp,
                              eval_batches, eval_every, momentum_range, loss_fn, smoothing,
                              divergence_factor, device)
    device = model_device(model) if device is None else device
    ramp = default_ramp(start_lr, end_lr) if ramp is None else ramp
    # A group's lr_mult (Caffe's multiplier, onecycle.training.optim, whose groups share one LR) on top.
    scales = [ratio * group.get("lr_mult", 1.0)
              for ratio, group in zip(group_ratios(optimizer), optimizer.param_groups)]
    if isinstance(eval_batches, Iterator):
        eval_batches = list(eval_batches)  # scored again at every evaluation
    if eval_batches is not None and not eval_batches:
        raise ValueError("eval_batches is empty: give at least one (inputs, targets) batch, or None")
    saved = snapshot(model, optimizer) if restore else None
    try:
        history, diverged, stop_reason = _run(model, _TrainStream(train_batches, cache_batches), optimizer,
                                              scales, start_lr, end_lr, iterations, ramp, eval_batches,
                                              eval_every, momentum_range, loss_fn, smoothing, divergence_factor,
                                              device, progress, autocast_dtype)
    finally:
        if saved is not None:
            put_back(model, optimizer, saved)
    # LR bounds only come from an LR ramp; a momentum range test (start_lr == end_lr) has none.
    suggestions = bound_rules.suggest_all(history, divergence_factor) if end_lr > start_lr else {}
    return RangeTestResult(history, suggestions, diverged, stop_reason, ramp=ramp, start_lr=start_lr)


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple:
    """What `put_back` restores: the model's weights and buffers, its gradients, its train/eval
    mode, and the optimizer's state and param groups."""
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    return copy.deepcopy(model.state_dict()), grads, model.training, copy.deepcopy(optimizer.state_dict())


def put_back(model: nn.Module, optimizer: torch.optim.Optimizer, saved: tuple) -> None:
    """Model and optimizer as `snapshot` found them (no gradient left from the steps in between)."""
    weights, grads, training, state = saved
    model.load_state_dict(weights)
    for parameter, grad in zip(model.parameters(), grads):
        parameter.grad = grad
    model.train(training)
    optimizer.load_state_dict(state)


def group_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each param group's LR over group 0's, as the optimizer holds them now (1 for every group
    when all hold 0). torch-lr-finder starts every group at its own LR too, but ends them all at
    end_lr; the range test and onecycle.advice keep the ratios throughout (docs/library.md,
    "Against the peers' own tests")."""
    lrs = [float(group["lr"]) for group in optimizer.param_groups]
    if lrs[0] == 0 and any(lrs):
        other = next(i for i, lr in enumerate(lrs) if lr)
        raise ValueError(f"param group 0 has lr 0 but group {other} has {lrs[other]!r}: the LR of each group "
                         "is kept relative to group 0's, so group 0 needs an lr > 0")
    return [lr / lrs[0] if lrs[0] else 1.0 for lr in lrs]


def _run(model: nn.Module, stream: _TrainStream, optimizer: torch.optim.Optimizer, scales: list[float],
         start_lr: float, end_lr: float, iterations: int, ramp: str, eval_batches: Iterable | None,
         eval_every: int, momentum_range: tuple[float, float] | None, loss_fn: Callable, smoothing: float,
         divergence_factor: float, device: torch.device,
         progress: Progress, autocast_dtype: torch.dtype | None = None
         ) -> tuple[pd.DataFrame, dict | None, str | None]:
    rows: list[dict[str, Any]] = []
    average, best_smoothed, diverged, stop_reason = 0.0, math.inf, None, None
    model.train()
    progress.start(iterations)
    for it in range(iterations):
        batch = stream.next()
        if batch is None:
            stop_reason = (f"train_batches ran out after {stream.total} batches: a generator or iterator "
                           "is read once (pass cache_batches=True to replay it, or a list or DataLoader)")
            warnings.warn(f"lr_range_test: {stop_reason}; stopped after {it} of {iterations} iterations",
                          stacklevel=3)
            break
        x, y = batch_pair(batch, "train_batches")
        lr = ramp_lr(ramp, start_lr, end_lr, iterations, it)
        momentum = None
        if momentum_range is not None:
            momentum = momentum_range[0] + (momentum_range[1] - momentum_range[0]) * it / iterations
        for group, scale in zip(optimizer.param_groups, scales):
            group["lr"] = lr * scale
            if momentum is not None:
                set_momentum(group, momentum)
        # Only with a dtype: autocast refuses device types it has no rules for (meta, say).
        with (contextlib.nullcontext() if autocast_dtype is None
              else torch.autocast(torch.device(device).type, dtype=autocast_dtype)):
            loss = loss_fn(model(move_to(x, device)), move_to(class_targets(y), device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()
        # fastai's debiased EMA (the module's docstring; not torch-lr-finder's).
        average = smoothing * average + (1 - smoothing) * value
        smoothed = average / (1 - smoothing ** (it + 1))
        row = {"iteration": it, "lr": lr, "momentum": group_momentum(optimizer.param_groups[0]),
               "train_loss": value, "smoothed_loss": smoothed, "test_loss": math.nan, "test_accuracy": math.nan}
        rows.append(row)
        reason = bound_rules.divergence_reason(value, smoothed, best_smoothed, divergence_factor)
        if reason is not None:
            diverged = {"iteration": it, "lr": lr, "loss": value, "reason": reason}
            stop_reason = f"diverged at iteration {it} (lr {lr:.4g}): {reason}"
            break
        best_smoothed = min(best_smoothed, smoothed)
        progress.step(it + 1, lr, value)
        if eval_batches is not None and ((it + 1) % eval_every == 0 or it == iterations - 1):
            row["test_loss"], row["test_accuracy"] = evaluate(model, eval_batches, loss_fn, device=device,
                                                              what="eval_batches")
            progress.evaluation(iteration=it + 1, lr=lr, test_loss=row["test_loss"],
                                test_accuracy=row["test_accuracy"], train_loss=value)
            if math.isinf(row["test_loss"]):  # divergence for onecycle.bounds too
                diverged = {"iteration": it, "lr": lr, "loss": value, "reason": "test loss is inf"}
                stop_reason = f"diverged at iteration {it} (lr {lr:.4g}): test loss is inf"
                break
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)), diverged, stop_reason
