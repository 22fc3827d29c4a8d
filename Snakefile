# onecycle: LR range tests, then 1cycle vs. baseline trainings, then the papers' tables and
# figures with the published numbers beside ours. All logic lives in the package
# (onecycle.experiments.expansion expands the config into validated jobs); rules only wire files.
#
#   snakemake --cores all --resources gpu=4                    # the paper config on a GPU box
#   snakemake --cores 2 --configfile configs/smoke.yaml        # the CPU smoke replication
#   snakemake --cores 2 --config scale=tiny                    # every job of a config, tiny
#   make report                                                # Snakemake's HTML report (see Makefile)
import sys

from snakemake.settings.enums import PersistenceBackend

from onecycle.experiments.loading import INCLUDE_KEY, load_mapping, resolve_include
from onecycle.experiments.expansion import expand
from onecycle.report.outputs import (bounds_study_outputs, bounds_summary_outputs, claims_outputs, experiment_outputs,
                                     report_path, suite_outputs)
from onecycle.dag.snakemake_report import register as register_report_directives
from onecycle.dag.run_specs import write_specs
from onecycle.dag.stale_locks import clear_stale_locks

# `embeddedfigure` in the report text embeds the image (onecycle.dag.snakemake_report says why).
register_report_directives()

# The paper replication by default; `--configfile configs/smoke.yaml` replaces it (not merged).
# `--config key=value` alone (e.g. scale=tiny) is applied on top of the default.
if not workflow.overwrite_configfiles:

    configfile: "configs/paper.yaml"


# Snakemake reads config files with its own YAML loader, which lets the last of two equal keys
# win (a repeated group silently replaces the first) and expands aliases. Each file is read
# again here through onecycle.experiments.loading.ConfigLoader, which refuses both, naming file, line and key.
for path in workflow.configfiles:
    load_mapping(path)

# `include: OTHER.yaml` (configs/paper_imagenet.yaml extends configs/paper.yaml) is the suite's
# key, not Snakemake's: the included config goes under this one here, before anything reads it,
# with the --config values still on top (they are in `config` already).
if INCLUDE_KEY in config:
    including = [path for path in workflow.configfiles if INCLUDE_KEY in load_mapping(path)]
    resolved = resolve_include(dict(config), including[-1] if including else "--config")
    config.clear()
    config.update(resolved)

# A run killed by SIGKILL leaves Snakemake's lock behind; it is deleted when no run of this
# workflow is alive in the folder (onecycle.dag.stale_locks), so that `--rerun-incomplete` recovers.
if workflow.is_main_process and workflow.workflow_settings.persistence_backend == PersistenceBackend.FILE:
    for stale in clear_stale_locks():
        print(f"Removed {stale}: no Snakemake run of this workflow is alive here to hold it.", file=sys.stderr)

PLAN = expand(config, "config")
R = str(PLAN.results_dir)

# Every job's spec.json, written here when its content is not the plan's, so that a changed
# config reruns its jobs by mtime, records or not (onecycle.dag.run_specs; docs/design.md §10d).
# The job processes of a cluster run parse this file too: the main process has written them.
if workflow.is_main_process:
    for stale in write_specs(PLAN):
        print(f"{stale.out_dir}: a finished run of another config; its job runs again, setting it aside first",
              file=sys.stderr)

report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/range_test.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"


# Bookkeeping and plotting run on the submitting host, never as cluster jobs (and
# bounds_study_summary, where a config defines it: workflow/rules/aggregate.smk).
localrules:
    all,
    workflow_config,
    combine_bounds,
    report_experiment,
    accuracy_figure,
    range_test_figure,
    comparison_figure,
    bounds_study_report,
    claims_table,
    claims_scorecard,
    html_report,


# Every planned run's metrics.json is a target of its own: Snakemake does not redo a deleted
# result that only feeds tables that are up to date, but it does make a missing target.
rule all:
    input:
        [job.out_dir / "metrics.json" for job in [*PLAN.range_tests.values(), *PLAN.trains.values()]],
        [path for name in PLAN.workflow.experiments for path in experiment_outputs(PLAN, name).values()],
        list(bounds_summary_outputs(PLAN).values()),
        suite_outputs(PLAN).values(),
        report_path(PLAN),
    default_target: True
