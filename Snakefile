# onecycle: LR range tests, then 1cycle vs. baseline trainings, then the papers' tables and
# figures with the published numbers beside ours. All logic lives in the package
# (onecycle.experiments expands the config into validated jobs); rules only wire files.
#
#   snakemake --cores all --resources gpu=4                    # the paper config on a GPU box
#   snakemake --cores 2 --configfile configs/smoke.yaml        # the CPU smoke replication
#   snakemake --report report.html                             # one HTML report
from onecycle.experiments import expand
from onecycle.report import (bounds_study_outputs, bounds_summary_outputs, claims_outputs, experiment_outputs,
                             suite_outputs)

# The paper replication by default; `--configfile configs/smoke.yaml` replaces it (not merged).
if not config:

    configfile: "configs/paper.yaml"


PLAN = expand(config, "config")
R = str(PLAN.results_dir)

report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/range_test.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"


# Bookkeeping and plotting run on the submitting host, never as cluster jobs.
localrules:
    all,
    workflow_config,
    job_spec,
    range_spec,
    combine_bounds,
    report_experiment,
    range_test_figure,
    comparison_figure,
    bounds_study_report,
    bounds_study_summary,
    claims_table,
    claims_scorecard,


rule all:
    input:
        [path for name in PLAN.workflow.experiments for path in experiment_outputs(PLAN, name).values()],
        list(bounds_summary_outputs(PLAN).values()),
        suite_outputs(PLAN).values(),
    default_target: True
