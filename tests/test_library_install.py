"""`pip install onecycle` alone (torch, numpy, pandas), without the extras: the `onecycle`
command says in one line which extra a command needs, the library's own command runs, and the
plots say which extra draws them (issue 30). Each case runs in a fresh interpreter where the
extras' packages cannot be imported (tests/library_only.py)."""

from __future__ import annotations

import tomllib

import pytest

from conftest import REPO
from library_only import PLOTS, WORKFLOW_ONLY, run_cli, run_python
from onecycle.cli import LIBRARY_COMMANDS, WORKFLOW_MODULES, build_parser

LIBRARY_ONLY = WORKFLOW_ONLY + PLOTS
WORKFLOW_HINT = "pip install 'onecycle[workflow]'"

# Each suite command with arguments argparse accepts; none of them is read before the check.
SUITE_COMMANDS = {
    "train": ["--config", "run.yaml", "--out", "out"],
    "range-test": ["--config", "range.yaml", "--out", "out"],
    "advise": ["--config", "run.yaml", "--out", "out", "--budget", "0.1"],
    "prepare-data": ["--dataset", "digits", "--record", "record.json"],
    "caffe-cache": ["--dataset", "imagefolder", "--splits", "[]", "--record", "record.json"],
    "combine-bounds": ["--out", "bounds.json", "seed0.json"],
    "report": ["--config", "workflow.yaml"],
    "index": ["--out", "index.html", "workflow.yaml"],
    "compare-reference": ["--config", "workflow.yaml", "--reference", "a", "--run", "b"],
    "config": ["--schema", "run"],
    "plan": ["--config", "workflow.yaml"],
}


def test_the_workflow_modules_are_what_the_workflow_extra_installs():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    import_names = {"pyyaml": "yaml", "scikit-learn": "sklearn"}

    def modules(extra):
        names = {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for r in extras[extra]}
        return {import_names.get(name, name) for name in names} - {"onecycle"}

    assert "onecycle[plots]" in extras["workflow"]
    assert set(WORKFLOW_MODULES) == modules("workflow") | modules("plots")


def test_every_command_but_the_librarys_is_checked():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert commands == set(SUITE_COMMANDS) | set(LIBRARY_COMMANDS)


@pytest.mark.parametrize("command", sorted(SUITE_COMMANDS))
def test_a_suite_command_without_the_workflow_extra_says_which_extra_in_one_line(command, tmp_path):
    run = run_cli([command, *SUITE_COMMANDS[command]], LIBRARY_ONLY, cwd=str(tmp_path))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"onecycle: error: `onecycle {command}` is part of the replication suite")
    assert run.stderr.rstrip().endswith(WORKFLOW_HINT) and run.stderr.count("\n") == 1
    assert "no yaml, pydantic, torchvision" in run.stderr  # the missing modules, named
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_help_and_the_librarys_own_command_run_without_the_extras(tmp_path):
    assert run_cli(["--help"], LIBRARY_ONLY).returncode == 0
    listed = run_cli(["schedule", "--list"], LIBRARY_ONLY)
    assert listed.returncode == 0 and "smith_1cycle:" in listed.stdout
    # --set values without PyYAML: JSON's numbers, lists and booleans, bare words as strings.
    csv = run_cli(["schedule", "--policy", "torch_1cycle", "--set", "max_lr=1e-1", "--set", "three_phase=true",
                   "--set", "anneal_strategy=linear", "--steps", "10"], LIBRARY_ONLY)
    assert csv.returncode == 0, csv.stderr
    lrs = [float(line.split(",")[1]) for line in csv.stdout.splitlines()[1:]]
    # OneCycleLR's three phases over 10 steps (pct_start 0.3): up to max_lr at step 2, back to
    # max_lr / 25 at step 4, then down; read back exactly as printed (repr).
    assert lrs.index(max(lrs)) == 2 and max(lrs) == pytest.approx(0.1) and lrs[4] == pytest.approx(0.004)
    plot = run_cli(["schedule", "--policy", "fixed", "--set", "base_lr=0.1", "--steps", "3", "--plot", "lr.png"],
                   LIBRARY_ONLY, cwd=str(tmp_path))
    assert plot.returncode == 2
    assert plot.stderr == "onecycle: error: --plot needs matplotlib: pip install 'onecycle[plots]'\n"


def test_the_range_test_plot_without_matplotlib_says_which_extra_in_one_line():
    code = """
import torch
from onecycle.range_test import lr_range_test
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(5)]
result = lr_range_test(model, batches, torch.optim.SGD(model.parameters(), lr=0.01), end_lr=1.0, iterations=5)
try:
    result.plot()
except ModuleNotFoundError as error:
    print(f"{error.name}|{error}")
"""
    run = run_python(code, LIBRARY_ONLY)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "matplotlib|RangeTestResult.plot() needs matplotlib: pip install 'onecycle[plots]'\n"
