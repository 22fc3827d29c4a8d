"""Snakemake's SLURM executor on a real single-node cluster with 2 fake GPUs.

Opt-in (ONECYCLE_TEST_SLURM=1), because it installs Slurm with apt-get when missing, writes
/etc/slurm, creates /dev/fakegpu*, and starts daemons: scripts/local_slurm.sh does all of it
and the finalizer stops them again. About a minute in all.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HANG_GUARD_S
from onecycle.dag import gpu_slots

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "local_slurm.sh"
WORKFLOW = ROOT / "tests" / "workflows" / "gpu_slots" / "Snakefile"

pytestmark = pytest.mark.slow


def reason_to_skip() -> str | None:
    if os.environ.get("ONECYCLE_TEST_SLURM") != "1":
        return "starts a local SLURM cluster as root; opt in with ONECYCLE_TEST_SLURM=1"
    if os.geteuid() != 0:
        return "needs root: it writes /etc/slurm, creates /dev/fakegpu* and starts daemons"
    if not (shutil.which("apt-get") or shutil.which("slurmctld")):
        return "needs apt-get to install Slurm (or Slurm installed already)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "the SLURM executor plugin is missing: pip install '.[slurm]'"
    return None


@pytest.fixture
def slurm_cluster(request):
    reason = reason_to_skip()
    if reason:
        pytest.skip(reason)
    # Registered before starting, so a half-started cluster is stopped too.
    request.addfinalizer(lambda: subprocess.run(["bash", str(CLUSTER), "stop"], check=True, timeout=HANG_GUARD_S))
    started = time.monotonic()
    subprocess.run(["bash", str(CLUSTER), "start", "2"], check=True, timeout=HANG_GUARD_S)
    print(f"cluster up in {time.monotonic() - started:.1f} s")


def read_runs(out_dir: Path) -> dict[str, list[dict[str, str]]]:
    """Job name -> one {visible, slurm_job} per execution of the job's command."""
    runs = {}
    for path in sorted(out_dir.glob("*.tsv")):
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        runs[path.stem] = [{"visible": row[2], "slurm_job": row[3]} for row in rows]
    return runs


def test_gpu_jobs_run_on_slurm_with_the_devices_slurm_bound(slurm_cluster, tmp_path):
    shutil.copy(WORKFLOW, tmp_path / "Snakefile")
    env = {key: value for key, value in os.environ.items()
           if key not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpu_slots.CLAIMED_ENV)}
    # A pool that SLURM's devices are not in: an id from it would mean the wrapper claimed
    # locally instead of stepping aside.
    env[gpu_slots.SLOTS_ENV] = "7,8"
    env[gpu_slots.LOCK_DIR_ENV] = str(tmp_path / "locks")
    # timeout -k: a stuck SLURM executor ignores SIGTERM (docs/snakemake_notes.md B.2).
    command = [
        "timeout", "-k", "15", str(HANG_GUARD_S), sys.executable, "-m", "snakemake",
        "--executor", "slurm", "--jobs", "4",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
        "--workflow-profile", "none", "--default-resources", "mem_mb=200", "runtime=10",
        "--config", "single_gpu_jobs=4",
    ]
    started = time.monotonic()
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    print(f"snakemake on SLURM took {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, run.stderr[-3000:]

    runs = read_runs(tmp_path / "out")
    assert sorted(runs) == ["double", "single_0", "single_1", "single_2", "single_3"]
    assert all(len(executions) == 1 for executions in runs.values()), runs  # gpu=2 ran once
    slurm_jobs = [executions[0]["slurm_job"] for executions in runs.values()]
    assert all(slurm_jobs) and len(set(slurm_jobs)) == len(slurm_jobs), slurm_jobs
    assert runs["double"][0]["visible"] == "0,1"
    assert all(runs[f"single_{i}"][0]["visible"] in ("0", "1") for i in range(4))
    assert not (tmp_path / "locks").exists()
