"""onecycle: Leslie N. Smith's LR range test and 1cycle policy, faithfully, as a library and a
replication suite (arXiv 1506.01186, 1708.07120, 1803.09820).

`onecycle.advise` is onecycle.advice.advise, imported on first use: `import onecycle` itself
stays free of torch, so that the `onecycle` command answers `--help` at once.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "advise":
        from onecycle.advice import advise

        return advise
    raise AttributeError(f"module 'onecycle' has no attribute {name!r}")
