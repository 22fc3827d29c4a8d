"""Running code as on `pip install onecycle` (torch, numpy, pandas) in this fully installed venv: a
fresh interpreter in which the extras' packages cannot be imported, as if they were not installed.

Each blocked top-level name is set to None in sys.modules before anything runs: `import yaml`
then raises ModuleNotFoundError (name "yaml") and importlib.util.find_spec("yaml") returns None,
both as for a package that is not there (torch itself probes optional packages with find_spec).
A fresh interpreter has imported none of them yet.
"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO
from onecycle.cli import WORKFLOW_MODULES

# What `onecycle[plots]` adds to the library, and what `onecycle[workflow]` adds beyond that
# (tests/test_library_install.py pins WORKFLOW_MODULES to pyproject.toml), by import name.
PLOTS = ("matplotlib",)
WORKFLOW_ONLY = tuple(name for name in WORKFLOW_MODULES if name not in PLOTS)

_BLOCKER = "import sys\nfor _name in {blocked!r}:\n    sys.modules[_name] = None\n"


def run_python(code: str, blocked: tuple[str, ...], cwd: str | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where `blocked` cannot be imported; stdout and stderr
    captured as text. The worktree's src/ comes first on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", _BLOCKER.format(blocked=set(blocked)) + code],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def run_cli(argv: list[str], blocked: tuple[str, ...], cwd: str | None = None) -> subprocess.CompletedProcess:
    """`onecycle ARGV` in such an interpreter (the console script's entry point, onecycle.cli.main)."""
    return run_python(f"from onecycle.cli import main\nsys.exit(main({argv!r}))\n", blocked, cwd=cwd)
