"""Short labels for what a group ran, for table rows and legends: the LR bounds it used.

A group's name (`onecycle_3ep`) is a config key; a reader needs the schedule and its learning
rates, and whether the range test chose them, as Part 1's tables print them ("1cycle
0.01-0.1", "0.01/inv"). Labels are read from a run's resolved schedule (metrics.json
`config.schedule_resolved`), so they state the bounds the run actually trained with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from onecycle.schedules import make_schedule, schedule_frame
from onecycle.training.schedule_setup import LR_BOUND_PARAMS

# The papers' names for the suite's policies, the one place a legend, table or answer takes them
# from: CLR for one triangular cycle and PC-LR for a piecewise-constant (multistep) LR (SC
# arXiv:1708.07120 Table 1, Fig 1a), 1cycle for Smith's policy (Part 1 arXiv:1803.09820); the
# rest print as their policy name (Caffe's inv, step, fixed, ...).
POLICY_NAMES = {"smith_1cycle": "1cycle", "fastai_1cycle": "fastai 1cycle", "torch_1cycle": "torch 1cycle",
                "triangular": "CLR", "triangular2": "CLR triangular2", "exp_range": "CLR exp_range",
                "multistep": "PC-LR"}


def policy_name(policy: str) -> str:
    """The papers' name of a schedule policy ("triangular" -> "CLR"), or the policy itself."""
    return POLICY_NAMES.get(policy, policy)


def _lr(value: float) -> str:
    return f"{value:.3g}"


def lr_range(config: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(low, high) LR a run trained with, from its config's resolved schedule: the cyclic
    policies' (low, high) parameters as the range test sets them (LR_BOUND_PARAMS), a peak-only
    policy's (None, peak), any other's (None, base_lr); (None, None) if it has none."""
    resolved = config.get("schedule_resolved") or {}
    policy = resolved.get("policy", config.get("schedule", {}).get("policy", "?"))
    params = resolved.get("params", {})
    low_key, high_key = LR_BOUND_PARAMS.get(policy, (None, None))
    if high_key and params.get(high_key) is not None:
        return (params[low_key] if low_key and params.get(low_key) is not None else None), params[high_key]
    return None, params.get("base_lr")


def schedule_label(config: Mapping[str, Any]) -> str:
    """'1cycle 0.0113-0.113 (range test), CM 0.95-0.8' or 'inv 0.01, momentum 0.9' from a
    run's config (metrics.json `config`: `schedule_resolved`, `schedule.lr_bounds`, `optim`)."""
    resolved = config.get("schedule_resolved") or {}
    policy = resolved.get("policy", config.get("schedule", {}).get("policy", "?"))
    params = resolved.get("params", {})
    low, high = lr_range(config)
    # "-" joins a pair ("0.01-0.1"); a cyclic policy with only a peak says "max".
    if high is None:
        rates = ""
    elif low is not None:
        rates = f"{_lr(low)}-{_lr(high)}"
    else:
        rates = f"max {_lr(high)}" if policy in LR_BOUND_PARAMS and params.get("base_lr") is None else _lr(high)
    label = " ".join(part for part in (policy_name(policy), rates) if part)
    if config.get("schedule", {}).get("lr_bounds") == "range_test":
        label += " (range test)"
    momentum = params.get("momentum", config.get("optim", {}).get("momentum"))
    if params.get("min_momentum") is not None and momentum is not None:
        label += f", CM {momentum:g}-{params['min_momentum']:g}"
    elif momentum is not None:
        label += f", momentum {momentum:g}"
    return label


def schedule_trace(config: Mapping[str, Any]) -> pd.DataFrame:
    """The configured schedule of a run over its planned iterations (columns iteration, lr,
    momentum), computed by onecycle.schedules from the resolved config; where the schedule
    sets no momentum, the optimizer's constant momentum (optim.momentum)."""
    resolved = config["schedule_resolved"]
    frame = schedule_frame(make_schedule(resolved["policy"], resolved["steps"], **resolved["params"]))
    constant = config.get("optim", {}).get("momentum")
    if constant is not None:
        frame["momentum"] = frame["momentum"].fillna(constant)
    return frame.rename(columns={"step": "iteration"})
