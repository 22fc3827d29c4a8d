"""The schedule value: `Schedule`, one policy over `steps` iterations as closed-form functions
`lr(it)` and `momentum(it)` of the 0-based iteration alone, so a resumed run needs only its
iteration count (docs/design.md §4); and the base of the policies that schedule only the LR.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Schedule(ABC):
    """One policy over `steps` iterations (0 .. steps-1). Subclasses define `_lr`/`_momentum`."""

    name: str
    steps: int

    def lr(self, it: int) -> float:
        """The learning rate at 0-based iteration `it`."""
        return self._lr(self._checked(it))

    def momentum(self, it: int) -> float | None:
        """The momentum (SGD) or beta1 (Adam) at `it`; None if this policy sets no momentum."""
        return self._momentum(self._checked(it))

    def _checked(self, it: int) -> int:
        if isinstance(it, bool) or not isinstance(it, numbers.Integral):
            raise ValueError(f"{self.name}: iteration must be an integer, got {it!r}")
        if it < 0:
            raise ValueError(f"{self.name}: iteration {it} is before the schedule's start "
                             f"(iterations are 0-based, 0 .. {self.steps - 1})")
        if it >= self.steps:
            raise ValueError(f"{self.name}: iteration {it} is past the schedule's {self.steps} steps "
                             f"(iterations are 0-based, 0 .. {self.steps - 1})")
        return int(it)

    @abstractmethod
    def _lr(self, it: int) -> float: ...

    @abstractmethod
    def _momentum(self, it: int) -> float | None: ...


@dataclass(frozen=True, kw_only=True)
class _ConstantMomentumSchedule(Schedule):
    """Policies that only schedule the LR; their optional `momentum` parameter is held constant."""

    constant_momentum: float | None

    def _momentum(self, it: int) -> float | None:
        return self.constant_momentum
