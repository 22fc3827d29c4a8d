"""Before a local run starts any job: refuse, in one line, a workflow whose jobs claim GPUs that this
machine does not have, and say how to run it on the CPU.

Without this check every training job of such a run starts, fails at once in its GPU claim
("no GPU pool", onecycle.dag.gpu_slots) and the run writes no table. The check runs from the
Snakefile's `onstart` (workflow/rules/common.smk): only for a local executor, because a cluster's
submitting host need not have the GPUs its jobs will get, and only for a real run (a dry run
lists the jobs of a GPU workflow on any machine).
"""

from __future__ import annotations

from onecycle.dag import gpu_slots
from onecycle.experiments.expansion import Plan

# How to run a GPU workflow on the CPU instead: gpus_per_job 0 holds for every experiment at tiny
# scale (onecycle.experiments.expansion.job_devices); at full scale the experiments with their own
# `gpus` still claim them.
CPU_HINT = ("to run it on this machine's CPU: --config gpus_per_job=0 (at full scale the experiments with "
            "their own `gpus` still claim them), or check the machine first with "
            "`snakemake --cores 2 --config scale=tiny gpus_per_job=0`")


def gpu_refusal(plan: Plan) -> str | None:
    """None when this machine's GPU pool (gpu_slots' ONECYCLE_GPU_SLOTS, CUDA_VISIBLE_DEVICES or
    nvidia-smi) holds every job's claim; otherwise the one line that says why not and what to do."""
    jobs = [job for job in (*plan.trains.values(), *plan.range_tests.values()) if job.gpus > 0]
    if not jobs:
        return None
    widest = max(jobs, key=lambda job: job.gpus)
    try:
        pool = gpu_slots.resolve_pool()
    except gpu_slots.GpuSlotError as error:
        claims = sorted({job.gpus for job in jobs})
        return (f"{len(jobs)} jobs of this workflow claim GPUs ({' or '.join(map(str, claims))} each), "
                f"and this machine has none ({error}); {CPU_HINT}")
    if widest.gpus > len(pool):
        return (f"job {widest.job_id} claims {widest.gpus} GPUs and this machine's pool has {len(pool)} "
                f"({','.join(pool)}); {CPU_HINT}")
    return None
