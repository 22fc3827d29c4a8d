"""The library as anyone's PyTorch loop sees it (issue 14 #7): what importing it costs, what
installing it needs, and that its exponential range test is torch-lr-finder's."""

import copy
import json
import math
import os
import subprocess
import sys
import tomllib

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import REPO, needs_fashion_mnist
from onecycle.range_test import lr_range_test

LIBRARY_MODULES = ("onecycle.schedules", "onecycle.range_test", "onecycle.bounds", "onecycle.advice")


def _new_top_level_modules(preloaded: str, modules: tuple[str, ...]) -> list[str]:
    """Top-level packages outside the standard library that importing `modules` loads, in a
    fresh interpreter that has already imported `preloaded`."""
    code = (f"import sys\nimport {preloaded}\nbefore = set(sys.modules)\n"
            + "".join(f"import {m}\n" for m in modules)
            + "new = {name.split('.')[0] for name in set(sys.modules) - before}\n"
            + "import json; print(json.dumps(sorted(new - set(sys.stdlib_module_names))))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    return json.loads(run.stdout)


def test_7_the_library_imports_only_torch_numpy_pandas_and_itself():
    # #7: `import onecycle.range_test` pulled pydantic, yaml, torchvision and sympy (2,689
    # modules against torch_lr_finder's 1,383).
    assert _new_top_level_modules("torch, numpy, pandas", LIBRARY_MODULES) == ["onecycle"]


def test_7_the_plot_helper_adds_only_matplotlib():
    # matplotlib.figure: matplotlib with what its figures need (dateutil, fontTools, ...).
    assert _new_top_level_modules("torch, numpy, pandas, matplotlib.figure",
                                  ("onecycle.range_test_plot", "onecycle.advice_plot")) == ["onecycle"]


def test_7_pip_install_onecycle_installs_the_library_and_extras_install_the_suite():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for r in requirements}

    assert names(project["dependencies"]) == {"torch", "numpy", "pandas"}
    extras = project["optional-dependencies"]
    assert {"plots", "workflow", "test", "slurm", "all"} <= set(extras)
    assert names(extras["plots"]) == {"matplotlib"}
    assert {"snakemake", "pydantic", "pyyaml", "torchvision", "seaborn"} <= names(extras["workflow"])
    assert {"pytest", "pytest-benchmark", "torch-lr-finder"} <= names(extras["test"])
    assert extras["all"] == ["onecycle[workflow,plots,test,slurm]"]


@needs_fashion_mnist
def test_7_the_exponential_range_test_reproduces_torch_lr_finders_losses_on_fashion_mnist():
    lr_finder = pytest.importorskip("torch_lr_finder", reason="torch-lr-finder comes with onecycle[test]")
    from test_range_test import _fashion_mnist_batches

    from onecycle.models import build_model

    # torch-lr-finder reads a DataLoader; batch_size=None hands over the pre-made batches as they are.
    loader = DataLoader(_fashion_mnist_batches(30, 64), batch_size=None)
    torch.manual_seed(0)
    ours_model = build_model("lenet", 10)
    theirs_model = copy.deepcopy(ours_model)
    start_lr, end_lr, iterations = 1e-4, 0.1, 30  # below where LeNet diverges: both run all 30
    ours = lr_range_test(ours_model, loader, torch.optim.SGD(ours_model.parameters(), lr=0.0, momentum=0.9),
                         start_lr=start_lr, end_lr=end_lr, iterations=iterations, ramp="exponential")
    finder = lr_finder.LRFinder(theirs_model, torch.optim.SGD(theirs_model.parameters(), lr=0.0, momentum=0.9),
                                torch.nn.CrossEntropyLoss())
    finder.range_test(loader, start_lr=start_lr, end_lr=end_lr, num_iter=iterations, step_mode="exp")
    assert ours.diverged is None and len(ours.history) == iterations == len(finder.history["loss"])
    # The same LR each iteration (the same expression) ...
    assert ours.history.lr.tolist() == finder.history["lr"]
    # ... and the same raw losses: torch-lr-finder records the first raw loss, then an EMA with
    # weight smooth_f = 0.05 on each new one (no bias correction). The same arithmetic on our
    # raw losses gives its record exactly: same weights, batches and operations on one machine.
    raw = ours.history.train_loss.tolist()
    expected = [raw[0]]
    for loss in raw[1:]:
        expected.append(0.05 * loss + (1 - 0.05) * expected[-1])
    assert finder.history["loss"] == expected
    # Not a degenerate comparison: the losses are finite and the net learned along the way.
    assert all(math.isfinite(v) for v in raw) and min(raw) < 0.8 * raw[0]
