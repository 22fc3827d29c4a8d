"""A workflow whose jobs need GPUs, on a machine without them, stops before any job with one line
that says how to run on the CPU (onecycle.dag.gpu_check); gpus_per_job 0 at tiny scale holds for
every experiment, those with their own `gpus` too (onecycle.experiments.expansion.job_devices)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import HANG_GUARD_S, REPO
from onecycle.dag.gpu_check import gpu_refusal
from onecycle.experiments.config import RunConfig
from onecycle.experiments.expansion import expand
from onecycle.experiments.loading import load_mapping

PAPER = REPO / "configs" / "paper.yaml"
IMAGENETTE = ("imagenette_resnet50", "imagenette_inception_resnet_v2")  # `gpus: 4` of their own


def _smoke_on_gpus(gpus_per_job: int) -> dict:
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    return {**smoke, "seeds": [0], "gpus_per_job": gpus_per_job}


def test_no_gpu_pool_is_one_line_with_the_cpu_alternative(monkeypatch):
    monkeypatch.delenv("ONECYCLE_GPU_SLOTS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a pool of no devices, on any machine
    plan = expand(_smoke_on_gpus(1))
    message = gpu_refusal(plan)
    jobs = len(plan.trains) + len(plan.range_tests)
    assert message.startswith(f"{jobs} jobs of this workflow claim GPUs (1 each), and this machine has none")
    assert "$CUDA_VISIBLE_DEVICES lists no GPU ids" in message and "--config gpus_per_job=0" in message
    assert "\n" not in message
    assert gpu_refusal(expand(_smoke_on_gpus(0))) is None  # nothing claims a GPU


def test_a_pool_smaller_than_a_jobs_claim_is_refused_and_a_big_enough_one_passes(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan = expand(load_mapping(PAPER), "paper.yaml")
    monkeypatch.setenv("ONECYCLE_GPU_SLOTS", "0,1")
    message = gpu_refusal(plan)
    assert re.match(r"job imagenette_\w+/\w+/seed0 claims 4 GPUs and this machine's pool has 2 \(0,1\); ", message)
    monkeypatch.setenv("ONECYCLE_GPU_SLOTS", "0,1,2,3")
    assert gpu_refusal(plan) is None


def test_gpus_per_job_0_at_tiny_scale_holds_for_experiments_with_their_own_gpus():
    raw = load_mapping(PAPER)
    tiny_cpu = expand({**raw, "scale": "tiny", "gpus_per_job": 0}, "paper.yaml")
    jobs = [*tiny_cpu.trains.values(), *tiny_cpu.range_tests.values()]
    assert {(job.gpus, job.gpu_seats) for job in jobs} == {(0, 0)}
    assert gpu_refusal(tiny_cpu) is None
    for name in IMAGENETTE:  # their data-parallel launch still runs: 4 gloo processes on the CPU
        for job in tiny_cpu.experiment_trains(name):
            assert job.processes == 4 and RunConfig.model_validate(job.config).train.device == "cpu", job.job_id
    # At full scale an experiment's own `gpus` still claims them (the real run needs them).
    full_cpu = expand({**raw, "gpus_per_job": 0}, "paper.yaml")
    assert {job.gpus for name in IMAGENETTE for job in full_cpu.experiment_trains(name)} == {4}
    assert {job.gpus for job in full_cpu.trains.values() if job.experiment not in IMAGENETTE} == {0}


def _snakemake(work, *args, env_changes):
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", **env_changes}
    env.pop("ONECYCLE_GPU_SLOTS", None)
    command = [shutil.which("snakemake", path=env["PATH"]), "-s", str(REPO / "Snakefile"), "--directory", str(work),
               *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)


@pytest.mark.slow
def test_a_gpu_workflow_on_a_machine_without_gpus_stops_before_any_job(tmp_path):
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(_smoke_on_gpus(1)))
    run = _snakemake(tmp_path, "--configfile", str(tmp_path / "gpu.yaml"), "--cores", "1",
                     env_changes={"CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode != 0
    refusals = [line for line in (run.stdout + run.stderr).splitlines() if "and this machine has none" in line]
    assert len(refusals) == 1 and "--config gpus_per_job=0" in refusals[0], run.stderr[-3000:]
    # No job ran, not even the data's: the Snakefile's own spec.json files are all it left.
    written = [path for path in (tmp_path / "results").rglob("*") if path.is_file()]
    assert written and {path.name for path in written} == {"spec.json"}, written
    # A dry run still lists the jobs of a GPU workflow on any machine.
    dry = _snakemake(tmp_path, "--configfile", str(tmp_path / "gpu.yaml"), "--cores", "1", "-n",
                     env_changes={"CUDA_VISIBLE_DEVICES": ""})
    assert dry.returncode == 0, dry.stderr[-3000:]


@pytest.mark.slow
def test_the_tiny_paper_dag_on_cpu_claims_no_gpu_and_launches_imagenettes_processes(tmp_path):
    # The README's CPU check, dry: the default config (paper.yaml) with scale=tiny gpus_per_job=0.
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    run = _snakemake(tmp_path, "-n", "-p", "--cores", "2", "--config", "scale=tiny", "gpus_per_job=0",
                     env_changes={"CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    claims = re.findall(r"python -m onecycle\.dag\.gpu_slots -n (\d+) --per-device \d+ -- (\S+)", run.stdout)
    assert claims and {gpus for gpus, _ in claims} == {"0"}
    torchrun = re.findall(r"-- torchrun --standalone --nproc_per_node (\d+) -m onecycle\.cli train --config "
                          r"results/paper-tiny/train/(\w+)/", run.stdout)
    assert {name for _, name in torchrun} == set(IMAGENETTE) and {n for n, _ in torchrun} == {"4"}
