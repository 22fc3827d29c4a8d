import re

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


rule workflow_config:
    output:
        f"{R}/workflow_config.json",
    log:
        f"{R}/logs/workflow_config.log",
    params:
        config=config,
    conda:
        "../../environment.yml"
    run:
        io.write_json(output[0], params.config)
