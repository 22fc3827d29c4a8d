import json
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError

from onecycle import io
from onecycle.dag.gpu_check import gpu_refusal
from onecycle.dag.run_specs import set_aside_redone

# Wildcard values are exactly the job ids the plan holds: no rule can match a path the
# config does not describe, and the rules' patterns cannot shadow each other.
def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


wildcard_constraints:
    train_job=_alternation(PLAN.trains),
    range_job=_alternation(PLAN.range_tests),
    experiment=_alternation(PLAN.workflow.experiments),
    dataset=_alternation(PLAN.data_sources()),
    cache_dataset=_alternation([name for name in PLAN.datasets() if PLAN.caffe_caches(name)]),
    study=_alternation(PLAN.bounds_studies()),


TRAIN_THREADS = PLAN.job_threads  # train_threads, or 1 at tiny scale

# GPU jobs declare `resources: gpu=` in seats: with jobs_per_gpu = k, a job of a `share_gpu`
# experiment takes 1 seat and may meet k-1 others on its device (gpu_slots --per-device k);
# every other GPU job takes all k seats of each of its devices. With k = 1 seats are GPUs.
# Seats only mean something to a local `--resources gpu=N` cap: a cluster executor would read
# them as GPUs to allocate, so sharing is refused there, before any job is submitted (the
# executor is known from onstart on, not while the Snakefile is parsed).
#
# A local run whose jobs claim GPUs this machine lacks stops here too, in one line, before any
# job starts (onecycle.dag.gpu_check; a dry run lists the jobs on any machine).
#
# Snakemake deletes a job's outputs before running it: a finished run it is about to redo (its
# config changed, its range tests' bounds did, --forcerun) is moved to a sibling
# `<seed folder>.stale-<digest>` first (onecycle.dag.run_specs). Not under --touch, which only
# marks outputs up to date.
onstart:
    if PLAN.workflow.jobs_per_gpu > 1 and workflow.non_local_exec:
        raise WorkflowError(
            f"jobs_per_gpu = {PLAN.workflow.jobs_per_gpu} is for one machine (--resources gpu= counts "
            "seats there); on a cluster every job gets its own GPUs: set jobs_per_gpu: 1"
        )
    if not workflow.non_local_exec:
        refusal = gpu_refusal(PLAN)
        if refusal is not None:
            raise WorkflowError(refusal)
    if not workflow.touch:
        redone = (path for job in workflow.dag.needrun_jobs() for path in job.output)
        for job, moved in set_aside_redone(PLAN, redone):
            print(f"{job.out_dir}: its finished run is redone; moved it to {moved}", file=sys.stderr)


def _train_inputs(wc):
    job = PLAN.trains[wc.train_job]
    inputs = {"spec": f"{R}/train/{wc.train_job}/spec.json", **PLAN.data_inputs(job)}
    if job.needs_bounds:
        inputs["bounds"] = PLAN.bounds_path(job.experiment)
    return inputs


def _range_inputs(wc):
    return {"spec": f"{R}/range_test/{wc.range_job}/spec.json", **PLAN.data_inputs(PLAN.range_tests[wc.range_job])}


def _run_report_results(wc):
    """The runs, and the range tests whose validity gate (onecycle.report.validity) the verdicts wait for."""
    return [job.out_dir / "metrics.json"
            for job in [*PLAN.experiment_trains(wc.experiment), *PLAN.experiment_range_tests(wc.experiment)]]


def _range_report_results(wc):
    jobs = PLAN.experiment_range_tests(wc.experiment)
    return [PLAN.bounds_path(wc.experiment)] + [job.out_dir / "history.csv" for job in jobs]


def _bounds_study_results(wc):
    """A bounds study reads its runs, its combined bounds (every rule's per-seed suggestion)
    and its range-test variants."""
    variants = [job for jobs in PLAN.experiment_variant_tests(wc.study).values() for job in jobs]
    return ([job.out_dir / "metrics.json" for job in PLAN.experiment_trains(wc.study)]
            + [PLAN.bounds_path(wc.study)]
            + [job.out_dir / name for job in variants for name in ("bounds.json", "metrics.json")])


def _bounds_summary_results(wc):
    return [bounds_study_outputs(PLAN, name)["regret_csv"] for name in PLAN.bounds_studies()]
