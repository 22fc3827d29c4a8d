"""Parameter checking: `_Params` reads one policy's parameters one by one, each with its check,
and every error names the policy, the parameter and the offending value on one line;
`REQUIRED` and `DerivedDefault` mark the defaults a policy's table cannot give as a value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Marks a parameter without default in `PolicyInfo.params`."""


@dataclass(frozen=True)
class DerivedDefault:
    """A default computed from other parameters; `rule` says how (shown by `schedule --list`)."""

    rule: str

    def __repr__(self) -> str:
        return self.rule


def _yaml_hint(text: str) -> str:
    try:
        float(text)
    except ValueError:
        return ""
    return " (YAML 1.1 reads 1e-4 as a string: write 1.0e-4)"


_FROM_PARAMS: Any = object()  # `value` default of the _Params readers: read the named parameter


class _Params:
    """One policy's parameters (defaults filled in), read one by one with a check each; every
    error names the policy, the parameter and the offending value, on one line."""

    def __init__(self, policy: str, values: dict[str, Any]) -> None:
        self.policy = policy
        self.values = values

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ValueError(f"{self.policy}: {name} {problem}")

    def given(self, name: str) -> bool:
        return not isinstance(self.values[name], DerivedDefault)

    def number(self, name: str, *, at_least: float | None = None, above: float | None = None,
               below: float | None = None, at_most: float | None = None, value: Any = _FROM_PARAMS) -> float:
        value = self.values[name] if value is _FROM_PARAMS else value
        if isinstance(value, str):
            self.fail(name, f"must be a number, got the string {value!r}{_yaml_hint(value)}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            self.fail(name, f"must be a finite number, got {value!r}")
        value = float(value)
        if at_least is not None and value < at_least:
            self.fail(name, f"must be >= {at_least:g}, got {value!r}")
        if above is not None and value <= above:
            self.fail(name, f"must be > {above:g}, got {value!r}")
        if below is not None and value >= below:
            self.fail(name, f"must be < {below:g}, got {value!r}")
        if at_most is not None and value > at_most:
            self.fail(name, f"must be <= {at_most:g}, got {value!r}")
        return value

    def lr(self, name: str) -> float:
        return self.number(name, at_least=0.0)

    def momentum(self, name: str, value: Any = _FROM_PARAMS) -> float:
        # SGD momentum / Adam beta1: 1 or more never forgets (or diverges).
        return self.number(name, at_least=0.0, below=1.0, value=value)

    def optional_momentum(self, name: str) -> float | None:
        return None if self.values[name] is None else self.momentum(name)

    def fraction(self, name: str) -> float:
        return self.number(name, above=0.0, below=1.0)

    def count(self, name: str, *, at_least: int = 1, value: Any = _FROM_PARAMS) -> int:
        """An iteration count. An integral float (1000.0, or 1e3 typed on the command line) is
        accepted: Caffe's prototxt and the epoch conversion both produce whole numbers."""
        value = self.values[name] if value is _FROM_PARAMS else value
        if isinstance(value, str):
            self.fail(name, f"must be an integer, got the string {value!r}")
        integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral:
            self.fail(name, f"must be an integer, got {value!r}")
        if value < at_least:
            self.fail(name, f"must be an integer >= {at_least}, got {value!r}")
        return int(value)

    def flag(self, name: str) -> bool:
        value = self.values[name]
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {value!r}")
        return value

    def choice(self, name: str, options: Sequence[str]) -> str:
        value = self.values[name]
        if value not in options:
            self.fail(name, f"must be one of {', '.join(map(repr, options))}, got {value!r}")
        return value

    def at_least_lr(self, name: str, low_name: str, low: float) -> float:
        value = self.lr(name)
        if value < low:
            self.fail(name, f"must be >= {low_name} ({low!r}), got {value!r}")
        return value
