"""What importing the library costs next to torch-lr-finder (issue 14 #7: the target is within
1.2 x torch_lr_finder's import time).

Each round imports onecycle's library modules (schedules, range test, bound rules) in one fresh
interpreter and torch_lr_finder in another, both after `import torch`, alternating; each child
times its own import with its CPU clock (time.process_time: the shared machines' wall clock
also counts time the process waited for a core, see conftest.py) and prints it. The ratio is
torch_lr_finder's time over ours, so above 1 means ours imports faster, and the target is
1/1.2. pytest-benchmark's own figures for this test are the wall time of a whole child
(interpreter start and torch included).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from .conftest import record_ratio

ROUNDS = 12
IMPORT_TARGET = 1 / 1.2
ONECYCLE = "import onecycle.schedules, onecycle.range_test, onecycle.bounds"
TORCH_LR_FINDER = "import torch_lr_finder"


def import_seconds(statement: str) -> float:
    code = f"import time, torch\nstart = time.process_time()\n{statement}\nprint(time.process_time() - start)\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ.copy())
    return float(run.stdout.strip().splitlines()[-1])


@pytest.mark.benchmark(timer=time.perf_counter)
def test_import_time_vs_torch_lr_finder(benchmark, request):
    pytest.importorskip("torch_lr_finder", reason="torch-lr-finder comes with onecycle[test]")
    if benchmark.disabled:
        pytest.skip("run with --benchmark-only (make bench)")
    theirs: list[float] = []
    ours: list[float] = []

    def baseline() -> None:
        theirs.append(import_seconds(TORCH_LR_FINDER))

    def subject() -> None:
        ours.append(import_seconds(ONECYCLE))

    benchmark.pedantic(subject, setup=baseline, rounds=ROUNDS, warmup_rounds=1)
    # [0] of each is the warm-up round's (cold file cache).
    record_ratio(request, benchmark, theirs[1:], ours[1:], labels=("import torch_lr_finder", ONECYCLE),
                 work=1, unit="imports", clock="process_time (in each child)", target=IMPORT_TARGET)
    assert len(theirs) == len(ours) == ROUNDS + 1 and min(ours) > 0
