import re
import shlex

from onecycle import io

# Wildcard values are exactly the job ids the plan holds: no rule can match a path the
# config does not describe, and the rules' patterns cannot shadow each other.
def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


wildcard_constraints:
    train_job=_alternation(PLAN.trains),
    range_job=_alternation(PLAN.range_tests),
    experiment=_alternation(PLAN.workflow.experiments),
    dataset=_alternation(PLAN.datasets()),


TRAIN_THREADS = PLAN.workflow.train_threads
GPUS_PER_JOB = PLAN.workflow.gpus_per_job


def _train_inputs(wc):
    job = PLAN.trains[wc.train_job]
    inputs = {"spec": f"{R}/train/{wc.train_job}/spec.json", "data": PLAN.data_record(job.dataset)}
    if job.needs_bounds:
        inputs["bounds"] = PLAN.bounds_path(job.experiment)
    return inputs


def _run_report_results(wc):
    return [job.out_dir / "metrics.json" for job in PLAN.experiment_trains(wc.experiment)]


def _range_report_results(wc):
    jobs = PLAN.experiment_range_tests(wc.experiment)
    return [PLAN.bounds_path(wc.experiment)] + [job.out_dir / "history.csv" for job in jobs]
