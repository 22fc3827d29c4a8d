"""Learning-rate and momentum schedules as closed-form functions of the 0-based iteration.

A schedule is a pure value: `lr(it)` and `momentum(it)` depend on `it` alone, so a resumed run
needs only its iteration count (docs/design.md §4). Each policy reproduces a named source, and
tests/test_schedules.py pins each one against torch's own scheduler where one exists and
against hand-computed values at every phase boundary otherwise. Where each family lives:

- base: `Schedule`, the value every policy is;
- one_cycle: Smith's 1cycle as his Caffe code executed it and as the papers describe it, with
  Caffe's cyclical momentum (docs/paper_reference.md D3, D4), fastai's and PyTorch's 1cycle;
- classic: CLR (D1), Caffe's classic policies and cosine annealing;
- params: the parameter checks every builder reads through;
- registry: `make_schedule(policy, steps, **params)` builds one, checking every parameter;
  `POLICIES` lists them;
- torch_adapter: `OneCycleScheduler` drops a schedule into anyone's PyTorch loop, with
  `total_steps(epochs, loader)` iterations; `apply_schedule` is the stateless form our own
  training loop calls every iteration.

Every public name is importable from `onecycle.schedules` itself; torch_adapter's, which need
torch, are imported on first access (PEP 562), so config checks and report jobs that only build
schedules do not pay torch's import.
"""

from __future__ import annotations

from onecycle.lazy import lazy_attributes
from onecycle.schedules.base import Schedule
from onecycle.schedules.classic import (CaffeExp, CaffeFixed, CaffeInv, CaffeMultiStep, CaffePoly, CaffeStep,
                                        Cosine, CyclicalLR)
from onecycle.schedules.one_cycle import CaffeCyclicalMomentum, FastaiOneCycle, SmithOneCycle, TorchOneCycle
from onecycle.schedules.params import REQUIRED, DerivedDefault
from onecycle.schedules.registry import POLICIES, PolicyInfo, make_schedule, schedule_frame

__getattr__ = lazy_attributes(__name__, dict.fromkeys(
    ("OneCycleScheduler", "apply_schedule", "check_momentum_groups", "group_momentum", "set_momentum", "total_steps"),
    "torch_adapter"))

__all__ = [
    "Schedule",
    "SmithOneCycle", "CaffeCyclicalMomentum", "FastaiOneCycle", "TorchOneCycle",
    "CyclicalLR", "CaffeFixed", "CaffeStep", "CaffeMultiStep", "CaffeInv", "CaffeExp", "CaffePoly", "Cosine",
    "REQUIRED", "DerivedDefault",
    "PolicyInfo", "POLICIES", "make_schedule", "schedule_frame",
    "apply_schedule", "OneCycleScheduler", "total_steps", "check_momentum_groups", "set_momentum",
    "group_momentum",
]
