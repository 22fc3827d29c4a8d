"""Re-exports imported on first access (PEP 562), for packages whose submodules need torch.

The Snakefile, report jobs and config checks read only torch-free parts of `onecycle.data`,
`onecycle.schedules` and `onecycle.models` (the dataset catalog, the schedules, the model
catalog); importing torch costs ~2 CPU s per process, paid by every Snakemake invocation and
report job when a package imports it eagerly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_attributes(package: str, submodule_of: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name of `submodule_of` is imported from
    `package.<its submodule>` when first asked for, then kept in the package's namespace."""

    def __getattr__(name: str) -> Any:
        if name not in submodule_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{submodule_of[name]}"), name)
        setattr(sys.modules[package], name, value)  # later lookups find it without this function
        return value

    return __getattr__
